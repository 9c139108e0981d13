"""The RT connector against a real Request Tracker 5 (see tests/support/rt_server.py): the shared contract,
then what is particular to RT — history roles, comments kept out of the thread, MIME/charset/HTML
content, the second-granularity cursor, custom-field labels and the marker that deduplicates notes."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from connectors.base import AuthError, ConfigError, WriteBack
from connectors.http import SourceHttp
from connectors.rt import SETTLE_SECONDS, RtConnector, from_config
from tests.support.connector_contract import ConnectorContract, pull_all
from tests.support.rt_harness import RtHarness
from tests.support.rt_server import (  # noqa: F401
    BOT_PASSWORD,
    BOT_USER,
    CUSTOM_FIELDS,
    NO_CF_USER,
    ROOT_PASSWORD,
    RtServer,
    rt_server,
)
from ticketfleet.core.inbound import InboundTicket


@pytest.fixture
def harness(rt_server: RtServer) -> Iterator[RtHarness]:  # noqa: F811
    harness = RtHarness(rt_server)
    yield harness
    harness.close()


class TestRtContract(ConnectorContract):
    pass


def _unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


def _pulled(connector: RtConnector, cursor: str | None = None) -> dict[str, InboundTicket]:
    pages, _ = pull_all(connector, cursor)
    return {item.external_id: item for page in pages for item in page.items}


def _write_back(ticket_id: str, **overrides: object) -> WriteBack:
    values: dict[str, object] = {
        "ticket_external_id": ticket_id,
        "tags": ["tf-lang-de", "tf-intent-refund", "tf-sentiment-negative"],
        "fields": {"priority": "high"},
        # Non-ASCII on purpose: RT mangles a raw text/plain body (see RtConnector._comment).
        "note": _unique("Entwurf: Die Erstattung für Sie ist unterwegs — 返金 ✓"),
        "idempotency_key": uuid.uuid4().hex,
    }
    values.update(overrides)
    return WriteBack.model_validate(values)


# --- history → thread ------------------------------------------------------------------------------


def test_history_gives_customer_and_agent_messages_and_leaves_comments_out(harness: RtHarness) -> None:
    question = _unique("My invoice is wrong")
    ticket_id = harness.create_ticket(subject="Invoice", text=question, requester_email="lea@example.com")
    reply = _unique("Sorry about that, which invoice number?")
    harness.agent_reply(ticket_id, reply)
    internal = _unique("internal: customer is on the legacy plan")
    harness.agent_comment(ticket_id, internal)
    follow_up = _unique("It is invoice 2024-117")
    harness.add_customer_message(ticket_id, follow_up)

    ticket = _pulled(harness.connector())[ticket_id]

    thread = [(m.role, m.text) for m in ticket.messages]
    assert thread == [("customer", question), ("agent", reply), ("customer", follow_up)]
    assert not any(internal in m.text for m in ticket.messages)
    ids = [int(m.external_id or "") for m in ticket.messages]
    assert ids == sorted(ids), "messages keep RT's transaction order, with transaction ids as ids"
    assert all(m.created_at is not None for m in ticket.messages)
    assert ticket.requester is not None and ticket.requester.email == "lea@example.com"
    assert ticket.subject == "Invoice"


def test_html_only_latin1_mail_is_decoded_to_text(harness: RtHarness) -> None:
    sender = f"jurgen-{uuid.uuid4().hex[:6]}@example.com"
    marker = uuid.uuid4().hex[:8]
    harness.mail(
        sender=sender,
        subject="Bestellung",
        html=f"<html><body><p>Meine <b>Bestellung</b> {marker} fehlt.</p>"
        "<p>Viele Grüße&nbsp;&amp; Dank</p><script>alert(1)</script></body></html>",
        charset="iso-8859-1",
    )
    ticket_id = harness.newest_ticket_from(sender)

    text = _pulled(harness.connector())[ticket_id].messages[0].text

    assert text == f"Meine Bestellung {marker} fehlt.\n\nViele Grüße & Dank"  # nbsp read as a space


def test_multipart_alternative_prefers_the_plain_part(harness: RtHarness) -> None:
    sender = f"ana-{uuid.uuid4().hex[:6]}@example.com"
    harness.mail(
        sender=sender,
        subject="Colis",
        text="Mon colis n'est pas arrivé (texte)",
        html="<p>Mon colis n'est pas arrivé (<i>html</i>)</p>",
    )
    ticket_id = harness.newest_ticket_from(sender)

    text = _pulled(harness.connector())[ticket_id].messages[0].text

    assert text == "Mon colis n'est pas arrivé (texte)"


def test_ticket_opened_by_an_agent_for_a_customer(harness: RtHarness) -> None:
    request = _unique("Caller says the app crashes on login")
    ticket_id = harness.create_ticket_as_agent(
        subject="Phone call", text=request, requester_email="caller@example.com"
    )

    as_customer = _pulled(harness.connector())[ticket_id]
    assert [(m.role, m.text) for m in as_customer.messages] == [("customer", request)]

    strict = harness.connector(agent_created_as_customer=False)
    pages, _ = pull_all(strict)
    assert ticket_id not in {item.external_id for page in pages for item in page.items}
    reasons = dict(rejected for page in pages for rejected in page.rejected)
    assert "customer" in reasons[ticket_id], reasons


def test_attached_files_are_neither_the_message_nor_downloaded(harness: RtHarness) -> None:
    request = _unique("Screenshot and log attached")
    created = harness.admin.post(
        "/ticket",
        json={
            "Queue": harness.queue,
            "Subject": "Files",
            "Requestor": "files@example.com",
            "Content": request,
            "ContentType": "text/plain",
            "Attachments": [
                {
                    "FileName": "log.txt",
                    "FileType": "text/plain",
                    "FileContent": base64.b64encode(b"ERROR a log line").decode(),
                },
                {
                    "FileName": "screen.png",
                    "FileType": "image/png",
                    "FileContent": base64.b64encode(bytes(range(256)) * 64).decode(),
                },
            ],
        },
    )
    created.raise_for_status()
    ticket_id = str(created.json()["id"])

    ticket = _pulled(harness.connector())[ticket_id]

    assert [m.text for m in ticket.messages] == [request]


# --- cursor ------------------------------------------------------------------------------------------


def test_cursor_resumes_across_instances_and_repeats_nothing_settled(harness: RtHarness) -> None:
    first = harness.create_ticket(subject="One", text=_unique("first"))
    time.sleep(SETTLE_SECONDS + 0.5)  # let first's LastUpdated second be over before it is read
    _, cursor = pull_all(harness.connector())
    assert first in json.loads(cursor or "{}")["seen"]
    second = harness.create_ticket(subject="Two", text=_unique("second"))

    # A new connector (a restarted poller) resumes from the stored cursor.
    again = _pulled(harness.connector(), cursor)

    assert second in again
    assert first not in again, "a settled version already returned must not come back"


def test_ticket_read_in_its_open_second_comes_back_once_more(harness: RtHarness) -> None:
    ticket_id = harness.create_ticket(subject="Fresh", text=_unique("fresh"))
    connector = harness.connector()
    harness.agent_comment(ticket_id, "touch")  # LastUpdated = now
    pages, cursor = pull_all(connector)  # read at once: its LastUpdated second may still be open
    assert ticket_id in {item.external_id for page in pages for item in page.items}
    if ticket_id in json.loads(cursor or "{}")["seen"]:
        pytest.skip(f"this machine took over {SETTLE_SECONDS}s from an update to reading it back")

    # Not excluded by the final cursor, so a change within that same second would still be seen...
    assert ticket_id in _pulled(connector, cursor)
    # ...and once settled it is excluded for good.
    time.sleep(SETTLE_SECONDS + 0.5)
    _, cursor = pull_all(connector, cursor)
    assert ticket_id in json.loads(cursor or "{}")["seen"]
    assert ticket_id not in _pulled(connector, cursor)


@pytest.mark.parametrize("max_seen", [500, 3], ids=["exclusions", "floor"])
def test_tickets_sharing_a_second_are_paged_without_gaps_or_repeats(
    harness: RtHarness, max_seen: int
) -> None:
    """One bulk request creates them all, so several share a LastUpdated second (ties)."""
    texts = [_unique(f"bulk ticket {i}") for i in range(7)]
    created = harness.admin.post(
        "/tickets/bulk",
        json=[
            {
                "Queue": harness.queue,
                "Subject": f"Bulk {i}",
                "Requestor": f"bulk{i}@example.com",
                "Content": t,
            }
            for i, t in enumerate(texts)
        ],
    )
    created.raise_for_status()
    ids = {str(item["id"]) for item in created.json()}
    assert len(ids) == len(texts)

    # max_seen=3: most returned versions give way to the (LastUpdated, id) floor as the pass goes on.
    pages, cursor = pull_all(harness.connector(page_size=2, max_seen=max_seen))

    pulled = [item.external_id for page in pages for item in page.items]
    assert sorted(pulled) == sorted(ids), f"gaps or repeats within one pass: {pulled}"
    assert len(pages) >= 4
    assert len(json.loads(cursor or "{}")["seen"]) <= max_seen


def test_timezone_option_matches_the_api_users_rt_timezone(harness: RtHarness) -> None:
    """RT reads search dates in the API user's timezone; the option must say which one it is."""
    zone = "America/New_York"  # west of UTC: a cursor read as UTC would point hours into the future
    harness.admin.put(f"/user/{BOT_USER}", json={"Timezone": zone}).raise_for_status()
    try:
        user = (BOT_USER, BOT_PASSWORD)
        harness.create_ticket(subject="Before", text=_unique("before the cursor"))
        time.sleep(SETTLE_SECONDS + 0.5)
        _, cursor = pull_all(harness.connector(user=user, timezone=zone))
        after = harness.create_ticket(subject="After", text=_unique("after the cursor"))

        assert after in _pulled(harness.connector(user=user, timezone=zone), cursor)
        assert after not in _pulled(harness.connector(user=user, timezone="UTC"), cursor), (
            "with the wrong timezone the window lies in the future (this is why the option exists)"
        )
    finally:
        harness.admin.put(f"/user/{BOT_USER}", json={"Timezone": ""}).raise_for_status()


