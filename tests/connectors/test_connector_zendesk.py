"""Zendesk connector: the shared contract against the local fake, plus Zendesk's own rules."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from connectors.base import WriteBack
from connectors.http import RequestBudget, SourceHttp
from connectors.zendesk import ZendeskConnector
from tests.fakes.zendesk import FakeZendesk
from tests.support.connector_contract import ConnectorContract, pull_all
from tests.support.http_harness import FakeApiHarness


class ZendeskHarness(FakeApiHarness[FakeZendesk]):
    source_name = "zd"

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.api.advance(seconds)  # the fake's clock moves as if we had waited

    def connector(self, *, valid_credentials: bool = True) -> ZendeskConnector:
        token = self.api.token if valid_credentials else "wrong"
        client = self.open_client(auth=(f"{self.api.email}/token", token), timeout=httpx.Timeout(0.4))
        http = SourceHttp(client, source=self.source_name, sleep=self.sleep, budget=RequestBudget(None))
        return ZendeskConnector(
            "zd", http, email=self.api.email, page_size=self.page_size, clock=self.api.now
        )

    def create_ticket(self, *, subject: str, text: str, requester_email: str | None = None) -> str:
        ticket_id = self.api.create_ticket(subject=subject, text=text, requester_email=requester_email)
        self.api.advance(61)  # out of the export's excluded newest minute
        return str(ticket_id)

    def add_customer_message(self, external_id: str, text: str) -> None:
        self.api.add_comment(int(external_id), text)
        self.api.advance(61)

    def notes(self, external_id: str) -> list[str]:
        return [c["body"] for c in self.api.comments[int(external_id)] if not c["public"]]

    def public_replies(self, external_id: str) -> list[str]:
        requester = self.api.tickets[int(external_id)]["requester_id"]
        return [
            c["body"]
            for c in self.api.comments[int(external_id)]
            if c["public"] and c["author_id"] != requester
        ]

    def labels(self, external_id: str) -> set[str]:
        ticket = self.api.tickets[int(external_id)]
        return set(ticket["tags"]) | {f"{f['id']}={f['value']}" for f in ticket["custom_fields"]}


@pytest.fixture
def harness(zendesk: tuple[FakeZendesk, str]) -> Iterator[ZendeskHarness]:
    h = ZendeskHarness(*zendesk)
    yield h
    h.close()


class TestZendeskContract(ConnectorContract):
    pass


def test_the_newest_minute_is_left_for_the_next_poll(harness: ZendeskHarness) -> None:
    connector = harness.connector()
    _, cursor = pull_all(connector)
    fresh = harness.api.create_ticket(subject="Just now", text="arrived seconds ago")
    pages, cursor = pull_all(connector, cursor)
    assert str(fresh) not in [i.external_id for p in pages for i in p.items]
    harness.api.advance(61)
    pages, _ = pull_all(connector, cursor)
    assert str(fresh) in [i.external_id for p in pages for i in p.items]


def test_export_budget_keeps_within_ten_requests_a_minute(harness: ZendeskHarness) -> None:
    for i in range(12):
        harness.api.create_ticket(subject=f"t{i}", text=f"ticket {i}")
    harness.api.advance(61)
    connector = harness.connector()
    connector.page_size = 1
    pages, _ = pull_all(connector)
    assert len(pages) == 12
    export_calls = [r for r in harness.api.requests if r.path.endswith("/cursor.json")]
    # Exactly one call per page: the budget waited instead of running into the fake's 429.
    assert len(export_calls) == 12
    assert sum(harness.sleeps) >= 59, "the 11th call waits until the first is a minute old"


def test_comments_are_paged_private_notes_left_out_and_roles_mapped(harness: ZendeskHarness) -> None:
    ticket_id = harness.api.create_ticket(subject="Long", text="first", requester_email="c@example.com")
    for i in range(120):
        harness.api.add_comment(ticket_id, f"customer {i}")
    harness.api.add_comment(ticket_id, "agent answer", from_requester=False)
    harness.api.add_comment(ticket_id, "internal only", from_requester=False, public=False)
    harness.api.advance(61)
    pages, _ = pull_all(harness.connector())
    ticket = next(i for p in pages for i in p.items if i.external_id == str(ticket_id))
    assert len(ticket.messages) == 122
    assert ticket.messages[-1].role == "agent" and ticket.messages[-1].text == "agent answer"
    assert ticket.requester is not None and ticket.requester.email == "c@example.com"
    comment_calls = [
        r for r in harness.api.requests if r.path == f"/api/v2/tickets/{ticket_id}/comments.json"
    ]
    assert len(comment_calls) == 2, "123 comments at 100 a page"


def test_agent_only_ticket_is_rejected_not_fatal(harness: ZendeskHarness) -> None:
    good = harness.create_ticket(subject="ok", text="customer text")
    bad = harness.api.create_ticket(subject="odd", text="x")
    harness.api.comments[bad][0]["author_id"] = 1  # only an agent ever wrote on it
    harness.api.advance(61)
    pages, _ = pull_all(harness.connector())
    assert good in [i.external_id for p in pages for i in p.items]
    assert [ref for p in pages for ref, _ in p.rejected] == [str(bad)]


def test_custom_fields_are_mapped_and_the_note_is_private(harness: ZendeskHarness) -> None:
    ext = harness.create_ticket(subject="Refund", text="I want my money back")
    connector = harness.connector()
    connector.custom_fields = {"priority": 360001, "language": 360002}
    receipt = connector.push(
        WriteBack(
            ticket_external_id=ext,
            tags=["tf-priority-high"],
            fields={"priority": "high", "language": "en", "intent": "refund"},
            note="Draft: refund on its way",
            idempotency_key=uuid.uuid4().hex,
        )
    )
    assert harness.labels(ext) >= {"tf-priority-high", "360001=high", "360002=en"}
    assert receipt.fields_applied == {"priority": "high", "language": "en"}
    put = next(r for r in harness.api.requests if r.method == "PUT")
    assert put.json()["ticket"]["comment"]["public"] is False
    assert receipt.note_id is not None
