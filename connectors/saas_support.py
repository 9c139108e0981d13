"""Small pieces the hosted ticket-system connectors (Freshdesk, Zammad, JSM) share.

* :func:`decode_json` — a response body as JSON, or :class:`BadResponse` naming the endpoint;
* :class:`RateLimitStatus` — the plan budget a source reports in its response headers;
* :func:`note_body` — the draft text plus the idempotency marker, the one shape every note takes;
* :func:`mapped_fields` — WriteBack fields → the source's configured custom-field ids;
* :func:`requester` — a :class:`Requester` that never fails a ticket over an odd name or address;
* :func:`require_secret` — a secret from the sources file, or a ConfigError saying how to give it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from connectors.base import BadResponse, ConfigError, WriteBack
from ticketfleet.inbound import Requester


def decode_json(response: httpx.Response, source: str) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise BadResponse(
            f"{response.request.method} {response.request.url.path}: malformed JSON ({exc})", source=source
        ) from exc


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
