"""Write-back: triage results go back to the ticket system they came from, once, audited.

Pipeline (sources with ``write_back = true`` only):

1. After a batch's results are committed, :func:`after_results` plans one ``write_backs`` row per new
   result (unique idempotency key per source × ticket × result) and, after that commit, sends a
   Celery message carrying only the row id.
2. :func:`run_write_back` claims the row (so two workers never push it at once), builds the
   :class:`WriteBack` through the confidence gates — only fields at the ``auto`` gate become tags and
   fields, the draft only when its checks passed, as an internal note — and pushes it through the
   source's connector. The connector embeds the idempotency marker in the note and looks for it first,
   so a retry after a timeout that did land leaves one note.
3. Outcome: ``done`` with the receipt; a retryable error → ``pending`` again after an exponential
   back-off (Retry-After honoured) up to ``write_back_max_attempts``; a permanent error or the last
   attempt → ``failed``. One audit event per finished write-back: ids, tags, fields, note length —
   never the text.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from connectors.base import Connector, ConnectorError, RateLimited, RetryableError, WriteBack
from connectors.registry import build_connector
from connectors.sources_file import SourceConfig, SourcesFileError, load_sources
from db import write_backs
from db.bulk import in_ids
from db.models import Draft, Message, Source, Ticket, TriageResult, WorkItem, WriteBackRow, WriteBackState
from db.pii_vault import rehydrate
from db.session import transaction
from ticketfleet.broker import SOURCE_WRITE_BACK_TASK, TaskMessage, send_after_commit
from ticketfleet.core.settings import Settings
from ticketfleet.core.vocabulary import TRIAGE_FIELD_NAMES, RunIdentity

log = logging.getLogger(__name__)

ACTOR = "ticketfleet.writeback"
TAG_PREFIX = {"language": "lang", "sentiment": "sentiment", "intent": "intent", "priority": "priority"}
# A claimed write-back whose worker died is pushed again after this (the marker keeps it idempotent).
CLAIM_LEASE = timedelta(minutes=5)
RETRY_BASE_S = 30.0
RETRY_CAP_S = 1800.0


@dataclass
class WriteBackReport:
    write_back_id: int
    state: str | None = None
    skipped: str | None = None
    error: str | None = None
    note_id: str | None = None
    deduplicated: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def idempotency_key(source: str, ticket_external_id: str, triage_result_id: int) -> str:
    raw = f"{source}\x1f{ticket_external_id}\x1f{triage_result_id}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def gated_labels(result: TriageResult) -> tuple[list[str], dict[str, str]]:
    """Tags and fields for the values at the ``auto`` gate; suggestions and reviews stay inside."""
    tags: list[str] = []
    fields: dict[str, str] = {}
    for field in TRIAGE_FIELD_NAMES:
        if (result.gates or {}).get(field, {}).get("gate") != "auto":
            continue
        value = str(getattr(result, field)).strip().lower().replace(" ", "_")
        tags.append(f"tf-{TAG_PREFIX[field]}-{value}")
        fields[field] = value
    return tags, fields


# --- planning (after the results' commit) ----------------------------------------------------------


@lru_cache(maxsize=8)
def _write_back_sources_cached(path: str, mtime: float) -> frozenset[str]:
    sources = load_sources(Path(path), require_secrets=False).sources
    return frozenset(s.name for s in sources if s.write_back)


def write_back_sources(settings: Settings) -> frozenset[str]:
    path = Path(settings.sources_file)
    try:
        return _write_back_sources_cached(str(path), path.stat().st_mtime)
    except FileNotFoundError:
        return frozenset()


def plan_write_backs(
    session: Session, item_ids: Sequence[int], run: RunIdentity, sources: frozenset[str]
) -> list[int]:
    """Rows for the results of these work items whose source writes back; returns new row ids."""
    if not item_ids or not sources:
        return []
    rows = session.execute(
        select(
            TriageResult, Ticket.id, Ticket.external_id, Source.id, Source.name, Draft.id, Draft.check_result
        )
        .join(WorkItem, WorkItem.message_id == TriageResult.message_id)
        .join(Message, Message.id == TriageResult.message_id)
        .join(Ticket, Ticket.id == Message.ticket_id)
        .join(Source, Source.id == Ticket.source_id)
        .outerjoin(
            Draft,
            and_(
                Draft.message_id == TriageResult.message_id,
                Draft.model_id == TriageResult.model_id,
                Draft.model_revision == TriageResult.model_revision,
                Draft.prompt_version == TriageResult.prompt_version,
            ),
        )
        .where(
            in_ids(WorkItem.id, item_ids),
            TriageResult.model_id == run.model_id,
            TriageResult.model_revision == run.model_revision,
            TriageResult.prompt_version == run.prompt_version,
            Source.name.in_(sorted(sources)),
        )
    ).all()
    values = []
    for result, ticket_id, ticket_ext, source_id, source_name, draft_id, check in rows:
        tags, _ = gated_labels(result)
        usable_draft = draft_id if check == "passed" else None
        if not tags and usable_draft is None:
            continue  # nothing confident enough to write
        values.append(
            {
                "idempotency_key": idempotency_key(source_name, ticket_ext, result.id),
                "source_id": source_id,
                "ticket_id": ticket_id,
                "triage_result_id": result.id,
                "draft_id": usable_draft,
                "state": WriteBackState.pending,
            }
        )
    return write_backs.insert_planned(session, values)


def after_results(settings: Settings, database_url: str, item_ids: Sequence[int], run: RunIdentity) -> int:
    """Called once a batch's results are committed: plan, commit, then enqueue. Returns rows sent."""
    try:
        sources = write_back_sources(settings)
    except SourcesFileError as exc:
        log.error("write-back skipped, sources file unusable: %s", exc)
        return 0
    if not sources:
        return 0
    with transaction(database_url) as session:
        ids = plan_write_backs(session, item_ids, run, sources)
        sent = send_after_commit(session, write_back_messages(ids))
    return len(sent.sent)


