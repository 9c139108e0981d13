"""Checking the audit hash chain from outside the database, and signing its head for anchoring.

The chain is computed by PostgreSQL (trigger ``audit_events_chain``). Here it is recomputed in Python
from the stored columns with its own implementation of the same canonical form, so a trigger that was
replaced, disabled or bypassed cannot vouch for itself:

    row_hash = sha256("tf-audit-v1;" + F(seq) + F(epoch µs of occurred_at) + F(actor) + F(event_type)
                      + F(entity_type) + F(entity_id) + F(data) + F(before) + F(after)
                      + F(hex prev_hash))
    F(NULL) = "~",  F(text) = "<utf-8 byte length>:<text>,"

jsonb values enter as PostgreSQL's own normalised text (``jsonb::text``: keys sorted, one spacing).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, text

GENESIS_HASH = bytes(32)
CANONICAL_TAG = b"tf-audit-v1;"
HEAD_TAG = "tf-audit-head-v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How many recent hashes verify remembers to explain a broken link (which row a prev_hash points to).
_RECENT_HASHES = 100_000
# How far from its current seq verify looks for the seq a moved row was chained as.
_NEARBY = 8


def _field(value: str | None) -> bytes:
    if value is None:
        return b"~"
    raw = value.encode("utf-8")
    return str(len(raw)).encode() + b":" + raw + b","


def epoch_microseconds(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def row_hash(
    *,
    seq: int,
    occurred_at: datetime,
    actor: str,
    event_type: str,
    entity_type: str,
    entity_id: int | None,
    data: str,
    before: str | None,
    after: str | None,
    prev_hash: bytes,
) -> bytes:
    """The hash a row must carry (jsonb columns passed as their ``::text``)."""
    canonical = CANONICAL_TAG + b"".join(
        _field(v)
        for v in (
            str(seq),
            str(epoch_microseconds(occurred_at)),
            actor,
            event_type,
            entity_type,
            None if entity_id is None else str(entity_id),
            data,
            before,
            after,
            prev_hash.hex(),
        )
    )
    return hashlib.sha256(canonical).digest()


class Finding(BaseModel):
    """One thing wrong with the chain, naming the row (seq and id) where it shows."""

    seq: int | None
    id: int | None
    problem: str  # edited | moved | reordered | deleted | inserted | replaced | tail | head | anchor
    detail: str

    def describe(self) -> str:
        where = f"seq {self.seq} (id {self.id})" if self.seq is not None else "chain"
        return f"{where}: {self.problem}: {self.detail}"


class VerifyReport(BaseModel):
    rows: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH.hex()
    findings: list[Finding] = []

    @property
    def ok(self) -> bool:
        return not self.findings


_ROWS = text(
    """
    SELECT id, seq, occurred_at, actor, event_type, entity_type, entity_id,
           data::text, before::text, after::text, prev_hash, row_hash
    FROM audit_events WHERE seq > :after ORDER BY seq LIMIT :limit
    """
)


def _rows(conn: Connection, chunk_size: int) -> Iterator[Any]:
    """Every row in seq order, fetched in keyset-paginated chunks (constant memory)."""
    after = 0
    while True:
        chunk = conn.execute(_ROWS, {"after": after, "limit": chunk_size}).all()
        yield from chunk
        if len(chunk) < chunk_size:
            return
        after = chunk[-1].seq


def verify_chain(
    conn: Connection, *, chunk_size: int = 10_000, on_progress: Callable[[int], None] | None = None
) -> VerifyReport:
    """Recompute the whole chain. Run it in one REPEATABLE READ transaction (see :func:`snapshot`) so
    rows and head are read at one instant while the fleet keeps writing."""
    report = VerifyReport()
    # row_hash → (seq it was chained as, seq it sits at now), for the most recent rows.
    recent: OrderedDict[bytes, tuple[int, int]] = OrderedDict({GENESIS_HASH: (0, 0)})
    prev_seq, prev_hash, prev_id, prev_chained = 0, GENESIS_HASH, None, 0
    findings = report.findings
    for row in _rows(conn, chunk_size):
        prev_hash_stored, stored = bytes(row.prev_hash), bytes(row.row_hash)
        content = {
            "occurred_at": row.occurred_at,
            "actor": row.actor,
            "event_type": row.event_type,
            "entity_type": row.entity_type,
            "entity_id": row.entity_id,
            "data": row.data,
            "before": row.before,
            "after": row.after,
            "prev_hash": prev_hash_stored,
        }

        def named(problem: str, detail: str) -> Finding:
            return Finding(seq=row.seq, id=row.id, problem=problem, detail=detail)  # noqa: B023

        gap = row.seq != prev_seq + 1
        if gap:
            missing = f"seq {prev_seq + 1}" + (f"–{row.seq - 1}" if row.seq - 1 > prev_seq + 1 else "")
            findings.append(named("deleted", f"{missing} missing before this row"))
        chained_seq = row.seq  # the seq this row's hash was computed with, when it can be told
        if row_hash(seq=row.seq, **content) != stored:
            original = _chained_as(row.seq, stored, content, recent.get(prev_hash_stored))
            if original is not None:
                chained_seq = original
                findings.append(
                    named("moved", f"row was chained as seq {original}, now sits at seq {row.seq}")
                )
            else:
                findings.append(
                    named(
                        "edited", "content does not match its row_hash (a column was changed after chaining)"
                    )
                )
        if prev_hash_stored != prev_hash:
            linked = recent.get(prev_hash_stored)
            moved_before = prev_chained != prev_seq  # the row before this one is itself out of place
            if linked is not None and linked[0] == chained_seq - 1 and moved_before:
                findings.append(
                    named(
                        "reordered", f"the row chained before it now sits at seq {linked[1]}, not {prev_seq}"
                    )
                )
            elif linked is not None and linked[1] < prev_seq:
                first = linked[1] + 1
                span = f"seq {first}" + (f"–{prev_seq}" if prev_seq > first else "")
                findings.append(
                    named(
                        "inserted", f"prev_hash links to seq {linked[1]}: {span} was inserted into the chain"
                    )
                )
            elif chained_seq > row.seq:
                findings.append(
                    named(
                        "deleted",
                        f"the row chained before it (seq {chained_seq - 1}) is not there: deleted "
                        "(and the rest renumbered), or moved further down",
                    )
                )
            elif not gap:
                findings.append(
                    named(
                        "replaced",
                        f"prev_hash does not match seq {prev_seq} (id {prev_id}): that row was rewritten "
                        "with a new hash, or rows between were deleted and renumbered",
                    )
                )
        recent[stored] = (chained_seq, row.seq)
        if len(recent) > _RECENT_HASHES:
            recent.popitem(last=False)
        prev_seq, prev_hash, prev_id, prev_chained = row.seq, stored, row.id, chained_seq
        report.rows += 1
        if on_progress and report.rows % chunk_size == 0:
            on_progress(report.rows)
    report.last_seq, report.last_hash = prev_seq, prev_hash.hex()
    head = conn.execute(text("SELECT seq, row_hash FROM audit_chain_head")).first()
    head_seq, head_hash = (head.seq, bytes(head.row_hash)) if head else (0, GENESIS_HASH)
    if head_seq > prev_seq:
        findings.append(
            Finding(
                seq=None,
                id=None,
                problem="tail",
                detail=f"chain ends at seq {prev_seq} but its head says seq {head_seq}: "
                + (
                    f"seq {head_seq} was"
                    if head_seq == prev_seq + 1
                    else f"seq {prev_seq + 1}–{head_seq} were"
                )
                + " deleted",
            )
        )
    elif (head_seq, head_hash) != (prev_seq, prev_hash):
        findings.append(
            Finding(
                seq=None,
                id=None,
                problem="head",
                detail=f"audit_chain_head (seq {head_seq}, {head_hash.hex()[:16]}…) "
                f"does not match the last row "
                f"(seq {prev_seq}, {prev_hash.hex()[:16]}…)",
            )
        )
    return report


def _chained_as(
    seq: int, stored: bytes, content: dict[str, Any], linked: tuple[int, int] | None
) -> int | None:
    """The seq a row's hash was computed with, if it is not its current one (a moved row): the seq
    after the row its prev_hash names, else a nearby one. Only runs for rows that fail their hash."""
    candidates = [linked[0] + 1] if linked else []
    candidates += [seq + d for step in range(1, _NEARBY + 1) for d in (step, -step)]
    for candidate in candidates:
        if candidate > 0 and candidate != seq and row_hash(seq=candidate, **content) == stored:
            return candidate
    return None


# --- head anchoring --------------------------------------------------------------------------------


class ChainHead(BaseModel):
    """The chain's last row, as printed by ``ticketfleet audit head`` and stored outside the database."""

    seq: int
    row_hash: str  # hex
    occurred_at: str | None  # ISO 8601, as read from the row
    signed_at: str
    hmac_sha256: str = ""

    def message(self) -> bytes:
        return f"{HEAD_TAG};{self.seq};{self.row_hash};{self.occurred_at};{self.signed_at}".encode()

    def signed(self, key: bytes) -> ChainHead:
        return self.model_copy(
            update={"hmac_sha256": hmac.new(key, self.message(), hashlib.sha256).hexdigest()}
        )

    def signature_valid(self, key: bytes) -> bool:
        expected = hmac.new(key, self.message(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.hmac_sha256)


def read_head(conn: Connection) -> ChainHead:
    row = conn.execute(
        text("SELECT seq, row_hash, occurred_at FROM audit_events ORDER BY seq DESC LIMIT 1")
    ).first()
    now = datetime.now(UTC).isoformat()
    if row is None:
        return ChainHead(seq=0, row_hash=GENESIS_HASH.hex(), occurred_at=None, signed_at=now)
    return ChainHead(
        seq=row.seq,
        row_hash=bytes(row.row_hash).hex(),
        occurred_at=row.occurred_at.isoformat(),
        signed_at=now,
    )


def check_anchor(conn: Connection, anchor: ChainHead) -> Finding | None:
    """Whether the chain still holds the anchored row at its seq (so the anchored prefix is intact,
    given that :func:`verify_chain` found the links sound). None when it does."""
    if anchor.seq == 0:
        return None
    row = conn.execute(
        text("SELECT id, row_hash FROM audit_events WHERE seq = :s"), {"s": anchor.seq}
    ).first()
    if row is None:
        return Finding(
            seq=anchor.seq, id=None, problem="anchor", detail="the anchored row is no longer in the chain"
        )
    if bytes(row.row_hash).hex() != anchor.row_hash:
        return Finding(
            seq=anchor.seq,
            id=row.id,
            problem="anchor",
            detail=f"hash {bytes(row.row_hash).hex()[:16]}… differs from the anchored "
            f"{anchor.row_hash[:16]}…: "
            "the chain up to the anchor was rewritten",
        )
    return None
