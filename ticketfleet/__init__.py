"""ticketfleet: triage support tickets and draft replies on a Celery fleet."""
