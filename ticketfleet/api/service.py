"""The API's work, kept out of the routes: validate → store + queue (one transaction) → reply.

Routes hand this module the authenticated source and the parsed JSON; it answers typed replies or
raises :class:`ApiError`. Storing goes through :func:`ticketfleet.pipeline.intake.store_and_queue`, the
same path as ``ticketfleet import``: idempotent on (source, external id) per ticket and message, work
items created in the same transaction, wake-ups (ids only) sent after the commit.

One module of ~400 lines on purpose: it is the one class behind every route (ingest, read, draft
decisions, vendor hooks, health), each a short method; state changes live in ``db/``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis
from pydantic import ValidationError
from sqlalchemy import String, select, text
from sqlalchemy.orm import Session

from db import drafts
from db.audit import AuditTrail
from db.bulk import any_of, in_ids
from db.ingest import IngestResult
from db.models import Message, Source, Ticket, WorkItem
from db.pii_vault import rehydrate as rehydrate_draft
from db.session import get_engine, transaction
from db.ticket_view import MessageRow, ticket_with_results
from ticketfleet import broker
from ticketfleet.api.coalesce import Coalescer
from ticketfleet.api.errors import ApiError
from ticketfleet.api.schemas import (
    ChatMessageIn,
    DraftDecisionIn,
    DraftDecisionReply,
    DraftView,
    FieldError,
    HookReply,
    IngestReply,
    MessageView,
    RejectedRecord,
    ResultView,
    StoredMessage,
    StoredRecord,
    TicketView,
    field_errors,
)
from ticketfleet.core.inbound import InboundTicket
from ticketfleet.core.settings import Settings
from ticketfleet.core.vocabulary import TRIAGE_FIELD_NAMES
from ticketfleet.pipeline.dispatch import LaneUnsent
from ticketfleet.pipeline.intake import IntakeResult, store_and_queue
from ticketfleet.services import redis_client

log = logging.getLogger(__name__)

# Short timeouts: a health check or a nudge must answer, not hang, when Redis is away.
REDIS_TIMEOUT_S = 2.0


class ApiService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database_url = settings.require_database_url()
        redis_url = settings.require_redis_url()
        self.redis = redis_client(redis_url, timeout_s=REDIS_TIMEOUT_S)
        broker.configure(broker.app, settings, redis_url)
        self._coalescer = Coalescer(self._store_each)

    # --- ingest -----------------------------------------------------------------------------------

    def ingest_chat(self, source: str, payload: Any) -> IngestReply:
        if not isinstance(payload, dict):
            raise ApiError(422, "invalid", f"expected a JSON object, got {_json_type(payload)}")
        try:
            message = ChatMessageIn.model_validate(payload)
        except ValidationError as exc:
            raise _invalid(field_errors(exc)) from exc
        ticket = message.to_inbound()
        problem = self._record_problem(source, ticket)
        if problem:
            raise _invalid([problem])
        return self._store_single(source, ticket, lane="chat")

    def ingest_tickets(self, source: str, payload: Any) -> IngestReply:
        """One InboundTicket object, or a list of them (bulk: bad records are reported, good stored)."""
        if isinstance(payload, dict):
            ticket, errors = self._validate_ticket(source, payload)
            if ticket is None:
                raise _invalid(errors)
            return self._store_single(source, ticket, lane="live")
        if not isinstance(payload, list):
            raise ApiError(
                422, "invalid", f"expected a ticket object or a list of them, got {_json_type(payload)}"
            )
        if not payload:
            raise ApiError(422, "invalid", "the list of tickets is empty")
        good: list[tuple[int, InboundTicket]] = []
        rejected: list[RejectedRecord] = []
        first_index: dict[tuple[str, str], int] = {}
        for index, raw in enumerate(payload):
            external_id = _external_id_of(raw)
            if not isinstance(raw, dict):
                error = FieldError(field="record", message=f"expected a JSON object, got {_json_type(raw)}")
                rejected.append(RejectedRecord(index=index, errors=[error]))
                continue
            ticket, errors = self._validate_ticket(source, raw)
            if ticket is not None:
                key = (ticket.source or source, ticket.external_id)
                if key in first_index:
                    # The store keeps one version of a ticket per statement; silently dropping one
                    # record would lose its messages, so the later one is refused with the reason.
                    errors = [
                        FieldError(
                            field="external_id",
                            message=f"same ticket as record {first_index[key]} in this batch; "
                            "send one record per ticket (put the thread in 'messages')",
                        )
                    ]
                    ticket = None
                else:
                    first_index[key] = index
            if ticket is None:
                rejected.append(RejectedRecord(index=index, external_id=external_id, errors=errors))
            else:
                good.append((index, ticket))
        if not good:
            return IngestReply(source=source, rejected=rejected)
        return self._store(source, good, rejected, lane="live")

    def _validate_ticket(
        self, source: str, raw: dict[str, Any]
    ) -> tuple[InboundTicket | None, list[FieldError]]:
        try:
            ticket = InboundTicket.model_validate(raw)
        except ValidationError as exc:
            return None, field_errors(exc)
        problem = self._record_problem(source, ticket)
        return (None, [problem]) if problem else (ticket, [])

    def _record_problem(self, source: str, ticket: InboundTicket) -> FieldError | None:
        if ticket.source is not None and ticket.source != source:
            return FieldError(
                field="source",
                message=f"this request is authenticated as source {source!r}; it cannot write to "
                f"{ticket.source!r}",
            )
        cap = self.settings.max_body_chars
        for i, message in enumerate(ticket.messages):
            if len(message.text) > cap:
                return FieldError(
                    field=f"messages.{i}.text",
                    message=f"{len(message.text)} characters, over the cap of {cap}",
                )
        return None

    def _store(
        self,
        source: str,
        records: list[tuple[int, InboundTicket]],
        rejected: list[RejectedRecord],
        *,
        lane: str,
    ) -> IngestReply:
        reply = IngestReply(source=source, rejected=rejected)

        def describe(session: Session, ingest: IngestResult) -> None:
            reply.stored = _stored_records(session, source, records, set(ingest.new_message_ids))

        result = self._intake(source, [ticket for _, ticket in records], lane, describe)
        reply.new_messages = len(result.ingest.new_message_ids)
        reply.known_messages = sum(len(r.messages) for r in reply.stored) - reply.new_messages
        reply.work_item_ids = [i for ids in result.work_items.values() for i in ids]
        reply.queued = result.queued
        reply.warnings = _enqueue_warnings(result.unsent)
        return reply

    def _intake(
        self,
        source: str,
        tickets: Sequence[InboundTicket],
        lane: str,
        describe: Callable[[Session, IngestResult], None],
    ) -> IntakeResult:
        """Store and queue through the one intake path; ``describe`` reads what was stored, in the
        same transaction."""
        return store_and_queue(
            tickets,
            settings=self.settings,
            database_url=self.database_url,
            source=source,
            source_kind="webhook",
            lane=lane,
            actor=f"api:{source}",
            inspect=describe,
        )

    def _store_single(self, source: str, ticket: InboundTicket, *, lane: str) -> IngestReply:
        """One record, stored together with whatever other single records are arriving (coalesce.py)."""
        return cast(IngestReply, self._coalescer.submit(source, lane, ticket))

    def _store_each(self, source: str, lane: str, tickets: Sequence[InboundTicket]) -> list[IngestReply]:
        """Several single-record requests in one transaction; one reply each, as if stored alone."""
        records = list(enumerate(tickets))
        stored: list[StoredRecord] = []
        item_of: dict[int, tuple[int, str]] = {}  # message id → (work-item id, lane)

        def describe(session: Session, ingest: IngestResult) -> None:
            stored.extend(_stored_records(session, source, records, set(ingest.new_message_ids)))
            rows = session.execute(
                select(WorkItem.message_id, WorkItem.id, WorkItem.lane).where(
                    in_ids(WorkItem.message_id, ingest.new_customer_message_ids)
                )
            )
            item_of.update({message_id: (item_id, item_lane) for message_id, item_id, item_lane in rows})

        result = self._intake(source, tickets, lane, describe)
        unsent = {exc.lane for exc in result.unsent}
        replies = []
        for record in stored:
            items = [item_of[m.message_id] for m in record.messages if m.message_id in item_of]
            new = sum(m.new for m in record.messages)
            replies.append(
                IngestReply(
                    source=source,
                    stored=[record.model_copy(update={"index": 0})],
                    new_messages=new,
                    known_messages=len(record.messages) - new,
                    work_item_ids=[item_id for item_id, _ in items],
                    queued=sum(item_lane not in unsent for _, item_lane in items),
                    warnings=_enqueue_warnings(
                        [e for e in result.unsent if e.lane in {la for _, la in items}]
                    ),
                )
            )
        return replies

    # --- read -------------------------------------------------------------------------------------

    def ticket_view(self, source: str, external_id: str, *, rehydrate: bool = False) -> TicketView:
        """The ticket as stored (redacted). ``rehydrate``: the agent view — drafts with the customer's
        real data put back from the PII vault; each such reveal is an audit event."""
        with transaction(self.database_url) as session:
            rows = ticket_with_results(session, source, external_id)
            if rows is None:
                raise ApiError(404, "not_found", f"no ticket {external_id!r} from source {source!r}")
            messages = [_message_view(row) for row in rows.messages]
            if rehydrate:
                audit = AuditTrail(f"api:{source}")
                for view, row in zip(messages, rows.messages, strict=True):
                    if view.draft is not None and row.draft is not None:
                        view.draft.text = rehydrate_draft(session, rows.ticket.id, row.draft.body)
                        view.draft.rehydrated = True
                        audit.add("pii.revealed", "draft", row.draft.id, data={"view": "api"})
                audit.write(session)
            return TicketView(
                source=source,
                external_id=rows.ticket.external_id,
                channel=str(rows.ticket.channel),
                subject=rows.ticket.subject,
                locale=rows.ticket.locale,
                country=rows.ticket.country,
                messages=messages,
            )

    def decide_draft(self, source: str, draft_id: int, payload: Any) -> DraftDecisionReply:
        """An agent accepted, edited or rejected a proposed draft: the status moves, audited with the
        agent as actor. Only a ``proposed`` draft can be decided; deciding it again is a 409."""
        try:
            decision = DraftDecisionIn.model_validate(payload)
        except ValidationError as exc:
            raise _invalid(field_errors(exc)) from exc
        try:
            with transaction(self.database_url) as session:
                before = drafts.decide(
                    session,
                    draft_id,
                    source=source,
                    status=decision.status,
                    agent=decision.agent,
                    via=f"api:{source}",
                )
        except drafts.DraftNotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from exc
        except drafts.DraftAlreadyDecided as exc:
            raise ApiError(409, "already_decided", str(exc)) from exc
        return DraftDecisionReply(draft_id=draft_id, before=before, after=decision.status)

    # --- vendor hooks -----------------------------------------------------------------------------

    def nudge_poll(self, source: str, vendor: str) -> HookReply:
        """Ask the poller to pull ``source`` now. The hook's payload is never trusted as data: the
        poller reads the ticket from the vendor's API, losslessly, like any scheduled poll."""
        interval_ms = int(self.settings.api_nudge_min_interval_s * 1000)
        try:
            # A burst of hooks (a bulk update in the help desk) makes one poll, not hundreds.
            if interval_ms and not self.redis.set(f"ticketfleet:nudge:{source}", 1, nx=True, px=interval_ms):
                return HookReply(source=source, vendor=vendor, poll="coalesced")
        except redis.RedisError as exc:
            raise _nudge_failed(source, type(exc).__name__) from exc
        sent = broker.send_now([broker.TaskMessage(broker.SOURCE_POLL_TASK, kwargs={"source": source})])
        if not sent.ok:
            raise _nudge_failed(source, (sent.error or "").split(":", 1)[0])
        return HookReply(source=source, vendor=vendor, poll="nudged")

    # --- health -----------------------------------------------------------------------------------

    def health(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            with get_engine(self.database_url).connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # any driver error means "not reachable" here
            checks["database"] = f"unreachable ({type(exc).__name__})"
        try:
            self.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unreachable ({type(exc).__name__})"
        return checks


def _nudge_failed(source: str, cause: str) -> ApiError:
    log.warning("could not nudge a poll of %s: %s", source, cause)
    return ApiError(
        503,
        "broker_unavailable",
        f"could not nudge a poll of {source!r} ({cause}); the scheduled poll will pick the change up",
    )


def _enqueue_warnings(errors: Sequence[LaneUnsent]) -> list[str]:
    return [f"{exc}; the items are stored and will be queued by the reaper" for exc in errors]


def _stored_records(
    session: Session, source: str, records: list[tuple[int, InboundTicket]], new_ids: set[int]
) -> list[StoredRecord]:
    """Per record, the stored ids of its ticket and messages and whether each message is new."""
    external_ids = [ticket.external_id for _, ticket in records]
    rows = session.execute(
        select(Ticket.id, Ticket.external_id, Message.id, Message.external_id)
        .join(Source, Source.id == Ticket.source_id)
        .join(Message, Message.ticket_id == Ticket.id)
        .where(Source.name == source, any_of(Ticket.external_id, external_ids, String()))
    ).all()
    tickets: dict[str, int] = {}
    messages: dict[tuple[str, str], int] = {}
    for ticket_id, ticket_ext, message_id, message_ext in rows:
        tickets[ticket_ext] = ticket_id
        messages[(ticket_ext, message_ext)] = message_id
    stored = []
    for index, ticket in records:
        entries = []
        for message_ext in ticket.message_ids():
            message_id = messages[(ticket.external_id, message_ext)]
            entries.append(
                StoredMessage(external_id=message_ext, message_id=message_id, new=message_id in new_ids)
            )
        stored.append(
            StoredRecord(
                index=index,
                external_id=ticket.external_id,
                ticket_id=tickets[ticket.external_id],
                messages=entries,
            )
        )
    return stored


def _message_view(row: MessageRow) -> MessageView:
    result = draft = None
    if row.result is not None:
        r = row.result
        result = ResultView(
            labels={f: getattr(r, f) for f in TRIAGE_FIELD_NAMES},
            confidences={f: round(float(getattr(r, f"{f}_confidence")), 4) for f in TRIAGE_FIELD_NAMES},
            gates=r.gates,
            needs_review=r.needs_review,
            injection_suspected=r.injection_suspected,
            model_id=r.model_id,
            model_revision=r.model_revision,
            prompt_version=r.prompt_version,
            created_at=r.created_at,
        )
    if row.draft is not None:
        d = row.draft
        draft = DraftView(
            status=str(d.status),
            check_result=d.check_result,
            text=d.body,
            language=d.language,
            created_at=d.created_at,
        )
    return MessageView(
        external_id=row.message.external_id,
        position=row.message.position,
        state=row.state,
        result=result,
        draft=draft,
    )


def _invalid(errors: list[FieldError]) -> ApiError:
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return ApiError(422, "invalid", f"invalid record: {summary}", errors=[e.model_dump() for e in errors])


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _external_id_of(raw: Any) -> str | None:
    value = raw.get("external_id") if isinstance(raw, dict) else None
    return str(value) if value is not None else None
