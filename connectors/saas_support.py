"""Small pieces the hosted ticket-system connectors (Freshdesk, Zammad, JSM) share.

* :class:`HttpConnector` — holds the source's :class:`SourceHttp` and closes it only when it owns it;
* :func:`parse_options` / :func:`require_http` — the ConfigErrors every ``from_config`` raises;
* :func:`dated_hits` / :func:`normalised` — a search page → cursor hits, and hits → tickets, each
  bad row reported in ``rejected`` instead of failing the page;
* :func:`find_marked` / :func:`receipt` — the idempotent-note lookup and the receipt of a push;
* :func:`decode_json` — a response body as JSON, or :class:`BadResponse` naming the endpoint
  (defined in :mod:`connectors.http`, which uses it too);
* :class:`RateLimitStatus` — the plan budget a source reports in its response headers;
* :func:`note_body` — the draft text plus the idempotency marker, the one shape every note takes;
* :func:`mapped_fields` — WriteBack fields → the source's configured custom-field ids;
* :func:`requester` — a :class:`Requester` that never fails a ticket over an odd name or address;
* :func:`require_secret` — a secret from the sources file, or a ConfigError saying how to give it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

from connectors.base import BadResponse, ConfigError, Connector, WriteBack, WriteBackReceipt
from connectors.http import SourceHttp, decode_json
from connectors.window_cursor import Hit, parse_timestamp
from ticketfleet.core.errors import describe_validation_error
from ticketfleet.core.inbound import InboundTicket, Requester

__all__ = ["decode_json"]  # re-exported: the connectors import their HTTP helpers from here

OptionsT = TypeVar("OptionsT", bound=BaseModel)
Row = dict[str, Any]


class HttpConnector(Connector):
    """A connector that talks through one :class:`SourceHttp`.

    An injected client stays the caller's (tests, the CLI); one handed over by ``from_config`` (the
    registry's) is the connector's to close, see :func:`owning`.
    """

    def __init__(self, name: str, http: SourceHttp) -> None:
        super().__init__(name)
        self.http = http
        self.owns_http = False

    def close(self) -> None:
        if self.owns_http:
            self.http.client.close()


ConnectorT = TypeVar("ConnectorT", bound=HttpConnector)


def owning(connector: ConnectorT) -> ConnectorT:
    """``connector`` now owns its client (handed over by ``from_config``) and closes it with itself."""
    connector.owns_http = True
    return connector


def parse_options(model: type[OptionsT], options: Mapping[str, Any], *, kind: str, source: str) -> OptionsT:
    """The source's options as ``model``, or ConfigError listing every bad option."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(f"{kind} options: {describe_validation_error(exc)}", source=source) from exc


def require_http(http: SourceHttp | None, *, kind: str, example: str, source: str) -> SourceHttp:
    """The registry's client, or ConfigError: the source has no base_url."""
    if http is None:
        raise ConfigError(f"{kind} needs base_url, e.g. {example}", source=source)
    return http


def dated_hits(
    rows: Sequence[Any], updated: Callable[[Row], Any], *, what: str
) -> tuple[list[Hit[Row]], list[tuple[str, str]]]:
    """Rows with an id and a parseable update time as cursor hits; the others as (id, reason)."""
    hits: list[Hit[Row]] = []
    rejected: list[tuple[str, str]] = []
    for position, row in enumerate(rows):
        try:
            hits.append(Hit(str(row["id"]), parse_timestamp(updated(row)), row))
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            ident = str(row.get("id")) if isinstance(row, dict) else f"#{position}"
            rejected.append((ident, f"{what}: {exc!r}"))
    return hits, rejected


def normalised(
    hits: Iterable[Hit[Row]], build: Callable[[Row], InboundTicket], rejected: list[tuple[str, str]]
) -> list[InboundTicket]:
    """Each hit as a ticket; one that fails validation is appended to ``rejected``, not raised."""
    items: list[InboundTicket] = []
    for hit in hits:
        try:
            items.append(build(hit.raw))
        except ValidationError as exc:
            rejected.append((hit.id, describe_validation_error(exc)))
    return items


def find_marked(rows: Iterable[Row], marker: str, *, text_keys: Sequence[str] = ("body",)) -> str | None:
    """The id of the first row whose text (any of ``text_keys``) holds the write-back's marker."""
    for row in rows:
        if any(marker in str(row.get(key) or "") for key in text_keys):
            return str(row.get("id"))
    return None


def receipt(
    write_back: WriteBack, field_map: Mapping[str, str], *, note_id: str | None, deduplicated: bool
) -> WriteBackReceipt:
    """What a push did: every tag is applied; fields only where the source maps them."""
    return WriteBackReceipt(
        note_id=note_id,
        deduplicated=deduplicated,
        tags_applied=list(write_back.tags),
        fields_applied={name: value for name, value in write_back.fields.items() if name in field_map},
    )


def expect(value: Any, kind: type, what: str, source: str) -> Any:
    """``value`` if it is a ``kind``, else BadResponse saying which part of the answer was wrong."""
    if not isinstance(value, kind):
        raise BadResponse(f"{what}: expected {kind.__name__}, got {type(value).__name__}", source=source)
    return value


@dataclass
class RateLimitStatus:
    """What the source said about its request budget on the latest response (None: not reported)."""

    total: int | None = None
    remaining: int | None = None
    used_by_last_request: int | None = None

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str], *, total: str, remaining: str, used: str | None = None
    ) -> RateLimitStatus | None:
        def number(name: str | None) -> int | None:
            raw = headers.get(name) if name else None
            try:
                return int(raw) if raw is not None else None
            except ValueError:
                return None

        status = cls(number(total), number(remaining), number(used))
        return status if status.total is not None or status.remaining is not None else None

    def describe(self) -> str:
        if self.remaining is None:
            return "rate limit not reported"
        of = f" of {self.total}" if self.total is not None else ""
        return f"{self.remaining}{of} API requests left in the current window"


def note_body(write_back: WriteBack) -> str:
    """The draft and, after a blank line, the marker that lets a retried push find its own note."""
    if write_back.note is None:
        raise ValueError("write-back has no note")
    return f"{write_back.note}\n\n{write_back.marker}"


def mapped_fields(write_back: WriteBack, field_map: Mapping[str, str]) -> dict[str, str]:
    """WriteBack.fields renamed to the source's custom-field ids; fields without a mapping are left out."""
    return {field_map[name]: value for name, value in write_back.fields.items() if name in field_map}


def require_secret(secrets: Mapping[str, SecretStr], key: str, *, kind: str, source: str) -> str:
    """The secret's value, or ConfigError saying how the sources file provides it."""
    value = secrets.get(key)
    if value is None or not value.get_secret_value():
        raise ConfigError(
            f'{kind} needs the secret {key!r}: {key}_env = "ENV_VAR_HOLDING_IT" in the sources file',
            source=source,
        )
    return value.get_secret_value()


def requester(name: object, email: object) -> Requester | None:
    """The requester as far as the source told it; an odd name or address is dropped, not the ticket."""
    clean_name = name.strip()[:200] if isinstance(name, str) and name.strip() else None
    clean_email = email.strip() if isinstance(email, str) and "@" in email and len(email) <= 320 else None
    if clean_name is None and clean_email is None:
        return None
    return Requester(name=clean_name, email=clean_email)
