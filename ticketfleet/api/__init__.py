"""HTTP API: chat messages and tickets in (signed or token-authenticated), results and drafts out."""

from ticketfleet.api.app import create_app

__all__ = ["create_app"]