def test_cursor_with_many_seen_versions_still_pulls(harness: RtHarness) -> None:
    """Hundreds of tickets updated within the overlap window make a long TicketSQL: sent as a POST body."""
    ticket_id = harness.create_ticket(subject="Busy", text=_unique("busy second"))
    seen = {str(900_000 + i): "2001-01-01T00:00:00Z" for i in range(400)}
    cursor = json.dumps({"v": 1, "t": "2001-01-01T00:00:03Z", "seen": seen, "fresh": []})
    connector = harness.connector()
    assert len(connector.search_query(connector._read_cursor(cursor))) > 4000

    assert ticket_id in _pulled(connector, cursor)


def test_unreadable_cursor_is_a_config_error(harness: RtHarness) -> None:
    with pytest.raises(ConfigError, match="cursor"):
        harness.connector().pull("2026-01-01T00:00:00Z")


# --- write-back ---------------------------------------------------------------------------------------


def test_draft_is_a_comment_never_a_correspondence(harness: RtHarness) -> None:
    ticket_id = harness.create_ticket(subject="Refund", text=_unique("I want my money back"))
    write_back = _write_back(ticket_id)

    receipt = harness.connector().push(write_back)

    comments = harness._transactions(ticket_id, "Comment")
    assert [str(c["id"]) for c in comments] == [receipt.note_id]
    assert harness.notes(ticket_id) == [f"{write_back.note}\n\n{write_back.marker}"]
    assert harness.public_replies(ticket_id) == []
    # The comment is internal, so it never enters the thread the connector pulls.
    thread = _pulled(harness.connector())[ticket_id].messages
    assert not any(write_back.marker in m.text for m in thread)


