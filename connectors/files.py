"""The ``files`` connector: a folder (a path or a glob) of JSONL/CSV files as a ticket source.

Files are read incrementally: the cursor holds, per file, the byte offset just past the last complete
line consumed (and the file's inode). An appended file is read from that offset; a file that shrank or
was replaced (log rotation) is read again from the start, which ingest absorbs idempotently. A
half-written last line is left for the next pull. Write-backs are appended to an outbox JSONL file,
idempotently by key.

What a line of such a file may hold, and how a bad line is reported, is the import file format
(:mod:`connectors.import_format`), shared with ``ticketfleet import``.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import ConfigError, Connector, NotFound, PullPage, WriteBack, WriteBackReceipt
from connectors.import_format import FileFormatError, ParsedLine, parse_csv, parse_file, parse_jsonl
from ticketfleet.core.errors import LineError
from ticketfleet.core.inbound import InboundTicket

if TYPE_CHECKING:
    from connectors.http import SourceHttp


class FilesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="A .jsonl/.csv file or a glob such as /data/in/*.jsonl.")
    page_size: int = Field(default=500, ge=1, le=100_000, description="Records per pull page.")
    outbox: Path | None = Field(
        default=None, description="JSONL file write-backs are appended to (default: <source>.outbox.jsonl)."
    )
    max_body_chars: int = Field(default=20_000, ge=1)


@dataclass
class _FileState:
    offset: int = 0
    line: int = 0  # lines consumed before offset (the CSV header included)
    inode: int = 0


class FilesConnector(Connector):
    kind = "files"

    def __init__(
        self,
        name: str,
        *,
        path: str,
        page_size: int = 500,
        outbox: Path | None = None,
        max_body_chars: int = 20_000,
    ) -> None:
        super().__init__(name)
        self.path = path
        self.page_size = page_size
        self.max_body_chars = max_body_chars
        self.outbox = Path(outbox) if outbox else _fixed_folder(path) / f"{name}.outbox.jsonl"

    # --- pull ----------------------------------------------------------------------------------

    def files(self) -> list[Path]:
        if glob.has_magic(self.path):
            return [Path(p) for p in sorted(glob.glob(self.path)) if Path(p) != self.outbox]
        single = Path(self.path)
        return [single] if single.is_file() else []

    def pull(self, cursor: str | None) -> PullPage:
        states = _decode_cursor(cursor, self.name)
        items: list[InboundTicket] = []
        rejected: list[tuple[str, str]] = []
        has_more = False
        for path in self.files():
            key = str(path)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # vanished between glob and stat: nothing to read
            state = states.get(key, _FileState())
            if state.inode != stat.st_ino or stat.st_size < state.offset:
                state = _FileState(inode=stat.st_ino)  # new, rotated or truncated: start over
            room = self.page_size - len(items)
            if room <= 0:
                has_more = has_more or stat.st_size > state.offset
                break
            states[key] = self._read(path, state, room, items, rejected)
            if states[key].offset < stat.st_size and len(items) >= self.page_size:
                has_more = True
        return PullPage(items=items, cursor=_encode_cursor(states), has_more=has_more, rejected=rejected)

    def _read(
        self,
        path: Path,
        state: _FileState,
        room: int,
        items: list[InboundTicket],
        rejected: list[tuple[str, str]],
    ) -> _FileState:
        with path.open("rb") as handle:
            handle.seek(state.offset)
            data = handle.read()
        is_csv = path.suffix.lower() == ".csv"
        header = b""
        if is_csv:
            if state.offset == 0:
                end = data.find(b"\n")
                if end < 0:
                    return state  # header not complete yet
                header, data = data[: end + 1], data[end + 1 :]
                state = _FileState(offset=end + 1, line=1, inode=state.inode)
            else:
                with path.open("rb") as handle:
                    header = handle.readline()
        lines, consumed, _ = _complete_records(data, room, csv_quotes=is_csv)
        chunk = b"".join(lines)
        if is_csv:
            parsed = parse_csv(
                header + chunk,
                max_body_chars=self.max_body_chars,
                first_line=state.line,
                ids_from_lines=True,
            )
        else:
            parsed = (
                ParsedLine(p.line + state.line, p.ticket, _shift(p.error, state.line))
                for p in parse_jsonl(chunk, max_body_chars=self.max_body_chars)
            )
        try:
            for result in parsed:
                if result.ticket is not None:
                    items.append(result.ticket)
                elif result.error is not None:
                    rejected.append((f"{path.name}:{result.error.line}", result.error.error))
        except FileFormatError as exc:
            rejected.append((path.name, str(exc)))
        return _FileState(offset=state.offset + consumed, line=state.line + len(lines), inode=state.inode)

    # --- push ----------------------------------------------------------------------------------

    def push(self, write_back: WriteBack) -> WriteBackReceipt:
        if write_back.ticket_external_id not in self._known_ids():
            raise NotFound(f"no ticket {write_back.ticket_external_id!r} in {self.path}", source=self.name)
        self.outbox.parent.mkdir(parents=True, exist_ok=True)
        with self.outbox.open("a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # two pushers never interleave check and append
            handle.seek(0)
            last = 0
            for last, line in enumerate(handle, start=1):
                if write_back.idempotency_key in line:
                    record = json.loads(line)
                    if record.get("idempotency_key") == write_back.idempotency_key:
                        return self._receipt(write_back, f"{self.outbox.name}:{last}", deduplicated=True)
            record = {
                "idempotency_key": write_back.idempotency_key,
                "ticket_external_id": write_back.ticket_external_id,
                "tags": write_back.tags,
                "fields": write_back.fields,
                "note": f"{write_back.note}\n\n{write_back.marker}" if write_back.note else None,
                "internal": True,
                "written_at": datetime.now(UTC).isoformat(),
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return self._receipt(write_back, f"{self.outbox.name}:{last + 1}", deduplicated=False)

    def _receipt(self, write_back: WriteBack, note_id: str, *, deduplicated: bool) -> WriteBackReceipt:
        return WriteBackReceipt(
            note_id=note_id if write_back.note else None,
            deduplicated=deduplicated,
            tags_applied=list(write_back.tags),
            fields_applied=dict(write_back.fields),
        )

    def _known_ids(self) -> set[str]:
        ids: set[str] = set()
        for path in self.files():
            try:
                for parsed in parse_file(path, max_body_chars=self.max_body_chars):
                    if parsed.ticket is not None:
                        ids.add(parsed.ticket.external_id)
            except FileFormatError:
                continue
        return ids

    def check(self) -> str:
        files = self.files()
        if not files:
            raise ConfigError(f"no file matches {self.path}", source=self.name)
        size = sum(p.stat().st_size for p in files)
        return f"{len(files)} file(s) matching {self.path}, {size} bytes; write-backs to {self.outbox}"


def _fixed_folder(pattern: str) -> Path:
    """The folder before the first wildcard (the file's folder when there is none): the outbox sits
    beside the files it answers."""
    parts = Path(pattern).parts
    first_wildcard = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    fixed = parts[:first_wildcard]
    folder = Path(*fixed) if fixed else Path(".")
    return folder.parent if folder == Path(pattern) else folder


def _shift(error: LineError | None, lines: int) -> LineError | None:
    if error is None:
        return None
    return LineError(error.line + lines, error.error, error.external_id)


def _complete_records(data: bytes, room: int, *, csv_quotes: bool) -> tuple[list[bytes], int, int]:
    """Up to ``room`` records of complete lines from ``data``: (lines, bytes consumed, records).

    For CSV a line ends a record only outside quotes (an even count of '"' so far), so a quoted
    field with a newline is never cut in two.
    """
    lines: list[bytes] = []
    consumed = records = 0
    quotes = 0
    start = 0
    while records < room:
        end = data.find(b"\n", start)
        if end < 0:
            break  # a half-written last line waits for the next pull
        line = data[start : end + 1]
        start = end + 1
        if csv_quotes:
            quotes += line.count(b'"')
            lines.append(line)
            if quotes % 2:
                continue
            consumed = start
            quotes = 0
            if line.strip():
                records += 1
            continue
        lines.append(line)
        consumed = start
        if line.strip():
            records += 1
    if csv_quotes:
        # Drop the lines of an unfinished quoted record: they are re-read next time.
        kept, total = [], 0
        for line in lines:
            if total + len(line) > consumed:
                break
            kept.append(line)
            total += len(line)
        lines = kept
    return lines, consumed, records


def _encode_cursor(states: dict[str, _FileState]) -> str:
    return json.dumps(
        {"files": {k: [s.offset, s.line, s.inode] for k, s in sorted(states.items())}},
        separators=(",", ":"),
    )


def _decode_cursor(cursor: str | None, source: str) -> dict[str, _FileState]:
    if not cursor:
        return {}
    try:
        raw = json.loads(cursor)
        return {k: _FileState(int(v[0]), int(v[1]), int(v[2])) for k, v in raw["files"].items()}
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ConfigError(f"stored files cursor is not readable: {exc}", source=source) from exc


def from_config(
    name: str, options: dict[str, Any], secrets: dict[str, SecretStr], http: SourceHttp | None
) -> FilesConnector:
    parsed = FilesOptions.model_validate(options)
    return FilesConnector(name, **parsed.model_dump())
