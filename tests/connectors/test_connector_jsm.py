"""JSM connector against a local fake of Jira Cloud / Service Management: contract plus JSM specifics."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.base import ConfigError, SourceTimeout, WriteBack
from connectors.jsm import JsmConnector, adf_to_text, from_config
from tests.fakes.jsm import FakeJsm
from tests.support.connector_contract import ConnectorContract, pull_all
from tests.support.http_harness import FakeApiHarness, registry_http, serve_harness

FIELD_MAP = {"priority": "customfield_10050", "language": "customfield_10051"}


class JsmHarness(FakeApiHarness[FakeJsm]):
    source_name = "jsm-test"

    def connector(self, *, valid_credentials: bool = True, **options: Any) -> JsmConnector:
        token = self.api.api_token if valid_credentials else "revoked"
        http = self.retrying_http(auth=(self.api.email, token))
        settings: dict[str, Any] = {
            "project": "SUP",
            "max_results": self.page_size,
            "comment_page_size": 2,
            "field_map": FIELD_MAP,
        } | options
        return JsmConnector("jsm-test", http, **settings)

    def create_ticket(self, *, subject: str, text: str, requester_email: str | None = None) -> str:
        return self.api.add_issue(subject, text, email=requester_email)

    def add_customer_message(self, external_id: str, text: str) -> None:
        self.api.add_comment(external_id, text, public=True, author=self.api.reporter(external_id))

    def notes(self, external_id: str) -> list[str]:
        return [c["body"] for c in self.api.comments[external_id] if not c["public"]]

    def public_replies(self, external_id: str) -> list[str]:
        reporter = self.api.reporter(external_id)["accountId"]
        return [
            c["body"]
            for c in self.api.comments[external_id]
            if c["public"] and c["author"]["accountId"] != reporter
        ]

    def labels(self, external_id: str) -> set[str]:
        fields = self.api.issues[external_id]["fields"]
        names = {v: k for k, v in FIELD_MAP.items()}
        values = {f"{names[k]}={fields[k]}" for k in self.api.custom_fields if k in fields}
        return set(fields["labels"]) | values


@pytest.fixture
def harness() -> Iterator[JsmHarness]:
    yield from serve_harness(JsmHarness, FakeJsm())


class TestJsmContract(ConnectorContract):
    pass


# --- JSM specifics ------------------------------------------------------------------------------


def _write_back(ext: str, **changes: Any) -> WriteBack:
    values: dict[str, Any] = {
        "ticket_external_id": ext,
        "tags": ["tf-lang-en", "tf-sentiment-very_negative"],
        "fields": {"priority": "urgent", "intent": "refund"},
        "note": "Draft: we have issued the refund.",
        "idempotency_key": uuid.uuid4().hex,
    }
    return WriteBack(**(values | changes))


def _searches(api: FakeJsm) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in api.requests if r.path == "/rest/api/3/search/jql"]


def test_jql_uses_minutes_in_the_users_time_zone(harness: JsmHarness) -> None:
    harness.create_ticket(subject="Shape", text="hello")
    connector = harness.connector(jql_filter='"Request Type" = "Get IT help"')
    _, cursor = pull_all(connector)
    first = _searches(harness.api)[0]
    assert first["jql"] == (
        'project = SUP AND ("Request Type" = "Get IT help") '
        'AND updated >= "1999/12/31 19:00" ORDER BY updated ASC'
    ), "2000-01-01T00:00Z is 19:00 the day before in New York"
    assert first["maxResults"] == 3 and "updated" in first["fields"] and "nextPageToken" not in first
    harness.create_ticket(subject="Next", text="again")
    pull_all(connector, cursor)
    # the issue was updated 2026-01-05 09:00:01 UTC = 04:00 New York; one minute of overlap
    assert 'updated >= "2026/01/05 03:59"' in _searches(harness.api)[-1]["jql"]


def test_same_minute_updates_are_not_lost_nor_repeated(harness: JsmHarness) -> None:
    first = harness.create_ticket(subject="A", text="first")
    connector = harness.connector()
    pages, cursor = pull_all(connector)
    assert [t.external_id for p in pages for t in p.items] == [first]
    second = harness.create_ticket(subject="B", text="one second later, same minute")
    pages, cursor = pull_all(connector, cursor)
    assert [t.external_id for p in pages for t in p.items] == [second]
    pages, _ = pull_all(connector, cursor)
    assert [t for p in pages for t in p.items] == [], "the overlapped minute is re-read, not re-emitted"


def test_whole_page_of_ties_follows_next_page_token(harness: JsmHarness) -> None:
    harness.api.clock.step = timedelta(0)
    created = [harness.create_ticket(subject=f"Tie {i}", text=f"tie {i}") for i in range(8)]
    pages, _ = pull_all(harness.connector())
    assert sorted(t.external_id for p in pages for t in p.items) == sorted(created)
    assert any("nextPageToken" in body for body in _searches(harness.api))


def test_expired_page_token_restarts_the_window(harness: JsmHarness) -> None:
    ext = harness.create_ticket(subject="Token", text="token test")
    stale = json.dumps({"since": None, "seen": {}, "bound": "2000-01-01T00:00:00Z", "token": "expired"})
    pages, _ = pull_all(harness.connector(), stale)
    assert ext in [t.external_id for p in pages for t in p.items]


def test_thread_from_adf_description_and_request_comments(harness: JsmHarness) -> None:
    api = harness.api
    ext = api.add_issue("VPN", "VPN drops\nevery hour", email="kim@example.com")
    api.add_comment(ext, "Which client version?", public=True, author=api.agent)
    api.add_comment(ext, "Customer is on legacy plan", public=False, author=api.agent)
    api.add_comment(ext, "Version 5.2", public=True, author=api.reporter(ext))
    pages, _ = pull_all(harness.connector())
    ticket = next(t for p in pages for t in p.items if t.external_id == ext)
    assert [(m.role, m.text) for m in ticket.messages] == [
        ("customer", "VPN drops\nevery hour"),
        ("agent", "Which client version?"),
        ("customer", "Version 5.2"),
    ]
    assert ticket.requester is not None and ticket.requester.email == "kim@example.com"


def test_push_labels_fields_and_internal_comment_shapes(harness: JsmHarness) -> None:
    ext = harness.create_ticket(subject="Refund", text="refund please")
    write_back = _write_back(ext)
    receipt = harness.connector().push(write_back)
    edit = next(json.loads(r.body) for r in harness.api.requests if r.method == "PUT")
    assert edit == {
        "update": {"labels": [{"add": "tf-lang-en"}, {"add": "tf-sentiment-very_negative"}]},
        "fields": {"customfield_10050": "urgent"},
    }
    post = next(
        json.loads(r.body) for r in harness.api.requests if r.method == "POST" and "comment" in r.path
    )
    assert post == {"body": f"{write_back.note}\n\n{write_back.marker}", "public": False}
    assert receipt.fields_applied == {"priority": "urgent"}


def test_comment_posted_but_answer_timed_out_is_not_posted_again(harness: JsmHarness) -> None:
    ext = harness.create_ticket(subject="Slow", text="slow")
    write_back = _write_back(ext)
    connector = harness.connector()
    harness.api.slow_comments = 1
    with pytest.raises(SourceTimeout):
        connector.push(write_back)
    assert connector.push(write_back).deduplicated is True
    assert sum(write_back.marker in n for n in harness.notes(ext)) == 1


def test_adf_to_text_handles_marks_breaks_and_lists() -> None:
    doc = {
        "type": "doc",
        "content": [
            {
                "type": "paragraph",
                "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "team"}],
            },
            {
                "type": "bulletList",
                "content": [
                    {
                        "type": "listItem",
                        "content": [{"type": "paragraph", "content": [{"type": "text", "text": "a"}]}],
                    },
                    {
                        "type": "listItem",
                        "content": [{"type": "paragraph", "content": [{"type": "text", "text": "b"}]}],
                    },
                ],
            },
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "x"},
                    {"type": "hardBreak"},
                    {"type": "text", "text": "y"},
                ],
            },
        ],
    }
    assert adf_to_text(doc) == "Hi team\na\nb\nx\ny"
    assert adf_to_text("  plain v2 text ") == "plain v2 text"


def test_from_config_requires_email_token_and_project(harness: JsmHarness) -> None:
    http = registry_http(harness.base_url)
    good = {"project": "SUP", "email": harness.api.email}
    connector = from_config("jsm", good, {"api_token": SecretStr(harness.api.api_token)}, http)
    assert "America/New_York" in connector.check()
    connector.close()
    assert http.client.is_closed, "the registry's client is the connector's to close"
    injected = harness.connector()
    injected.close()
    assert not injected.http.client.is_closed, "a client injected into the constructor stays the caller's"
    with pytest.raises(ConfigError, match="api_token_env"):
        from_config("jsm", good, {}, registry_http(harness.base_url))
    with pytest.raises(ConfigError, match="email"):
        from_config("jsm", {"project": "SUP"}, {"api_token": SecretStr("t")}, registry_http(harness.base_url))
    with pytest.raises(ConfigError, match="project"):
        from_config("jsm", {"project": "not a key"}, {}, None)
    with pytest.raises(ConfigError, match="time zone"):
        from_config("jsm", {"project": "SUP", "timezone": "Mars/Olympus"}, {}, None)