def test_marker_deduplicates_across_connector_instances(harness: RtHarness) -> None:
    ticket_id = harness.create_ticket(subject="Refund", text=_unique("refund please"))
    write_back = _write_back(ticket_id)

    first = harness.connector().push(write_back)
    # Say the first push timed out after RT stored the comment, and a new worker retries it.
    retried = harness.connector().push(write_back)

    assert first.deduplicated is False and retried.deduplicated is True
    assert retried.note_id == first.note_id
    assert sum(write_back.marker in note for note in harness.notes(ticket_id)) == 1
    # Another result for the same ticket (another key) is a new note.
    harness.connector().push(_write_back(ticket_id))
    assert len(harness.notes(ticket_id)) == 2


def test_labels_go_to_the_configured_custom_fields(harness: RtHarness) -> None:
    ticket_id = harness.create_ticket(subject="Refund", text=_unique("refund"))
    write_back = _write_back(
        ticket_id, tags=["tf-lang-de", "tf-intent-refund", "tf-priority-low"], fields={"priority": "high"}
    )

    receipt = harness.connector().push(write_back)

    assert harness.custom_fields(ticket_id) == {
        CUSTOM_FIELDS["language"]: ["de"],
        CUSTOM_FIELDS["intent"]: ["refund"],
        CUSTOM_FIELDS["priority"]: ["high"],  # an explicit field wins over a tag
        CUSTOM_FIELDS["sentiment"]: [],
    }
    assert receipt.fields_applied == {"language": "de", "intent": "refund", "priority": "high"}
    assert set(receipt.tags_applied) == {"tf-lang-de", "tf-intent-refund", "tf-priority-low"}


