"""Zammad connector against a local fake of its REST API: the shared contract plus Zammad specifics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.base import ConfigError, WriteBack
from connectors.html_text import html_to_text
from connectors.zammad import ZammadConnector, from_config
from tests.fakes.zammad import FakeZammad
from tests.support.connector_contract import ConnectorContract, pull_all
from tests.support.http_harness import FakeApiHarness, registry_http, serve_harness

FIELD_MAP = {"priority": "tf_priority", "language": "tf_language"}


class ZammadHarness(FakeApiHarness[FakeZammad]):
    source_name = "zm-test"

    def connector(self, *, valid_credentials: bool = True, **options: Any) -> ZammadConnector:
        token = self.api.token if valid_credentials else "wrong"
        http = self.retrying_http(headers={"Authorization": f"Token token={token}"})
        settings: dict[str, Any] = {"per_page": self.page_size, "field_map": FIELD_MAP} | options
        return ZammadConnector("zm-test", http, **settings)

    def create_ticket(self, *, subject: str, text: str, requester_email: str | None = None) -> str:
        return str(self.api.add_ticket(subject, text, customer=requester_email))

    def add_customer_message(self, external_id: str, text: str) -> None:
        self.api.add_article(int(external_id), text, sender="Customer")

    def notes(self, external_id: str) -> list[str]:
        tid = int(external_id)
        bodies = [html_to_text(a["body"]) for a in self.api.articles[tid] if a["internal"]]
        draft = self.api.shared_drafts.get(tid)
        if draft is not None:
            bodies.append(html_to_text(draft["new_article"].get("body") or ""))
        return bodies

    def public_replies(self, external_id: str) -> list[str]:
        return [
            html_to_text(a["body"])
            for a in self.api.articles[int(external_id)]
            if not a["internal"] and a["sender"] != "Customer"
        ]

    def labels(self, external_id: str) -> set[str]:
        ticket = self.api.tickets[int(external_id)]
        fields = {f"{k.removeprefix('tf_')}={ticket[k]}" for k in self.api.attributes if k in ticket}
        return set(self.api.tags[int(external_id)]) | fields


@pytest.fixture
def harness() -> Iterator[ZammadHarness]:
    yield from serve_harness(ZammadHarness, FakeZammad())


class TestZammadContract(ConnectorContract):
    pass


# --- Zammad specifics ---------------------------------------------------------------------------


def _write_back(ext: str, **changes: Any) -> WriteBack:
    values: dict[str, Any] = {
        "ticket_external_id": ext,
        "tags": ["tf-lang-fr", "tf-priority-high"],
        "fields": {"priority": "high", "sentiment": "negative"},
        "note": "Brouillon : nous renvoyons le colis.",
        "idempotency_key": uuid.uuid4().hex,
    }
    return WriteBack(**(values | changes))


def test_search_request_follows_the_documented_shape(harness: ZammadHarness) -> None:
    harness.create_ticket(subject="Shape", text="hello")
    harness.connector(query='group.name:"Users"').pull(None)
    search = next(r for r in harness.api.requests if r.path == "/api/v1/tickets/search")
    assert search.arg("query") == r'updated_at:>=1970\-01\-01T00\:00\:00.000Z AND (group.name:"Users")'
    assert (search.arg("sort_by"), search.arg("order_by"), search.arg("expand")) == (
        "updated_at",
        "asc",
        "true",
    )
    assert (search.arg("page"), search.arg("per_page")) == ("1", "3")


def test_late_indexed_ticket_is_caught_by_the_overlap(harness: ZammadHarness) -> None:
    late = harness.create_ticket(subject="Late", text="indexed late")
    harness.api.unindexed.add(int(late))
    on_time = harness.create_ticket(subject="On time", text="indexed at once")
    connector = harness.connector()
    pages, cursor = pull_all(connector)
    assert [t.external_id for p in pages for t in p.items] == [on_time]
    harness.api.unindexed.clear()  # Elasticsearch caught up
    pages, _ = pull_all(connector, cursor)
    assert [t.external_id for p in pages for t in p.items] == [late], "late one pulled, on-time one not again"


def test_tied_updated_at_neither_skipped_nor_looped(harness: ZammadHarness) -> None:
    harness.api.clock.step = timedelta(0)
    created = [harness.create_ticket(subject=f"Tie {i}", text=f"tie {i}") for i in range(8)]
    pages, cursor = pull_all(harness.connector(overlap_seconds=0))
    assert sorted(t.external_id for p in pages for t in p.items) == sorted(created)
    again, _ = pull_all(harness.connector(overlap_seconds=0), cursor)
    assert [t for p in again for t in p.items] == []


def test_articles_map_to_roles_and_text(harness: ZammadHarness) -> None:
    api = harness.api
    tid = api.add_ticket("Chat", "<p>Bonjour,&nbsp;mon colis?</p>", customer="zoe@example.com", kind="chat")
    api.add_article(tid, "Hello, checking", sender="Agent", kind="chat")
    api.add_article(tid, "VIP customer", sender="Agent", kind="note", internal=True)
    api.add_article(tid, "Ticket escalated", sender="System", kind="note")
    api.add_article(tid, "plain follow-up", sender="Customer", kind="chat", content_type="text/plain")
    pages, _ = pull_all(harness.connector())
    ticket = next(t for p in pages for t in p.items if t.external_id == str(tid))
    assert ticket.channel == "chat"
    assert ticket.requester is not None and ticket.requester.email == "zoe@example.com"
    assert [(m.role, m.text) for m in ticket.messages] == [
        ("customer", "Bonjour, mon colis?"),
        ("agent", "Hello, checking"),
        ("customer", "plain follow-up"),
    ]


def test_draft_goes_to_the_shared_draft_as_internal_note(harness: ZammadHarness) -> None:
    ext = harness.create_ticket(subject="Colis", text="où est mon colis")
    receipt = harness.connector().push(_write_back(ext))
    draft = harness.api.shared_drafts[int(ext)]["new_article"]
    assert (draft["type"], draft["internal"], draft["content_type"]) == ("note", True, "text/html")
    assert receipt.note_id == f"shared_draft:{harness.api.shared_drafts[int(ext)]['id']}"
    assert not any(a["internal"] for a in harness.api.articles[int(ext)]), (
        "no article when the draft is shared"
    )
    assert harness.api.tickets[int(ext)]["tf_priority"] == "high"
    assert receipt.fields_applied == {"priority": "high"}


def test_agents_own_shared_draft_is_never_overwritten(harness: ZammadHarness) -> None:
    ext = harness.create_ticket(subject="Colis", text="où est mon colis")
    harness.api.shared_drafts[int(ext)] = {
        "id": 77,
        "ticket_id": int(ext),
        "new_article": {"body": "agent WIP"},
    }
    write_back = _write_back(ext)
    connector = harness.connector()
    connector.push(write_back)
    assert harness.api.shared_drafts[int(ext)]["new_article"]["body"] == "agent WIP"
    internal = [a for a in harness.api.articles[int(ext)] if a["internal"]]
    assert len(internal) == 1 and write_back.marker in internal[0]["body"]
    assert connector.push(write_back).deduplicated is True
    assert len([a for a in harness.api.articles[int(ext)] if a["internal"]]) == 1


def test_shared_drafts_switched_off_falls_back_to_internal_article(harness: ZammadHarness) -> None:
    harness.api.shared_drafts_enabled = False
    ext = harness.create_ticket(subject="Colis", text="où est mon colis")
    write_back = _write_back(ext)
    connector = harness.connector()
    first = connector.push(write_back)
    second = connector.push(write_back)
    internal = [a for a in harness.api.articles[int(ext)] if a["internal"]]
    assert len(internal) == 1 and internal[0]["type"] == "note"
    assert (first.deduplicated, second.deduplicated) == (False, True)
    assert second.note_id == str(internal[0]["id"])


def test_draft_mode_internal_note_uses_an_article(harness: ZammadHarness) -> None:
    ext = harness.create_ticket(subject="Colis", text="où est mon colis")
    harness.connector(draft_mode="internal_note").push(_write_back(ext))
    assert int(ext) not in harness.api.shared_drafts
    assert [a["type"] for a in harness.api.articles[int(ext)] if a["internal"]] == ["note"]


def test_tags_are_added_once_with_the_documented_body(harness: ZammadHarness) -> None:
    ext = harness.create_ticket(subject="Tags", text="hello")
    harness.api.tags[int(ext)] = ["tf-lang-fr"]
    harness.connector().push(_write_back(ext, note=None))
    adds = [r.json() for r in harness.api.requests if r.path == "/api/v1/tags/add"]
    assert adds == [{"object": "Ticket", "o_id": int(ext), "item": "tf-priority-high"}]
    assert harness.api.tags[int(ext)] == ["tf-lang-fr", "tf-priority-high"]


def test_from_config_puts_the_token_on_the_registry_client(harness: ZammadHarness) -> None:
    http = registry_http(harness.base_url)
    connector = from_config("zm", {}, {"token": SecretStr(harness.api.token)}, http)
    assert "triage-bot@example.com" in connector.check()
    connector.close()
    assert http.client.is_closed, "the registry's client is the connector's to close"
    injected = harness.connector()
    injected.close()
    assert not injected.http.client.is_closed, "a client injected into the constructor stays the caller's"
    with pytest.raises(ConfigError, match="token_env"):
        from_config("zm", {}, {}, registry_http(harness.base_url))
    with pytest.raises(ConfigError, match="base_url"):
        from_config("zm", {}, {"token": SecretStr("t")}, None)
    with pytest.raises(ConfigError, match="draft_mode"):
        from_config("zm", {"draft_mode": "public"}, {}, None)
