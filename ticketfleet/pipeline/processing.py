"""One batch through the engine: claim → load → infer → store. The whole job of a lane task.

Failure handling, in order of blast radius:
- a batch that raises is split and its items run one by one, so one poison item cannot fail or block
  its neighbours;
- an item that raises on its own is marked ``failed`` (retried by the reaper after a backoff) and,
  after ``max_attempts``, ``dead`` with its error;
- a worker that dies mid-batch leaves its items ``processing``; their lease expires and the reaper
  re-queues them. Results are keyed by (message, model, revision, prompt version), so a batch that
  runs twice stores each result once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from db.audit import AuditTrail
from db.models import ItemState
from db.results import Review, store_outputs
from db.session import transaction
from db.threads import load_inputs
from db.work import mark_done, mark_failed
from ticketfleet.core.schemas import Engine, EngineInput, EngineOutput
from ticketfleet.core.settings import Settings
from ticketfleet.core.vocabulary import RunIdentity
from ticketfleet.pipeline.batching import claim_batch
from ticketfleet.pipeline.draft_checks import check_draft
from ticketfleet.pipeline.gates import apply_gates, needs_review

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchReport:
    lane: str
    claimed: int = 0
    done: int = 0
    failed: int = 0
    dead: int = 0
    new_results: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def process_lane_batch(
    lane: str,
    hinted_ids: Sequence[int],
    *,
    engine: Engine,
    settings: Settings,
    database_url: str,
    worker: str,
) -> BatchReport:
    started = time.perf_counter()
    items = claim_batch(settings, database_url, lane=lane, hinted_ids=hinted_ids, worker=worker)
    if not items:
        return BatchReport(lane=lane)
    with transaction(database_url) as session:
        inputs = load_inputs(session, items)
    outputs, errors = run_isolating(engine, [inputs[i.id] for i in items if i.id in inputs])
    for item in items:
        if item.id not in inputs:
            errors[item.id] = "message no longer exists"

    reviews = {o.item_id: review_output(o, inputs[o.item_id], settings, engine) for o in outputs}
    dead = failed = new_results = 0
    with transaction(database_url) as session:
        audit = AuditTrail(worker)
        new_results = store_outputs(session, outputs, RunIdentity.of(engine), audit=audit, reviews=reviews)
        mark_done(session, [o.item_id for o in outputs], audit=audit)
        for item_id, error in errors.items():
            state = mark_failed(
                session,
                item_id,
                error,
                max_attempts=settings.max_attempts,
                backoff_s=settings.retry_backoff_s,
                audit=audit,
            )
            dead += state == ItemState.dead
            failed += state == ItemState.failed
        # One INSERT for the whole batch, as the transaction's last statement (db/audit.py).
        audit.write(session)
    if outputs:
        _write_back_after_commit(settings, database_url, [o.item_id for o in outputs], engine)
    report = BatchReport(
        lane=lane,
        claimed=len(items),
        done=len(outputs),
        failed=failed,
        dead=dead,
        new_results=new_results,
        seconds=time.perf_counter() - started,
    )
    log.info("batch %s", report.as_dict())
    return report


def _write_back_after_commit(
    settings: Settings, database_url: str, item_ids: list[int], engine: Engine
) -> None:
    """Results are committed: queue their write-backs. Never fails the batch (they are resent)."""
    from ticketfleet.pipeline.writeback import after_results

    try:
        after_results(settings, database_url, item_ids, RunIdentity.of(engine))
    except Exception:
        log.exception("planning write-backs failed; the results are stored")


def review_output(output: EngineOutput, item: EngineInput, settings: Settings, engine: Engine) -> Review:
    """Gates per field, and the draft check when a draft was due (against ``engine``'s instructions)."""
    gates = apply_gates(output.triage, settings.gates)
    draft_check = None
    if item.want_draft:
        language = output.draft_language or output.triage.language.value
        draft_check = check_draft(
            output.draft,
            language=language,
            customer_texts=[m.text for m in item.thread if m.role == "customer"],
            instructions=engine.draft_instructions(language),
        )
    # Text addressed to the AI is removed before the model reads it, and a human looks at the ticket.
    flagged = needs_review(gates) or output.injection_suspected
    return Review(gates=gates, needs_review=flagged, draft_check=draft_check)


def run_isolating(engine: Engine, inputs: list[EngineInput]) -> tuple[list[EngineOutput], dict[int, str]]:
    """Run the batch; if it raises, run each item alone so only the culprit fails."""
    if not inputs:
        return [], {}
    try:
        return _checked(inputs, engine.process(inputs)), {}
    except Exception as exc:
        if len(inputs) == 1:
            log.warning("item %s failed: %s", inputs[0].item_id, exc)
            return [], {inputs[0].item_id: _describe(exc)}
        log.warning("batch of %d failed (%s); retrying items one by one", len(inputs), exc)
    outputs: list[EngineOutput] = []
    errors: dict[int, str] = {}
    for item in inputs:
        try:
            outputs.extend(_checked([item], engine.process([item])))
        except Exception as exc:
            log.warning("item %s failed: %s", item.item_id, exc)
            errors[item.item_id] = _describe(exc)
    return outputs, errors


def _checked(inputs: list[EngineInput], outputs: list[EngineOutput]) -> list[EngineOutput]:
    expected = [i.item_id for i in inputs]
    got = [o.item_id for o in outputs]
    if got != expected:
        raise RuntimeError(f"engine returned items {got[:5]}… for inputs {expected[:5]}…")
    return outputs


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
