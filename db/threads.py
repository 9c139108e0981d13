"""Reading claimed items back as engine inputs: the message, its thread up to it, its ticket."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from db.models import Message, Ticket
from db.work import ClaimedItem
from ticketfleet.core.schemas import EngineInput, ThreadMessage


def load_inputs(session: Session, items: Sequence[ClaimedItem]) -> dict[int, EngineInput]:
    """Engine input per work-item id. Items whose message vanished are simply absent."""
    if not items:
        return {}
    target = aliased(Message)
    rows = session.execute(
        select(target.id, Message.author_role, Message.body, Ticket)
        .join(Message, Message.ticket_id == target.ticket_id)
        .join(Ticket, Ticket.id == target.ticket_id)
        .where(target.id.in_([i.message_id for i in items]), Message.position <= target.position)
        .order_by(target.id, Message.position)
    ).all()
    threads: dict[int, list[ThreadMessage]] = {}
    tickets: dict[int, Ticket] = {}
    for message_id, role, body, ticket in rows:
        threads.setdefault(message_id, []).append(ThreadMessage(role=role, text=body))
        tickets[message_id] = ticket
    inputs: dict[int, EngineInput] = {}
    for item in items:
        thread = threads.get(item.message_id)
        if not thread:
            continue
        ticket = tickets[item.message_id]
        inputs[item.id] = EngineInput(
            item_id=item.id,
            channel=ticket.channel,
            subject=ticket.subject,
            thread=thread,
            want_draft=item.want_draft,
            locale_hint=ticket.locale,
        )
    return inputs
