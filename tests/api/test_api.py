"""The HTTP API over real sockets: uvicorn on 127.0.0.1, httpx as the client, real PostgreSQL and Redis.

Signatures are computed here with hashlib/hmac directly (not with the module under test), so a bug
in the signing helpers cannot hide a bug in the verification.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from db.audit import AuditTrail
from db.models import AuditEvent, Draft, ItemState, Message, Ticket, WorkItem
from db.results import Review, store_outputs
from db.session import transaction
from tests.support.api_server import ApiServer
from ticketfleet.api import create_app
from ticketfleet.api.service import ApiService
from ticketfleet.core.schemas import EngineOutput, FieldPrediction, Triage
from ticketfleet.core.settings import Settings
from ticketfleet.core.vocabulary import RunIdentity
from ticketfleet.services import redis_client

SECRET = "s3cret-signing-key"
TOKEN = "tok-0123456789"
ZENDESK_SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="  # Zendesk's documented test secret
ZAMMAD_TOKEN = "zammad-hmac-token"
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def api_settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        api_sources={
            "shop": {"signing_secret": SECRET, "token": TOKEN},
            "zd": {"hook_secret": ZENDESK_SECRET},
            "zm": {"hook_secret": ZAMMAD_TOKEN},
        },
        api_max_body_bytes=LIMIT,
        api_nudge_min_interval_s=0,
        batch_size=4,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture(scope="module")
def server(api_settings: Settings) -> Iterator[ApiServer]:
    with ApiServer(create_app(api_settings)) as running:
        yield running


@pytest.fixture
def client(server: ApiServer, clean_db: str, flushed_redis: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def signed(body: bytes, *, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Ticketfleet-Source": "shop",
        "X-Ticketfleet-Signature": f"t={stamp},v1={digest}",
        "Content-Type": "application/json",
    }


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {
        "X-Ticketfleet-Source": "shop",
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
    }


def chat(
    conversation: str = "conv-1", message: str = "m-1", text: str = "Hallo, wo ist mein Paket?"
) -> bytes:
    return json.dumps(
        {"conversation_id": conversation, "message_id": message, "text": text, "locale": "de-DE"}
    ).encode()


def store_result(
    url: str, item_id: int, *, draft: str, language: str = "en", gates: dict | None = None
) -> int:
    """A triage result and a passed draft for ``item_id``, as a worker would store them; the draft id."""
    output = EngineOutput(
        item_id=item_id,
        triage=Triage(
            language=FieldPrediction(value=language, confidence=0.97),
            sentiment=FieldPrediction(value="negative", confidence=0.7),
            intent=FieldPrediction(value="shipping", confidence=0.9),
            priority=FieldPrediction(value="normal", confidence=0.6),
        ),
        draft=draft,
        draft_language=language,
    )
    with transaction(url) as s:
        audit = AuditTrail("test")
        review = Review(gates=gates or {}, needs_review=False, draft_check="passed")
        store_outputs(
            s, [output], RunIdentity("test-model", "main", "v1"), audit=audit, reviews={item_id: review}
        )
        audit.write(s)
        return int(s.execute(select(Draft.id).where(Draft.body == draft)).scalar_one())


def counts(url: str) -> tuple[int, int, int]:
    with transaction(url) as s:
        return (
            s.execute(select(func.count()).select_from(Ticket)).scalar_one(),
            s.execute(select(func.count()).select_from(Message)).scalar_one(),
            s.execute(select(func.count()).select_from(WorkItem)).scalar_one(),
        )


def queued_messages(redis_url: str, queue: str) -> list[dict[str, Any]]:
    """Kombu's Redis messages on one queue: JSON envelopes with headers and a base64 body."""
    raw = redis_client(redis_url).lrange(queue, 0, -1)
    return [json.loads(r) for r in raw]


# --- authentication ------------------------------------------------------------------------------


def test_forged_signature_is_refused(client: httpx.Client, clean_db: str) -> None:
    body = chat()
    response = client.post("/v1/chat", content=body, headers=signed(body, secret="not-the-secret"))
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"
    assert "signature does not match" in response.json()["message"]
    assert counts(clean_db) == (0, 0, 0)


