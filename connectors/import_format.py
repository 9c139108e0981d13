"""JSONL and CSV backlog files → validated :class:`InboundTicket` records, with a per-line error report.

A bad line never costs the good lines beside it: every line is decoded, parsed and validated on its
own, and what is wrong is reported by line number and reason.

JSONL: one ticket per line, the :class:`InboundTicket` shape (``text`` or ``messages``).
CSV: a header row; columns ``external_id`` and ``text`` are required; optional ``source``, ``channel``,
``subject``, ``role``, ``message_id``, ``created_at``, ``requester_name``, ``requester_email``,
``locale``, ``country``. Rows sharing an ``external_id`` form one thread, in file order.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ticketfleet.core.errors import LineError, PermanentError, describe_validation_error
from ticketfleet.core.inbound import InboundTicket

__all__ = [
    "CSV_REQUIRED",
    "CSV_TICKET_FIELDS",
    "FileFormatError",
    "LineError",
    "ParsedLine",
    "parse_csv",
    "parse_file",
    "parse_jsonl",
]

CSV_REQUIRED = ("external_id", "text")
CSV_TICKET_FIELDS = ("source", "channel", "subject", "locale", "country")


@dataclass(frozen=True)
class ParsedLine:
    line: int
    ticket: InboundTicket | None = None
    error: LineError | None = None


class FileFormatError(ValueError, PermanentError):
    """The file as a whole cannot be read (unknown extension, CSV without the required header)."""


def _check_body_sizes(ticket: InboundTicket, max_body_chars: int) -> str | None:
    for i, message in enumerate(ticket.messages):
        if len(message.text) > max_body_chars:
            return f"messages.{i}.text: {len(message.text)} characters, over the cap of {max_body_chars}"
    return None


def _validate(raw: object, line: int, max_body_chars: int) -> ParsedLine:
    external_id = raw.get("external_id") if isinstance(raw, dict) else None
    ext = str(external_id) if external_id is not None else None
    if not isinstance(raw, dict):
        return ParsedLine(line, error=LineError(line, f"expected a JSON object, got {type(raw).__name__}"))
    try:
        ticket = InboundTicket.model_validate(raw)
    except ValidationError as exc:
        return ParsedLine(line, error=LineError(line, describe_validation_error(exc), ext))
    too_long = _check_body_sizes(ticket, max_body_chars)
    if too_long:
        return ParsedLine(line, error=LineError(line, too_long, ext))
    return ParsedLine(line, ticket=ticket)


def parse_jsonl(data: bytes, *, max_body_chars: int) -> Iterator[ParsedLine]:
    for number, raw_line in enumerate(data.splitlines(), start=1):
        if not raw_line.strip():
            continue
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield ParsedLine(number, error=LineError(number, f"invalid UTF-8 at byte {exc.start}"))
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            yield ParsedLine(
                number, error=LineError(number, f"malformed JSON: {exc.msg} at column {exc.colno}")
            )
            continue
        yield _validate(raw, number, max_body_chars)


def parse_csv(
    data: bytes, *, max_body_chars: int, first_line: int = 1, ids_from_lines: bool = False
) -> Iterator[ParsedLine]:
    """``first_line``: the file line number of ``data``'s header (a chunk read from an offset).
    ``ids_from_lines``: rows without ``message_id`` get ``line-<n>``, so a thread split across two
    incremental reads keeps distinct, stable message ids."""
    # surrogateescape keeps undecodable bytes visible per row instead of failing the whole file.
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise FileFormatError(f"CSV header lacks required column(s): {', '.join(missing)}")
    threads: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    errors: list[ParsedLine] = []
    for row in reader:
        number = reader.line_num + first_line - 1
        if any(isinstance(v, str) and has_surrogates(v) for v in row.values()):
            errors.append(
                ParsedLine(number, error=LineError(number, "invalid UTF-8 in row", row.get("external_id")))
            )
            continue
        if None in row:
            errors.append(ParsedLine(number, error=LineError(number, "more fields than the header names")))
            continue
        external_id = (row.get("external_id") or "").strip()
        key = ((row.get("source") or "").strip(), external_id)
        message = {
            "role": (row.get("role") or "customer").strip() or "customer",
            "text": row.get("text") or "",
            "external_id": (row.get("message_id") or "").strip()
            or (f"line-{number}" if ids_from_lines else None),
            "created_at": (row.get("created_at") or "").strip() or None,
        }
        if key not in threads:
            record: dict[str, Any] = {"external_id": external_id, "messages": []}
            for name in CSV_TICKET_FIELDS:
                value = (row.get(name) or "").strip()
                if value:
                    record[name] = value
            requester = {k: v for k in ("name", "email") if (v := (row.get(f"requester_{k}") or "").strip())}
            if requester:
                record["requester"] = requester
            threads[key] = (number, record)
        threads[key][1]["messages"].append(message)
    yield from errors
    for number, record in threads.values():
        yield _validate(record, number, max_body_chars)


def has_surrogates(value: str) -> bool:
    """True if ``value`` holds bytes that were not UTF-8 (decoded with ``errors="surrogateescape"``)."""
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def parse_file(path: Path, *, max_body_chars: int) -> Iterator[ParsedLine]:
    suffix = path.suffix.lower()
    data = path.read_bytes()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return parse_jsonl(data, max_body_chars=max_body_chars)
    if suffix == ".csv":
        return parse_csv(data, max_body_chars=max_body_chars)
    raise FileFormatError(f"{path.name}: unknown file type {suffix!r}; expected .jsonl or .csv")
