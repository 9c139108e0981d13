"""Freshdesk connector against a local fake of the v2 API: the shared contract plus Freshdesk specifics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.base import ConfigError, PermanentError, SourceTimeout, WriteBack
from connectors.freshdesk import FreshdeskConnector, from_config
from tests.fakes.freshdesk import FakeFreshdesk
from tests.support.connector_contract import ConnectorContract, pull_all
from tests.support.http_harness import FakeApiHarness, registry_http, serve_harness

FIELD_MAP = {"priority": "cf_tf_priority", "language": "cf_tf_language"}


class FreshdeskHarness(FakeApiHarness[FakeFreshdesk]):
    source_name = "fd-test"

    def connector(self, *, valid_credentials: bool = True, **options: Any) -> FreshdeskConnector:
        key = self.api.api_key if valid_credentials else "not-the-key"
        http = self.retrying_http(auth=(key, "X"))
        settings: dict[str, Any] = {"per_page": self.page_size, "field_map": FIELD_MAP} | options
        return FreshdeskConnector("fd-test", http, **settings)

    def create_ticket(self, *, subject: str, text: str, requester_email: str | None = None) -> str:
        return str(self.api.add_ticket(subject, text, email=requester_email))

    def add_customer_message(self, external_id: str, text: str) -> None:
        ticket = self.api.tickets[int(external_id)]
        self.api.add_conversation(
            int(external_id), text, incoming=True, private=False, user_id=ticket["requester_id"]
        )

    def notes(self, external_id: str) -> list[str]:
        return [c["body_text"] for c in self.api.conversations[int(external_id)] if c["private"]]

    def public_replies(self, external_id: str) -> list[str]:
        return [
            c["body_text"]
            for c in self.api.conversations[int(external_id)]
            if not c["private"] and not c["incoming"]
        ]

    def labels(self, external_id: str) -> set[str]:
        ticket = self.api.tickets[int(external_id)]
        fields = {
            f"{k.removeprefix('cf_tf_')}={v}" for k, v in ticket["custom_fields"].items() if v is not None
        }
        return set(ticket["tags"]) | fields


@pytest.fixture
def api() -> FakeFreshdesk:
    return FakeFreshdesk()


@pytest.fixture
def harness(api: FakeFreshdesk) -> Iterator[FreshdeskHarness]:
    yield from serve_harness(FreshdeskHarness, api)


class TestFreshdeskContract(ConnectorContract):
    pass


# --- Freshdesk specifics ------------------------------------------------------------------------


def _write_back(ext: str, **changes: Any) -> WriteBack:
    values: dict[str, Any] = {
        "ticket_external_id": ext,
        "tags": ["tf-lang-de", "tf-intent-refund"],
        "fields": {"priority": "high", "language": "de", "sentiment": "negative"},
        "note": "Entwurf: wir erstatten den Betrag.",
        "idempotency_key": uuid.uuid4().hex,
    }
    return WriteBack(**(values | changes))


def test_list_request_follows_the_documented_shape(harness: FreshdeskHarness) -> None:
    harness.create_ticket(subject="Shape", text="hello")
    harness.connector().pull(None)
    listing = next(r for r in harness.api.requests if r.path == "/api/v2/tickets")
    assert listing.arg("order_by") == "updated_at"
    assert listing.arg("order_type") == "asc"
    assert listing.arg("include") == "requester"
    assert listing.arg("per_page") == "3"
    assert listing.arg("updated_since") == "1970-01-01T00:00:00Z"


def test_tickets_sharing_one_second_are_neither_skipped_nor_looped(harness: FreshdeskHarness) -> None:
    harness.api.clock.step = timedelta(0)  # every ticket gets the same updated_at
    created = [harness.create_ticket(subject=f"Tie {i}", text=f"tie {i}") for i in range(8)]
    pages, cursor = pull_all(harness.connector())
    emitted = [item.external_id for page in pages for item in page.items]
    assert sorted(emitted) == sorted(created), "every tied ticket exactly once"
    again, _ = pull_all(harness.connector(), cursor)
    assert [i for p in again for i in p.items] == [], "nothing changed: nothing re-emitted"


def test_cursor_restarts_from_newer_updated_since_instead_of_paging_on(harness: FreshdeskHarness) -> None:
    for i in range(7):
        harness.create_ticket(subject=f"T{i}", text=f"ticket {i}")
    pull_all(harness.connector())
    pages = [r.arg("page") for r in harness.api.requests if r.path == "/api/v2/tickets"]
    assert set(pages) == {"1"}, f"distinct timestamps need no page numbers, asked for {pages}"


def test_more_ties_than_the_page_cap_is_a_clear_error(api: FakeFreshdesk) -> None:
    api.max_page = 2
    api.clock.step = timedelta(0)
    with api.running() as base_url:
        harness = FreshdeskHarness(api, base_url)
        for i in range(7):
            harness.create_ticket(subject=f"Tie {i}", text=f"tie {i}")
        with pytest.raises(PermanentError, match="share updated_at"):
            pull_all(harness.connector(max_page=2))
        harness.close()


def test_thread_roles_channel_requester_and_html(harness: FreshdeskHarness) -> None:
    api = harness.api
    chat = api.add_ticket("Chat", "hi, can you help?", email="lea@example.com", source=7)
    api.tickets[chat]["description_text"] = None
    api.tickets[chat]["description"] = "<p>Hello&nbsp;there</p><p>second <b>line</b></p><script>x()</script>"
    agent = 9001
    api.add_conversation(chat, "Sure, looking into it.", incoming=False, private=False, user_id=agent)
    api.add_conversation(chat, "internal: customer is VIP", incoming=False, private=True, user_id=agent)
    api.add_conversation(
        chat, "thanks!", incoming=True, private=False, user_id=api.tickets[chat]["requester_id"]
    )
    portal = api.add_ticket("Portal", "form text", source=2)
    pages, _ = pull_all(harness.connector())
    tickets = {t.external_id: t for p in pages for t in p.items}
    ticket = tickets[str(chat)]
    assert ticket.channel == "chat" and tickets[str(portal)].channel == "ticket"
    assert ticket.requester is not None and ticket.requester.email == "lea@example.com"
    assert [m.role for m in ticket.messages] == ["customer", "agent", "customer"]
    assert ticket.messages[0].text == "Hello there\n\nsecond line"
    assert not any("VIP" in m.text for m in ticket.messages), "private notes never enter the thread"


def test_ticket_without_customer_text_is_rejected_not_fatal(harness: FreshdeskHarness) -> None:
    outbound = harness.api.add_ticket("Outbound", "Agent wrote first", source=10)
    good = harness.create_ticket(subject="Good", text="customer words")
    pages, _ = pull_all(harness.connector())
    assert good in [t.external_id for p in pages for t in p.items]
    reasons = dict(r for p in pages for r in p.rejected)
    assert "customer" in reasons[str(outbound)]


def test_push_maps_fields_and_keeps_agent_tags(harness: FreshdeskHarness) -> None:
    ext = harness.create_ticket(subject="Refund", text="Geld zurück bitte")
    harness.api.tickets[int(ext)]["tags"] = ["vip"]
    write_back = _write_back(ext)
    receipt = harness.connector().push(write_back)
    ticket = harness.api.tickets[int(ext)]
    assert set(ticket["tags"]) == {"vip", "tf-lang-de", "tf-intent-refund"}
    assert ticket["custom_fields"]["cf_tf_priority"] == "high"
    assert ticket["custom_fields"]["cf_tf_language"] == "de"
    assert receipt.fields_applied == {"priority": "high", "language": "de"}, "unmapped sentiment not applied"
    note = harness.api.conversations[int(ext)][-1]
    assert note["private"] is True and note["incoming"] is False
    assert note["body_text"] == f"{write_back.note}\n\n{write_back.marker}"


def test_note_posted_but_answer_timed_out_is_not_posted_again(harness: FreshdeskHarness) -> None:
    ext = harness.create_ticket(subject="Slow", text="where is it")
    write_back = _write_back(ext)
    connector = harness.connector()
    harness.api.slow_notes = 1
    with pytest.raises(SourceTimeout):
        connector.push(write_back)
    posts = [r for r in harness.api.requests if r.method == "POST"]
    assert len(posts) == 1, "a note POST is never retried blindly"
    receipt = connector.push(write_back)
    assert receipt.deduplicated is True
    assert sum(write_back.marker in n for n in harness.notes(ext)) == 1


def test_rate_limit_headers_are_exposed_and_the_reserve_honoured(harness: FreshdeskHarness) -> None:
    harness.create_ticket(subject="Budget", text="hello")
    harness.api.rate_remaining = 6
    connector = harness.connector(reserve_requests=4, reserve_pause_seconds=42)
    description = connector.check()
    assert connector.rate_limit is not None
    assert (connector.rate_limit.total, connector.rate_limit.remaining) == (200, 5)
    assert "5 of 200" in description
    pull_all(connector)  # list (4 left) + conversations: the reserve is reached, the next call waits
    assert 42 in harness.sleeps


def test_from_config_puts_the_key_on_the_registry_client(harness: FreshdeskHarness) -> None:
    http = registry_http(harness.base_url)
    connector = from_config("fd", {"per_page": 50}, {"api_key": SecretStr(harness.api.api_key)}, http)
    assert "bot@acme.test" in connector.check()
    connector.close()
    assert http.client.is_closed, "the registry's client is the connector's to close"
    injected = harness.connector()
    injected.close()
    assert not injected.http.client.is_closed, "a client injected into the constructor stays the caller's"
    with pytest.raises(ConfigError, match="api_key_env"):
        from_config("fd", {}, {}, registry_http(harness.base_url))
    with pytest.raises(ConfigError, match="base_url"):
        from_config("fd", {}, {"api_key": SecretStr("k")}, None)
    with pytest.raises(ConfigError, match="per_page"):
        from_config("fd", {"per_page": 500}, {"api_key": SecretStr("k")}, None)


def test_corrupt_cursor_is_a_config_error(harness: FreshdeskHarness) -> None:
    with pytest.raises(ConfigError, match="cursor"):
        harness.connector().pull("not json")


def test_odd_timestamps_and_requester_never_cost_the_ticket(harness: FreshdeskHarness) -> None:
    api = harness.api
    tid = api.add_ticket("Odd", "odd fields", email="odd@example.com")
    api.contacts[api.tickets[tid]["requester_id"]]["name"] = "N" * 500
    api.contacts[api.tickets[tid]["requester_id"]]["email"] = "not-an-address"
    conv = api.add_conversation(tid, "follow-up", incoming=True, private=False, user_id=0)
    conv["created_at"] = "Today 10:22 AM"
    pages, _ = pull_all(harness.connector())
    ticket = next(t for p in pages for t in p.items if t.external_id == str(tid))
    assert ticket.requester is not None and ticket.requester.name == "N" * 200
    assert ticket.requester.email is None
    assert ticket.messages[-1].text == "follow-up" and ticket.messages[-1].created_at is None