def test_signature_over_a_different_body_is_refused(client: httpx.Client, clean_db: str) -> None:
    headers = signed(chat(text="harmless"))
    response = client.post("/v1/chat", content=chat(text="tampered"), headers=headers)
    assert response.status_code == 401
    assert counts(clean_db) == (0, 0, 0)


def test_stale_timestamp_is_refused_naming_it(client: httpx.Client, clean_db: str) -> None:
    body = chat()
    stamp = int(time.time()) - 1000
    response = client.post("/v1/chat", content=body, headers=signed(body, at=stamp))
    assert response.status_code == 401
    payload = response.json()
    assert payload["stale"] is True
    assert f"stale timestamp {stamp}" in payload["message"] and "300 s" in payload["message"]
    assert counts(clean_db) == (0, 0, 0)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (bearer("wrong-token"), "bearer token is not valid"),
        ({"X-Ticketfleet-Source": "shop", "Content-Type": "application/json"}, "missing credentials"),
        ({"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}, "X-Ticketfleet-Source"),
        ({**bearer(), "X-Ticketfleet-Source": "elsewhere"}, "no API credentials are configured"),
    ],
    ids=["wrong-token", "no-credentials", "no-source", "unknown-source"],
)
def test_bad_credentials_are_refused(
    client: httpx.Client, clean_db: str, headers: dict[str, str], reason: str
) -> None:
    response = client.post("/v1/chat", content=chat(), headers=headers)
    assert response.status_code == 401
    assert reason in response.json()["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert counts(clean_db) == (0, 0, 0)


# --- limits and malformed input ------------------------------------------------------------------


def test_oversized_body_with_content_length_is_413(client: httpx.Client, clean_db: str) -> None:
    body = chat(text="x" * (LIMIT * 2))
    response = client.post("/v1/chat", content=body, headers=bearer())
    assert response.status_code == 413
    assert response.json()["limit"] == LIMIT
    assert f"body of {len(body)} bytes" in response.json()["message"]
    assert counts(clean_db) == (0, 0, 0)


def test_oversized_chunked_body_is_413_without_reading_it_all(client: httpx.Client, clean_db: str) -> None:
    sent = {"bytes": 0}
    total = 256 * LIMIT  # 16 MiB offered, far more than the socket buffers hold

    def stream() -> Iterator[bytes]:  # no Content-Length: httpx sends Transfer-Encoding: chunked
        piece = b"x" * 16384
        while sent["bytes"] < total:
            sent["bytes"] += len(piece)
            yield piece

    response = client.post("/v1/chat", content=stream(), headers=bearer())
    assert response.status_code == 413
    assert response.json()["message"] == f"body exceeds the limit of {LIMIT} bytes"
    assert sent["bytes"] < total, "the server kept reading a body it had already refused"
    assert counts(clean_db) == (0, 0, 0)


def test_malformed_json_is_400_naming_the_position(client: httpx.Client) -> None:
    body = b'{"conversation_id": "c", "message_id": "m",\n "text": }'
    response = client.post("/v1/chat", content=body, headers=signed(body))
    assert response.status_code == 400
    payload = response.json()
    assert payload["error"] == "malformed_json"
    assert (payload["line"], payload["column"]) == (2, 10)
    assert "line 2 column 10" in payload["message"]


def test_wrong_content_type_is_415(client: httpx.Client) -> None:
    response = client.post("/v1/chat", content=chat(), headers={**bearer(), "Content-Type": "text/plain"})
    assert response.status_code == 415
    assert "text/plain" in response.json()["message"]


def test_schema_error_is_422_naming_each_field(client: httpx.Client, clean_db: str) -> None:
    body = json.dumps({"conversation_id": "c-1", "text": "", "colour": "blue"}).encode()
    response = client.post("/v1/chat", content=body, headers=bearer())
    assert response.status_code == 422
    fields = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert fields["message_id"] == "field required"
    assert fields["colour"] == "unknown field"
    assert "text" in fields
    assert counts(clean_db) == (0, 0, 0)


# --- storing and queueing ------------------------------------------------------------------------


def test_chat_message_is_stored_and_queued_with_ids_only(
    client: httpx.Client, clean_db: str, flushed_redis: str
) -> None:
    body = chat(text="Mein Paket ist nicht angekommen, Bestellung 4471")
    response = client.post("/v1/chat", content=body, headers=signed(body))
    assert response.status_code == 202, response.text
    reply = response.json()
    assert reply["new_messages"] == 1 and reply["known_messages"] == 0 and reply["queued"] == 1
    [record] = reply["stored"]
    assert record["external_id"] == "conv-1" and record["messages"][0]["new"] is True
    with transaction(clean_db) as s:
        item = s.execute(select(WorkItem)).scalar_one()
        message = s.get(Message, item.message_id)
        assert message is not None and message.channel == "chat" and message.external_id == "m-1"
    assert item.lane == "chat" and item.state == ItemState.queued
    assert reply["work_item_ids"] == [item.id]
    [wakeup] = queued_messages(flushed_redis, "chat")
    assert wakeup["headers"]["task"] == "ticketfleet.lane.chat"
    args, kwargs, _ = json.loads(base64.b64decode(wakeup["body"]))
    assert args == [[item.id]] and kwargs == {}
    assert b"Paket" not in base64.b64decode(wakeup["body"]) and "Paket" not in json.dumps(wakeup)


def test_redelivery_is_idempotent(client: httpx.Client, clean_db: str, flushed_redis: str) -> None:
    body = chat()
    first = client.post("/v1/chat", content=body, headers=signed(body))
    again = client.post("/v1/chat", content=body, headers=signed(body))
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["new_messages"] == 0 and again.json()["known_messages"] == 1
    assert (
        again.json()["stored"][0]["messages"][0]["message_id"]
        == first.json()["stored"][0]["messages"][0]["message_id"]
    )
    assert counts(clean_db) == (1, 1, 1)
    assert len(queued_messages(flushed_redis, "chat")) == 1
    follow_up = chat(message="m-2", text="Hallo? Noch da?")
    third = client.post("/v1/chat", content=follow_up, headers=signed(follow_up))
    assert (
        third.status_code == 202
        and third.json()["stored"][0]["ticket_id"] == first.json()["stored"][0]["ticket_id"]
    )
    assert counts(clean_db) == (1, 2, 2)


def test_concurrent_chat_messages_each_get_their_own_reply(
    client: httpx.Client, clean_db: str, flushed_redis: str
) -> None:
    """24 messages of 6 conversations at once: the API stores them in shared transactions
    (api/coalesce.py), yet each reply names its own message and work item, nothing is lost, and
    each conversation's messages keep distinct positions."""
    posts = [(f"conv-{i % 6}", f"m-{i}") for i in range(24)]

    def post(conversation_and_message: tuple[str, str]) -> httpx.Response:
        conversation, message = conversation_and_message
        body = chat(conversation=conversation, message=message, text=f"Wo ist Paket {message}?")
        return client.post("/v1/chat", content=body, headers=signed(body))

    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(post, posts))
    assert [r.status_code for r in responses] == [202] * 24, [
        r.text for r in responses if r.status_code != 202
    ]
    replies = [r.json() for r in responses]
    with transaction(clean_db) as s:
        stored = {
            (conv, ext): (mid, pos, item)
            for conv, ext, mid, pos, item in s.execute(
                select(Ticket.external_id, Message.external_id, Message.id, Message.position, WorkItem.id)
                .join(Message, Message.ticket_id == Ticket.id)
                .join(WorkItem, WorkItem.message_id == Message.id)
            )
        }
    assert sorted(stored) == sorted(posts)
    for (conversation, message), reply in zip(posts, replies, strict=True):
        [record] = reply["stored"]
        message_id, _, item_id = stored[(conversation, message)]
        assert record["external_id"] == conversation and record["index"] == 0
        assert record["messages"] == [{"external_id": message, "message_id": message_id, "new": True}]
        assert reply["new_messages"] == 1 and reply["known_messages"] == 0
        assert reply["work_item_ids"] == [item_id] and reply["queued"] == 1
    for conversation in {c for c, _ in posts}:
        positions = sorted(pos for (c, _), (_, pos, _) in stored.items() if c == conversation)
        assert positions == [0, 1, 2, 3]
    woken = [
        i
        for m in queued_messages(flushed_redis, "chat")
        for i in json.loads(base64.b64decode(m["body"]))[0][0]
    ]
    assert sorted(woken) == sorted(item for _, _, item in stored.values())


