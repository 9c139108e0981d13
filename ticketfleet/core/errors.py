"""The application's error tree. Every error ticketfleet raises on purpose is one of these.

::

    TicketfleetError                  base: catch this to handle anything the fleet raises knowingly
    ├── ConfigurationError            the operator must fix a setting, a file or a key; retrying is futile
    ├── TransientError                a service is away or busy (broker, database, source); retry later
    └── PermanentError                this input or this call cannot succeed as it is; do not retry

Connectors have their own tree under these branches (``connectors/base.py``: ``ConfigError`` is a
``ConfigurationError``, ``RetryableError`` a ``TransientError``, ``PermanentError`` this
``PermanentError``), so a caller can decide on the branch without knowing the connector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError


class TicketfleetError(Exception):
    """Base of every error the fleet raises knowingly."""


class ConfigurationError(TicketfleetError):
    """A setting, file or key is missing or wrong. The message says which and how to fix it."""


class TransientError(TicketfleetError):
    """A dependency is unavailable for now; the same call may succeed later."""


class PermanentError(TicketfleetError):
    """The input or the call cannot succeed as it is; retrying it would fail the same way."""


@dataclass(frozen=True)
class LineError:
    """One bad line of a file or stream (import, ``classify``, ``redact``): where and why, never the
    line's content. The good lines beside it are processed."""

    line: int
    error: str
    external_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "error": self.error, "external_id": self.external_id}


def validation_problems(
    exc: ValidationError, *, prefix: str = "", whole: str = "record"
) -> list[tuple[str, str]]:
    """Pydantic's errors as (dotted field path, plain reason) pairs.

    Every boundary (import lines, the sources file, the taxonomy, audit heads, API records, connector
    options) reports a bad record this one way: it names the field and never echoes the value, which
    may be personal data. ``whole`` names a rule about the record as a whole; ``prefix`` is prepended
    to every path (``sources[2].``).
    """
    problems = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(part) for part in err["loc"])
        where = prefix + where if where else (prefix.rstrip(".") or whole)
        if err["type"] == "missing":
            message = "field required"
        elif err["type"] == "extra_forbidden":
            message = "unknown field"
        else:
            message = err["msg"].removeprefix("Value error, ")
        problems.append((where, message))
    return problems


def describe_validation_error(exc: ValidationError, *, prefix: str = "", whole: str = "record") -> str:
    """:func:`validation_problems` as one line: ``field.path: reason; …``."""
    return "; ".join(
        f"{where}: {message}" for where, message in validation_problems(exc, prefix=prefix, whole=whole)
    )
