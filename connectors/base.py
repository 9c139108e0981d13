"""The connector contract: what every ticket-system connector provides and raises.

A connector does two things and nothing else:

* ``pull(cursor)`` → one :class:`PullPage` of normalised, validated :class:`InboundTicket` records plus
  the cursor to resume from. It never stores anything and never advances a cursor itself: the poller
  (``ticketfleet.pipeline.polling``) stores the page and the new cursor in one transaction, so a crash between
  pages re-reads a page (absorbed idempotently) and never skips one.
* ``push(write_back)`` → applies one :class:`WriteBack` (tags, fields, an internal note holding the
  draft) to a ticket in the source system. It must be idempotent: pushing the same write-back twice
  (say, retried after a timeout whose request did reach the server) leaves one note and one set of tags.
  Connectors achieve this by embedding :attr:`WriteBack.marker` in the note and looking for it before
  posting. Drafts always go as internal/private notes or shared drafts, never as a public reply.

Errors form a small tree, split the way a caller needs it (as in httpx), and hung under the
application's error tree (:mod:`ticketfleet.core.errors`), so a caller that knows no connector can
still decide on the core branch::

    ConnectorError              TicketfleetError
    ├── RetryableError          TransientError: try again later; the poller backs off
    │   ├── RateLimited         429 / quota; ``retry_after`` seconds when the server said
    │   ├── ServerError         5xx
    │   └── SourceTimeout       connect/read timeout, connection refused or reset
    └── PermanentError          core PermanentError: retrying the same call cannot help; a human must act
        ├── AuthError           401 / 403: credentials wrong or lacking a permission
        ├── NotFound            404: the ticket or endpoint does not exist
        ├── BadResponse         malformed JSON, or JSON of an unexpected shape
        └── ConfigError         also a ConfigurationError: the source's configuration is invalid
                                (missing secret, bad URL, unknown option)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ticketfleet.core import errors as core_errors
from ticketfleet.core.inbound import InboundTicket


class ConnectorError(core_errors.TicketfleetError):
    """Base of every error a connector raises. ``source`` names the configured source."""

    def __init__(self, message: str, *, source: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.status = status

    def __str__(self) -> str:
        text = super().__str__()
        return f"{self.source}: {text}" if self.source else text


class RetryableError(ConnectorError, core_errors.TransientError):
    """The same call may succeed later."""


class RateLimited(RetryableError):
    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        source: str | None = None,
        status: int | None = 429,
    ) -> None:
        super().__init__(message, source=source, status=status)
        self.retry_after = retry_after


class ServerError(RetryableError):
    """The source answered 5xx."""


class SourceTimeout(RetryableError):
    """Connecting or reading timed out, or the connection was refused or reset."""


class PermanentError(ConnectorError, core_errors.PermanentError):
    """Retrying the same call cannot help."""


class AuthError(PermanentError):
    """401 or 403."""


class NotFound(PermanentError):
    """404."""


class BadResponse(PermanentError):
    """Malformed JSON or an unexpected shape."""


class ConfigError(PermanentError, core_errors.ConfigurationError):
    """The source's configuration is invalid: the operator fixes the sources file or a secret."""


class PullPage(BaseModel):
    """One page of a pull. ``cursor`` is what the next pull starts from (opaque to everyone else)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    items: list[InboundTicket] = Field(default_factory=list)
    cursor: str | None = None
    has_more: bool = False
    # Records the connector could not normalise: (source's id or position, reason). They are reported,
    # never allowed to stop the good records of the same page.
    rejected: list[tuple[str, str]] = Field(default_factory=list)


class WriteBack(BaseModel):
    """What goes back to the source for one ticket. Built from a triage result by the confidence gates."""

    model_config = ConfigDict(frozen=True)

    ticket_external_id: str
    # Tags such as "tf-lang-de", "tf-intent-refund" (connectors may map them to their own fields).
    tags: list[str] = Field(default_factory=list)
    # Field name → value, e.g. {"priority": "high", "language": "de"} for sources with custom fields.
    fields: dict[str, str] = Field(default_factory=dict)
    # The draft (rehydrated for the agent) as an internal note; None when no draft passed its checks.
    note: str | None = None
    # Stable per (ticket, result): the connector puts it in the note to recognise its own earlier post.
    idempotency_key: str

    @property
    def marker(self) -> str:
        return f"[ticketfleet:{self.idempotency_key}]"


class WriteBackReceipt(BaseModel):
    """What a push did. ``note_id`` is the source's id of the note (the existing one when deduplicated)."""

    note_id: str | None = None
    deduplicated: bool = False
    tags_applied: list[str] = Field(default_factory=list)
    fields_applied: dict[str, str] = Field(default_factory=dict)


class Connector(ABC):
    """One configured source. Subclasses set ``kind`` and take an injected ``httpx.Client`` (or the
    equivalent for non-HTTP sources), so tests point them at local servers over real sockets."""

    kind: ClassVar[str]

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def pull(self, cursor: str | None) -> PullPage:
        """The next page of tickets changed since ``cursor`` (None: from the configured start)."""

    @abstractmethod
    def push(self, write_back: WriteBack) -> WriteBackReceipt:
        """Apply tags, fields and the internal note for one ticket, idempotently."""

    @abstractmethod
    def check(self) -> str:
        """One cheap authenticated call; returns a one-line description (e.g. the account or user)."""

    def close(self) -> None:  # noqa: B027 - optional hook; most connectors own nothing to close
        """Release sockets or sessions the connector opened itself."""