def test_bulk_with_bad_records_stores_the_good_ones(
    client: httpx.Client, clean_db: str, flushed_redis: str
) -> None:
    records: list[Any] = [
        {"external_id": "T-1", "subject": "Double charge", "text": "I was charged twice"},
        {"external_id": "T-2", "messages": [{"role": "agent", "text": "Hello"}]},
        {"external_id": "T-3", "text": "Refund please", "channel": "fax"},
        "not an object",
        {"external_id": "T-4", "channel": "chat", "text": "Are you there?"},
        {"external_id": "T-1", "text": "the same ticket again"},
        {"external_id": "T-5", "source": "someone-else", "text": "hi"},
    ]
    body = json.dumps(records).encode()
    response = client.post("/v1/tickets", content=body, headers=signed(body))
    assert response.status_code == 207, response.text
    reply = response.json()
    assert [r["external_id"] for r in reply["stored"]] == ["T-1", "T-4"]
    rejected = {r["index"]: r for r in reply["rejected"]}
    assert set(rejected) == {1, 2, 3, 5, 6}
    assert "customer" in rejected[1]["errors"][0]["message"]
    assert rejected[2]["errors"][0]["field"] == "channel"
    assert "expected a JSON object" in rejected[3]["errors"][0]["message"]
    assert "record 0" in rejected[5]["errors"][0]["message"]
    assert rejected[6]["errors"][0]["field"] == "source"
    with transaction(clean_db) as s:
        lanes = dict(
            s.execute(
                select(Ticket.external_id, WorkItem.lane)
                .select_from(Ticket)
                .join(Message, Message.ticket_id == Ticket.id)
                .join(WorkItem, WorkItem.message_id == Message.id)
            ).all()
        )
    assert lanes == {"T-1": "tickets", "T-4": "chat"}
    assert len(queued_messages(flushed_redis, "tickets")) == 1


