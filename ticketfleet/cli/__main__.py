"""``python -m ticketfleet.cli``: what the worker and serve subprocesses are started with."""

from ticketfleet.cli.main import app

app()
