"""Storing engine results idempotently: a re-run batch (at-least-once delivery) adds no rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db import audit as events
from db.audit import AuditTrail, record_draft_status
from db.models import Draft, DraftStatus, TriageResult, WorkItem
from ticketfleet.core.schemas import EngineOutput
from ticketfleet.core.vocabulary import RunIdentity


@dataclass(frozen=True)
class Review:
    """What the fleet concluded about one output before storing it (gates, draft check)."""

    gates: dict[str, Any]
    needs_review: bool
    draft_check: str | None  # None: no draft was due


def store_outputs(
    session: Session,
    outputs: Sequence[EngineOutput],
    run: RunIdentity,
    *,
    audit: AuditTrail,
    reviews: dict[int, Review],
) -> int:
    """Insert triage results and drafts for finished items; returns how many results were new.

    Adds to ``audit`` one model-decision event per new result and one draft-status event per new
    draft; the caller writes the trail last in its transaction."""
    if not outputs:
        return 0
    message_of = dict(
        session.execute(
            select(WorkItem.id, WorkItem.message_id).where(WorkItem.id.in_([o.item_id for o in outputs]))
        ).all()
    )
    versions = {
        "model_id": run.model_id,
        "model_revision": run.model_revision,
        "prompt_version": run.prompt_version,
    }
    triage_rows: list[dict[str, Any]] = []
    draft_rows: list[dict[str, Any]] = []
    for out in outputs:
        t = out.triage
        message_id = message_of[out.item_id]
        triage_rows.append(
            {
                "message_id": message_id,
                "language": t.language.value,
                "language_confidence": t.language.confidence,
                "sentiment": t.sentiment.value,
                "sentiment_confidence": t.sentiment.confidence,
                "intent": t.intent.value,
                "intent_confidence": t.intent.confidence,
                "priority": t.priority.value,
                "priority_confidence": t.priority.confidence,
                "latency_ms": out.latency_ms,
                "truncated": out.truncated,
                "gates": reviews[out.item_id].gates,
                "needs_review": reviews[out.item_id].needs_review,
                "injection_suspected": out.injection_suspected,
                **versions,
            }
        )
        draft_check = reviews[out.item_id].draft_check
        if draft_check is not None:
            # Stored even when the check failed (with the reason): nothing is lost, and only
            # drafts whose check passed are ever proposed to an agent or written back.
            draft_rows.append(
                {
                    "message_id": message_id,
                    "body": out.draft or "",
                    "language": out.draft_language or t.language.value,
                    "output_tokens": out.output_tokens,
                    "check_result": draft_check,
                    **versions,
                }
            )
    inserted = session.execute(
        insert(TriageResult)
        .values(triage_rows)
        .on_conflict_do_nothing(constraint="uq_triage_results_run")
        .returning(TriageResult.id, TriageResult.message_id)
    ).all()
    new_drafts: Sequence[Any] = ()
    if draft_rows:
        new_drafts = session.execute(
            insert(Draft)
            .values(draft_rows)
            .on_conflict_do_nothing(constraint="uq_drafts_run")
            .returning(Draft.id, Draft.message_id, Draft.check_result)
        ).all()
    # One audit event per new decision: labels, confidences and versions; never the text.
    new_messages = {mid for _, mid in inserted}
    draft_checks = {d["message_id"]: d["check_result"] for d in draft_rows}
    for row in triage_rows:
        if row["message_id"] in new_messages:
            audit.add(
                events.TRIAGE_DECIDED,
                "message",
                row["message_id"],
                after={
                    "fields": {
                        f: {"value": row[f], "confidence": round(float(row[f"{f}_confidence"]), 4)}
                        for f in ("language", "sentiment", "intent", "priority")
                    },
                    "gates": {f: g["gate"] for f, g in row["gates"].items()},
                    "needs_review": row["needs_review"],
                    "injection_suspected": row["injection_suspected"],
                    "draft_check": draft_checks.get(row["message_id"]),
                    **versions,
                },
            )
    for draft_id, message_id, check_result in new_drafts:
        record_draft_status(
            audit,
            draft_id,
            None,
            DraftStatus.proposed,
            message_id=message_id,
            check_result=check_result,
            **versions,
        )
    return len(inserted)