def test_single_ticket_with_schema_error_is_422(client: httpx.Client, clean_db: str) -> None:
    body = json.dumps({"external_id": "T-9", "country": "Germany", "text": "hi"}).encode()
    response = client.post("/v1/tickets", content=body, headers=bearer())
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "country"


# --- read endpoint -------------------------------------------------------------------------------


def test_read_endpoint_shows_result_and_draft(client: httpx.Client, clean_db: str) -> None:
    body = chat(text="Where is my parcel?")
    stored = client.post("/v1/chat", content=body, headers=signed(body)).json()
    pending = client.get("/v1/tickets/shop/conv-1", headers=signed(b""))
    assert pending.status_code == 200
    assert pending.json()["messages"][0]["result"] is None
    item_id = stored["work_item_ids"][0]
    gates = {"intent": {"gate": "auto", "review_below": 0.4, "auto_at": 0.8}}
    store_result(clean_db, item_id, draft="Sorry about the delay, the parcel is on its way.", gates=gates)
    response = client.get("/v1/tickets/shop/conv-1", headers=bearer())
    assert response.status_code == 200
    [message] = response.json()["messages"]
    assert message["result"]["labels"] == {
        "language": "en",
        "sentiment": "negative",
        "intent": "shipping",
        "priority": "normal",
    }
    assert message["result"]["confidences"]["intent"] == 0.9
    assert message["result"]["gates"] == gates and message["result"]["needs_review"] is False
    assert message["draft"] == {
        "status": "proposed",
        "check_result": "passed",
        "text": "Sorry about the delay, the parcel is on its way.",
        "language": "en",
        "created_at": message["draft"]["created_at"],
        "rehydrated": False,
    }


