"""The ``ticketfleet`` command line: the top layer, next to the HTTP API and the Celery workers.

Each sub-app lives in its own module (``main`` wires them together); the work is in
``ticketfleet.pipeline``.
"""

from ticketfleet.cli.main import app

__all__ = ["app"]
