"""A lossless "updated since" cursor for search/list APIs that sort by a coarse ``updated_at``.

Freshdesk (``updated_since``, seconds), Zammad (Elasticsearch search, lagging index) and Jira (JQL,
minutes) all list tickets "updated at or after T" in ascending order, and all share three traps:

* **ties** — many tickets share one timestamp, so "resume after the last timestamp" skips the ones
  that did not fit on the page, and "resume at the last timestamp" re-reads them forever;
* **coarse or lagging filters** — JQL compares whole minutes, a search index sees a ticket seconds
  after it changed, so the query bound must reach back (``overlap``) before the newest time seen;
* **page caps** — page numbers run out (Freshdesk, Elasticsearch's result window), so one query must
  not be paged forever.

The cursor therefore keeps the newest ``updated_at`` emitted (``since``) plus the ids emitted inside
the overlap window with the ``updated_at`` they had (``seen``). Each pull queries from
``window_start(since)``; records already seen with the same or a newer ``updated_at`` are dropped, a
ticket updated again is emitted again. After a page the cursor restarts the query from the newer bound
(page 1) whenever the seen records inside the window number fewer than a page, which guarantees that
the next page holds something new; only when a whole page is made of ties does it follow the query's
own next page (page number or token). Duplicates that still slip through (a cursor lost with a crash)
are absorbed by the idempotent ingest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from connectors.base import ConfigError

T = TypeVar("T")
R = TypeVar("R")


def parse_timestamp(value: str) -> datetime:
    """An ISO-8601 timestamp as an aware UTC datetime ('Z', '+00:00' and '+0000' offsets all accepted)."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():  # Jira's +0000
        text = f"{text[:-2]}:{text[-2:]}"
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def maybe_timestamp(value: object) -> datetime | None:
    """A message's creation time when the source gave a parsable one; never a reason to drop a ticket."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Hit(Generic[T]):
    """One search/list result: its id, its ``updated_at`` and whatever the connector needs later."""

    id: str
    updated: datetime
    raw: T


@dataclass
class WindowCursor:
    since: datetime | None = None
    # id → updated_at (ISO) of records emitted inside the overlap window.
    seen: dict[str, str] = field(default_factory=dict)
    # While one query is paged through: the query's lower bound and the token of its next page.
    bound: datetime | None = None
    token: str | None = None

    # --- (de)serialisation --------------------------------------------------------------------

    def encode(self) -> str:
        return json.dumps(
            {
                "since": iso(self.since) if self.since else None,
                "seen": self.seen,
                "bound": iso(self.bound) if self.bound else None,
                "token": self.token,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def decode(cls, cursor: str | None, *, source: str) -> WindowCursor:
        """The stored cursor; None (never pulled) gives one whose query starts at the source's start."""
        if cursor is None:
            return cls()
        try:
            data: dict[str, Any] = json.loads(cursor)
            return cls(
                since=parse_timestamp(data["since"]) if data.get("since") else None,
                seen={str(k): str(v) for k, v in dict(data.get("seen") or {}).items()},
                bound=parse_timestamp(data["bound"]) if data.get("bound") else None,
                token=str(data["token"]) if data.get("token") is not None else None,
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(
                f"stored cursor is not a window cursor ({exc}): {cursor[:120]!r}", source=source
            ) from exc

    # --- the query to run next -------------------------------------------------------------------

    def query(self, window_start: Callable[[datetime], datetime]) -> tuple[datetime | None, str | None]:
        """(lower bound, page token) of the next request; bound None: from the configured start."""
        if self.token is not None:
            return self.bound, self.token
        return (window_start(self.since) if self.since else None), None

    # --- advancing -------------------------------------------------------------------------------

    def advance(
        self,
        hits: list[Hit[T]],
        next_token: str | None,
        *,
        window_start: Callable[[datetime], datetime],
        page_size: int,
    ) -> tuple[list[Hit[T]], WindowCursor, bool]:
        """(hits not emitted before, the cursor after this page, whether more pages follow)."""
        bound, _ = self.query(window_start)
        fresh: list[Hit[T]] = []
        seen = dict(self.seen)
        for hit in hits:
            before = seen.get(hit.id)
            if before is not None and parse_timestamp(before) >= hit.updated:
                continue
            fresh.append(hit)
            seen[hit.id] = iso(hit.updated)
        newest = max([h.updated for h in hits] + ([self.since] if self.since else []), default=None)
        if newest is not None:
            floor = window_start(newest)
            seen = {k: v for k, v in seen.items() if parse_timestamp(v) >= floor}
        if next_token is None:
            return fresh, WindowCursor(since=newest, seen=seen), False
        if len(seen) < page_size:
            # Fewer seen records in the new window than a page: page 1 from the newer bound is
            # guaranteed to hold something unseen, so restart there (no page numbers to run out).
            return fresh, WindowCursor(since=newest, seen=seen), True
        # A whole page of ties: only the query's own next page can get past them.
        return fresh, WindowCursor(since=newest, seen=seen, bound=bound, token=next_token), True


def read_page_with_lookback(
    fetch: Callable[[int], tuple[list[R], bool]], token: str | None
) -> tuple[list[R], str | None]:
    """Rows of page ``token`` (1 when None) and the token of the page after it (None: last page).

    For APIs paged by number: while following pages through a block of ties, a tied ticket updated
    meanwhile moves to the end of the listing and every later row shifts one place towards the front,
    so the first row of the next page would land on the page already read. Re-reading the previous
    page *after* the current one catches up to a page of such shifts per pull (the cursor's seen-set
    drops the rows read twice). ``fetch(page)`` returns (rows, whether a next page exists).
    """
    page = int(token) if token else 1
    rows, more = fetch(page)
    if page > 1:
        earlier, _ = fetch(page - 1)
        rows = earlier + rows
    return rows, (str(page + 1) if more else None)