def test_agent_view_rehydrates_the_draft_and_audits_the_reveal(client: httpx.Client, clean_db: str) -> None:
    body = chat(text="Paket fehlt, bitte an lena.vogel@example.de schreiben")
    item_id = client.post("/v1/chat", content=body, headers=signed(body)).json()["work_item_ids"][0]
    with transaction(clean_db) as s:
        stored = s.execute(select(Message.body)).scalar_one()
        placeholder = stored.rsplit(" ", 2)[-2]
        assert placeholder.startswith("<EMAIL_") and "lena.vogel" not in stored
    store_result(clean_db, item_id, draft=f"Wir schreiben Ihnen an {placeholder}.", language="de")
    plain = client.get("/v1/tickets/shop/conv-1", headers=bearer()).json()["messages"][0]["draft"]
    assert plain["text"] == f"Wir schreiben Ihnen an {placeholder}." and plain["rehydrated"] is False
    agent = client.get("/v1/tickets/shop/conv-1?rehydrate=true", headers=bearer()).json()["messages"][0]
    assert agent["draft"]["text"] == "Wir schreiben Ihnen an lena.vogel@example.de."
    assert agent["draft"]["rehydrated"] is True
    with transaction(clean_db) as s:
        reveals = s.execute(select(AuditEvent).where(AuditEvent.event_type == "pii.revealed")).scalars().all()
    assert len(reveals) == 1 and reveals[0].actor == "api:shop"
    assert "lena" not in json.dumps(reveals[0].data)


def test_agent_decides_a_draft_once_and_the_change_is_audited(client: httpx.Client, clean_db: str) -> None:
    body = chat(text="Where is my parcel?")
    item_id = client.post("/v1/chat", content=body, headers=signed(body)).json()["work_item_ids"][0]
    draft_id = store_result(clean_db, item_id, draft="It is on its way.")

    def decide(status: str, draft: int = draft_id) -> httpx.Response:
        payload = json.dumps({"status": status, "agent": "maria"}).encode()
        return client.post(f"/v1/drafts/{draft}/status", content=payload, headers=signed(payload))

    assert decide("sent").status_code == 422, "only accepted / edited / rejected"
    assert decide("accepted", draft=draft_id + 999).status_code == 404
    accepted = decide("accepted")
    assert accepted.status_code == 200 and accepted.json() == {
        "draft_id": draft_id,
        "before": "proposed",
        "after": "accepted",
    }
    again = decide("rejected")
    assert again.status_code == 409 and "already accepted" in again.json()["message"]
    with transaction(clean_db) as s:
        assert s.execute(select(Draft.status)).scalar_one() == "accepted"
        [event] = (
            s.execute(
                select(AuditEvent).where(
                    AuditEvent.event_type == "draft.status_changed", AuditEvent.actor == "agent:maria"
                )
            )
            .scalars()
            .all()
        )
    assert event.before == {"status": "proposed"} and event.after == {"status": "accepted"}


def test_read_endpoint_needs_credentials_and_knows_missing_tickets(client: httpx.Client) -> None:
    assert client.get("/v1/tickets/shop/nope").status_code == 401
    missing = client.get("/v1/tickets/shop/nope", headers=bearer())
    assert missing.status_code == 404 and "nope" in missing.json()["message"]