def test_labels_without_a_mapping_are_left_alone(harness: RtHarness) -> None:
    ticket_id = harness.create_ticket(subject="Refund", text=_unique("refund"))

    receipt = harness.connector(custom_fields={"language": CUSTOM_FIELDS["language"]}).push(
        _write_back(ticket_id, note=None)
    )

    assert receipt.fields_applied == {"language": "de"}
    assert harness.custom_fields(ticket_id)[CUSTOM_FIELDS["priority"]] == []
    assert harness.notes(ticket_id) == []


def test_custom_field_missing_in_rt_is_a_config_error_naming_it(harness: RtHarness) -> None:
    ticket_id = harness.create_ticket(subject="Refund", text=_unique("refund"))
    connector = harness.connector(custom_fields={"language": "No Such Field"})

    with pytest.raises(ConfigError, match="No Such Field"):
        connector.push(_write_back(ticket_id))
    assert harness.notes(ticket_id) == [], "nothing is written when the configuration is wrong"


def test_the_documented_rights_are_enough(harness: RtHarness) -> None:
    bot = harness.connector(user=(BOT_USER, BOT_PASSWORD))
    text = _unique("least privilege")
    ticket_id = harness.create_ticket(subject="Rights", text=text)
    write_back = _write_back(ticket_id)

    assert any(text in m.text for m in _pulled(bot)[ticket_id].messages)
    assert bot.push(write_back).deduplicated is False
    assert bot.push(write_back).deduplicated is True, "the bot must see its own comment (ShowTicketComments)"

    assert harness.notes(ticket_id) == [f"{write_back.note}\n\n{write_back.marker}"]
    assert harness.custom_fields(ticket_id)[CUSTOM_FIELDS["priority"]] == ["high"]


def test_a_refused_custom_field_is_an_error_not_a_silent_success(harness: RtHarness) -> None:
    bot = harness.connector(user=(NO_CF_USER, BOT_PASSWORD))
    ticket_id = harness.create_ticket(subject="Rights", text=_unique("no custom field rights"))

    with pytest.raises(AuthError, match="ModifyCustomField"):
        bot.push(_write_back(ticket_id))
    assert harness.custom_fields(ticket_id)[CUSTOM_FIELDS["priority"]] == []
    assert harness.notes(ticket_id) == [], "the note waits until the labels can be written"


# --- from_config and auth ---------------------------------------------------------------------------------


def test_from_config_with_token_and_with_password(rt_server: RtServer) -> None:  # noqa: F811
    assert rt_server.token is not None
    by_token = from_config("rt", {"url": rt_server.base_url}, {"token": SecretStr(rt_server.token)}, None)
    by_password = from_config(
        "rt", {"url": rt_server.base_url, "username": "root"}, {"password": SecretStr(ROOT_PASSWORD)}, None
    )
    for connector in (by_token, by_password):
        assert "Request Tracker 5." in connector.check()

    wrong = from_config(
        "rt", {"url": rt_server.base_url, "username": "root"}, {"password": SecretStr("nope")}, None
    )
    with pytest.raises(AuthError):
        wrong.check()


def test_from_config_adds_credentials_to_the_registrys_client(rt_server: RtServer) -> None:  # noqa: F811
    """The fleet's registry builds the client from base_url (RT's web root) without credentials."""
    assert rt_server.token is not None
    http = SourceHttp(httpx.Client(base_url=rt_server.base_url, timeout=30), source="rt")

    connector = from_config("rt", {}, {"token": SecretStr(rt_server.token)}, http)

    assert "Request Tracker 5." in connector.check()


@pytest.mark.parametrize(
    ("options", "secrets", "complaint"),
    [
        ({}, {"token": "t"}, "base_url (or options.url)"),
        ({"url": "rt.example.com"}, {"token": "t"}, "http:// or https://"),
        ({"url": "https://rt.example.com"}, {}, "'token' secret (token_env) or a 'password'"),
        ({"url": "https://rt.example.com"}, {"password": "p"}, "username"),
        ({"url": "https://rt.example.com", "custom_fields": {"mood": "X"}}, {"token": "t"}, "mood"),
        ({"url": "https://rt.example.com", "page_size": 500}, {"token": "t"}, "page_size"),
        ({"url": "https://rt.example.com", "timezone": "Mars/Olympus"}, {"token": "t"}, "Mars/Olympus"),
    ],
)
def test_bad_configuration_names_the_problem(
    options: dict[str, object], secrets: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        from_config("rt", options, {k: SecretStr(v) for k, v in secrets.items()}, None)
