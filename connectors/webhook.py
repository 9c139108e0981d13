"""The ``webhook`` source kind: tickets and chat messages pushed to the HTTP API (``ticketfleet serve``).

There is nothing to pull — senders POST to ``/v1/chat`` and ``/v1/tickets`` — and nothing to push
back: a webhook sender is not a ticket system we can write notes into. It reads triage results and
drafts with ``GET /v1/tickets/{source}/{external_id}``. So ``pull`` returns an empty, final page
(the cursor unchanged) and ``push`` refuses with a :class:`ConfigError` saying so, rather than
pretending a write-back happened.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr

from connectors.base import ConfigError, Connector, PullPage, WriteBack, WriteBackReceipt
from connectors.http import SourceHttp


class WebhookOptions(BaseModel):
    """A webhook source has no options: its credentials are API secrets (signing_secret / token)."""

    model_config = ConfigDict(extra="forbid")


class WebhookConnector(Connector):
    kind: ClassVar[str] = "webhook"

    def __init__(self, name: str, http: SourceHttp | None = None, **options: Any) -> None:
        super().__init__(name)
        WebhookOptions.model_validate(options)

    def pull(self, cursor: str | None) -> PullPage:
        # Push-only: the API stores deliveries as they arrive, so a poll finds nothing new.
        return PullPage(items=[], cursor=cursor, has_more=False)

    def push(self, write_back: WriteBack) -> WriteBackReceipt:
        raise ConfigError(
            "webhook sources have no write-back: the sender reads triage results and drafts with "
            f"GET /v1/tickets/{self.name}/{write_back.ticket_external_id}; turn write-back off for "
            "this source",
            source=self.name,
        )

    def check(self) -> str:
        return f"webhook source {self.name!r}: push-only; deliveries arrive at POST /v1/chat and /v1/tickets"


def from_config(
    name: str, options: dict[str, Any], secrets: dict[str, SecretStr], http: SourceHttp | None
) -> Connector:
    """Registry hook. Options must be empty; secrets (signing_secret, token) are read by the API."""
    try:
        WebhookOptions.model_validate(options)
    except ValueError as exc:
        raise ConfigError(f"webhook source options: {exc}", source=name) from exc
    return WebhookConnector(name, http)