def test_health_and_metrics(client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok", "redis": "ok"}
    client.post("/v1/chat", content=chat(), headers=bearer("wrong"))
    metrics = client.get("/metrics").text
    assert 'ticketfleet_api_requests_total{method="POST",route="/v1/chat",status="401"}' in metrics


# --- vendor webhooks -----------------------------------------------------------------------------


def _poll_nudges(redis_url: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for message in queued_messages(redis_url, "sources"):
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        out.append((message["headers"]["task"], kwargs))
    return out


def test_zendesk_hook_verified_nudges_a_poll(client: httpx.Client, clean_db: str, flushed_redis: str) -> None:
    body = b'{"type": "zen:event-type:ticket.comment_added", "detail": {"id": "35436"}}'
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = base64.b64encode(
        hmac.new(ZENDESK_SECRET.encode(), stamp.encode() + body, hashlib.sha256).digest()
    ).decode()
    headers = {
        "X-Zendesk-Webhook-Signature": signature,
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        "Content-Type": "application/json",
    }
    response = client.post("/v1/hooks/zendesk/zd", content=body, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["poll"] == "nudged"
    assert _poll_nudges(flushed_redis) == [("ticketfleet.sources.poll", {"source": "zd"})]
    assert counts(clean_db) == (0, 0, 0), "the hook payload must not be stored as data"

    forged = client.post("/v1/hooks/zendesk/zd", content=body.replace(b"35436", b"1"), headers=headers)
    assert forged.status_code == 401 and "does not match" in forged.json()["message"]
    assert len(_poll_nudges(flushed_redis)) == 1


def test_zammad_hook_verified_nudges_a_poll(client: httpx.Client, flushed_redis: str) -> None:
    body = b'{"ticket": {"id": 42, "number": "31001"}, "article": {"id": 104}}'
    signature = "sha1=" + hmac.new(ZAMMAD_TOKEN.encode(), body, hashlib.sha1).hexdigest()
    headers = {
        "X-Hub-Signature": signature,
        "X-Zammad-Trigger": "ticketfleet",
        "Content-Type": "application/json",
    }
    response = client.post("/v1/hooks/zammad/zm", content=body, headers=headers)
    assert response.status_code == 202, response.text
    assert _poll_nudges(flushed_redis) == [("ticketfleet.sources.poll", {"source": "zm"})]
    forged = client.post("/v1/hooks/zammad/zm", content=body, headers={"X-Hub-Signature": "sha1=" + "0" * 40})
    assert forged.status_code == 401
    unsigned = client.post("/v1/hooks/zammad/zm", content=body)
    assert unsigned.status_code == 401 and "X-Hub-Signature" in unsigned.json()["message"]
    assert len(_poll_nudges(flushed_redis)) == 1
    unknown = client.post("/v1/hooks/freshdesk/zm", content=body, headers=headers)
    assert unknown.status_code == 404 and "freshdesk" in unknown.json()["message"]


def test_hooks_in_a_burst_coalesce_into_one_poll(api_settings: Settings, flushed_redis: str) -> None:
    service = ApiService(api_settings.model_copy(update={"api_nudge_min_interval_s": 30.0}))
    replies = [service.nudge_poll("zd", "zendesk").poll for _ in range(5)]
    assert replies == ["nudged", "coalesced", "coalesced", "coalesced", "coalesced"]
    assert service.nudge_poll("zm", "zammad").poll == "nudged", "another source is not held back"
    assert sorted(_poll_nudges(flushed_redis), key=lambda n: n[1]["source"]) == [
        ("ticketfleet.sources.poll", {"source": "zd"}),
        ("ticketfleet.sources.poll", {"source": "zm"}),
    ]


def test_ticketfleet_serve_command_serves_the_api(database_url: str, redis_url: str) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "TICKETFLEET_DATABASE_URL": database_url,
        "TICKETFLEET_REDIS_URL": redis_url,
        "TICKETFLEET_API_SOURCES": json.dumps({"shop": {"token": TOKEN}}),
        "TICKETFLEET_API_OPS_TOKEN": "ops",
    }
    cmd = [sys.executable, "-m", "ticketfleet.cli", "serve", f"--port={port}", "--log-level=warning"]
    server = subprocess.Popen(cmd, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/healthz", headers={"Authorization": "Bearer ops"}, timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, "ticketfleet serve exited"
                assert time.monotonic() < deadline, "ticketfleet serve did not answer within 60 s"
                time.sleep(0.2)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 401, "the ops token is required"
        missing = httpx.get(f"{url}/v1/tickets/shop/none", headers={"Authorization": f"Bearer {TOKEN}"})
        assert missing.status_code == 404
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_ticketfleet_serve_refuses_to_start_without_the_pii_key(database_url: str, redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETFLEET_PII")}
    env |= {"TICKETFLEET_DATABASE_URL": database_url, "TICKETFLEET_REDIS_URL": redis_url}
    cmd = [sys.executable, "-m", "ticketfleet.cli", "serve", f"--port={_free_port()}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "TICKETFLEET_PII_KEY is not set" in done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
