"""Following work items to the end with a progress bar (`backlog`, `demo`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from db.models import ItemState, WorkItem
from db.session import transaction

FINAL = (ItemState.done, ItemState.dead)
STALL_HINT_S = 180.0


def _counts(database_url: str, *, lane: str | None, item_ids: Sequence[int] | None) -> dict[str, int]:
    stmt = select(WorkItem.state, func.count()).group_by(WorkItem.state)
    if lane is not None:
        stmt = stmt.where(WorkItem.lane == lane)
    if item_ids is not None:
        stmt = stmt.where(WorkItem.id.in_(list(item_ids)))
    with transaction(database_url) as session:
        return {ItemState(s).value: int(n) for s, n in session.execute(stmt).all()}


def follow_items(
    database_url: str,
    *,
    lane: str | None = None,
    item_ids: Sequence[int] | None = None,
    timeout_s: float | None = None,
    console: Console,
    poll_s: float = 0.5,
    check: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Poll until every item is done or dead (or the timeout); returns the final counts by state.

    ``check`` runs on every poll and may raise to abort (the demo uses it to notice a dead worker).
    """
    started = time.monotonic()
    last_change = started
    last_finished = -1
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("processing", total=None, detail="")
        while True:
            counts = _counts(database_url, lane=lane, item_ids=item_ids)
            total = sum(counts.values())
            finished = sum(counts.get(s.value, 0) for s in FINAL)
            detail = " ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v)
            progress.update(task, total=total, completed=finished, detail=detail)
            now = time.monotonic()
            if finished != last_finished:
                last_finished, last_change = finished, now
            elif now - last_change > STALL_HINT_S:
                console.print("[yellow]no progress for 3 minutes: is a worker consuming this lane?[/]")
                last_change = now
            if total and finished >= total:
                return counts
            if timeout_s is not None and now - started > timeout_s:
                console.print(f"[yellow]stopped waiting after {timeout_s:.0f} s[/]")
                return counts
            if check is not None:
                check()
            time.sleep(poll_s)