def write_back_messages(ids: Sequence[int], *, countdown: float | None = None) -> list[TaskMessage]:
    """Celery messages naming write-back ids only. One the broker refuses leaves its row pending; the
    next poll of its source resends it (:func:`resend_due`)."""
    return [
        TaskMessage(SOURCE_WRITE_BACK_TASK, kwargs={"write_back_id": i}, countdown=countdown) for i in ids
    ]


def resend_due(settings: Settings, *, source: str | None = None, limit: int = 500) -> int:
    database_url = settings.database_url_value()
    if not database_url:
        return 0
    with transaction(database_url) as session:
        ids = write_backs.due_ids(session, source=source, limit=limit)
        sent = send_after_commit(session, write_back_messages(ids))
    return len(sent.sent)


# --- pushing -----------------------------------------------------------------------------------------


def build_write_back(
    session: Session, row: WriteBackRow, ticket_external_id: str, *, settings: Settings
) -> WriteBack:
    """The push for one row; the draft is rehydrated (placeholders → originals) for the agent who reads
    the note in the source system, and only here, at push time: the store keeps it redacted."""
    result = session.get(TriageResult, row.triage_result_id)
    if result is None:
        raise LookupError(f"triage result {row.triage_result_id} is gone")
    tags, fields = gated_labels(result)
    note = None
    if row.draft_id is not None:
        draft = session.get(Draft, row.draft_id)
        if draft is not None and draft.check_result == "passed" and draft.body.strip():
            note = rehydrate(session, row.ticket_id, draft.body, settings=settings)
    return WriteBack(
        ticket_external_id=ticket_external_id,
        tags=tags,
        fields=fields,
        note=note,
        idempotency_key=row.idempotency_key,
    )


def run_write_back(
    write_back_id: int,
    settings: Settings,
    *,
    connector_factory: Callable[[SourceConfig], Connector] | None = None,
    sources: list[SourceConfig] | None = None,
) -> WriteBackReport:
    """Claim, build, push, record. Safe to call twice: a row not due or already done is skipped."""
    report = WriteBackReport(write_back_id)
    database_url = settings.require_database_url()
    with transaction(database_url) as session:
        row = write_backs.claim(session, write_back_id, lease=CLAIM_LEASE)
        if row is None:
            report.skipped = "not pending or not due (done, failed, or being pushed)"
            return report
        source_name, ticket_ext = session.execute(
            select(Source.name, Ticket.external_id)
            .join(Ticket, Ticket.source_id == Source.id)
            .where(Ticket.id == row.ticket_id)
        ).one()
        write_back = build_write_back(session, row, ticket_ext, settings=settings)
        attempts = row.attempts
    configured = sources if sources is not None else load_sources(Path(settings.sources_file)).sources
    source = next((s for s in configured if s.name == source_name), None)
    if source is None or not source.write_back:
        return _finish_failed(
            database_url, row, report, "source no longer configured to write back", write_back
        )
    try:
        connector = (connector_factory or build_connector)(source)
        try:
            receipt = connector.push(write_back)
        finally:
            connector.close()
    except RetryableError as exc:
        error = f"{type(exc).__name__}: {exc}"
        if attempts >= settings.write_back_max_attempts:
            return _finish_failed(database_url, row, report, error, write_back)
        delay = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (attempts - 1))
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        with transaction(database_url) as session:
            write_backs.schedule_retry(session, row.id, error=error, delay_s=delay)
            send_after_commit(session, write_back_messages([row.id], countdown=delay))
        report.state, report.error = WriteBackState.pending.value, error
        return report
    except ConnectorError as exc:
        return _finish_failed(database_url, row, report, f"{type(exc).__name__}: {exc}", write_back)
    with transaction(database_url) as session:
        write_backs.mark_done(session, row, _summary(write_back), receipt.model_dump(), actor=ACTOR)
    report.state, report.note_id, report.deduplicated = "done", receipt.note_id, receipt.deduplicated
    return report


def _finish_failed(
    database_url: str, row: WriteBackRow, report: WriteBackReport, error: str, write_back: WriteBack
) -> WriteBackReport:
    with transaction(database_url) as session:
        write_backs.mark_failed(session, row, _summary(write_back), error, actor=ACTOR)
    log.warning("write-back %s failed: %s", row.id, error)
    report.state, report.error = WriteBackState.failed.value, error
    return report


def _summary(write_back: WriteBack) -> dict[str, Any]:
    """What the audit keeps of a push: labels and the note's length, never its text."""
    return {
        "tags": list(write_back.tags),
        "fields": dict(write_back.fields),
        "note_length": len(write_back.note or ""),
    }
