"""Zendesk Support: incremental cursor export in, tags/custom fields and a private comment out.

Pull: ``GET /api/v2/incremental/tickets/cursor.json`` (``start_time`` on the first call, then the
``after_cursor`` it returned; ``end_of_stream`` ends a poll). Zendesk allows 10 requests a minute on
incremental exports, so the connector keeps its own budget for that endpoint on top of the source's;
it also leaves out the newest minute, which the next poll picks up. Each ticket's thread comes from
``GET /api/v2/tickets/{id}/comments.json`` (cursor-paginated); private comments (internal notes,
our drafts among them) are not part of the customer thread.

Push: one ``PUT /api/v2/tickets/{id}.json`` with ``additional_tags``, mapped ``custom_fields`` and
``comment: {body, public: false}``. The comment carries the write-back marker; before posting, the
ticket's comments are searched for it, so a retry after a timeout that did land posts nothing twice.

Auth: API token, basic ``{email}/token:{token}``.

Webhooks: verifying ``X-Zendesk-Webhook-Signature`` lives in :mod:`connectors.webhook_signatures`
(:func:`~connectors.webhook_signatures.verify_zendesk_webhook`), the one implementation the HTTP API uses.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from connectors.base import (
    BadResponse,
    ConfigError,
    Connector,
    NotFound,
    PullPage,
    WriteBack,
    WriteBackReceipt,
)
from connectors.http import SourceHttp
from ticketfleet.core.errors import describe_validation_error
from ticketfleet.core.inbound import InboundTicket

EXPORT_PATH = "/api/v2/incremental/tickets/cursor.json"
# Zendesk "via" channels that are conversations rather than tickets.
CHAT_CHANNELS = frozenset({"chat", "native_messaging", "messaging", "sunshine_conversations_api"})


class ZendeskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, description="Agent e-mail the API token belongs to.")
    start_time: int = Field(default=0, ge=0, description="Unix time the first export starts from.")
    page_size: int = Field(default=100, ge=1, le=1000, description="Tickets per export page.")
    custom_fields: dict[str, int] = Field(
        default_factory=dict, description="WriteBack field name → Zendesk custom field id."
    )
    export_requests_per_minute: float = Field(default=10, gt=0)


class SlidingWindow:
    """At most ``limit`` calls in any ``window`` seconds, as Zendesk counts its export limit. A token
    bucket would allow a burst of 10 and then one every 6 s — 11 calls in one minute, refused."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit, self.window, self.clock = max(1, limit), window, clock
        self.calls: deque[float] = deque()

    def wait_time(self) -> float:
        now = self.clock()
        while self.calls and self.calls[0] <= now - self.window:
            self.calls.popleft()
        if len(self.calls) < self.limit:
            return 0.0
        return self.calls[0] + self.window - now + 0.01

    def record(self) -> None:
        self.calls.append(self.clock())


class ZendeskConnector(Connector):
    kind = "zendesk"

    def __init__(
        self,
        name: str,
        http: SourceHttp,
        *,
        email: str = "",
        start_time: int = 0,
        page_size: int = 100,
        custom_fields: dict[str, int] | None = None,
        export_requests_per_minute: float = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name)
        self.http = http
        self.email = email
        self.start_time = start_time
        self.page_size = page_size
        self.custom_fields = dict(custom_fields or {})
        self.export_window = SlidingWindow(int(export_requests_per_minute), 60.0, clock)

    # --- pull ----------------------------------------------------------------------------------

    def pull(self, cursor: str | None) -> PullPage:
        wait = self.export_window.wait_time()
        if wait > 0:
            self.http.sleep(wait)
        self.export_window.record()
        params: dict[str, Any] = {"per_page": self.page_size, "include": "users"}
        if cursor:
            params["cursor"] = cursor
        else:
            params["start_time"] = self.start_time
        data = self.http.json("GET", EXPORT_PATH, params=params)
        if not isinstance(data, dict) or not isinstance(data.get("tickets"), list):
            raise BadResponse(f"GET {EXPORT_PATH}: no 'tickets' list in the answer", source=self.name)
        if not isinstance(data.get("end_of_stream"), bool):
            raise BadResponse(f"GET {EXPORT_PATH}: no 'end_of_stream' flag", source=self.name)
        users = {u.get("id"): u for u in data.get("users") or [] if isinstance(u, dict)}
        items: list[InboundTicket] = []
        rejected: list[tuple[str, str]] = []
        for raw in data["tickets"]:
            ref = str(raw.get("id")) if isinstance(raw, dict) else "?"
            if not isinstance(raw, dict) or "id" not in raw:
                rejected.append((ref, "ticket without an id"))
                continue
            if raw.get("status") == "deleted":
                continue
            try:
                comments = list(self._comments(raw["id"]))
            except NotFound:
                rejected.append((ref, "ticket vanished before its comments were read"))
                continue
            try:
                items.append(self._ticket(raw, comments, users.get(raw.get("requester_id"))))
            except ValidationError as exc:
                rejected.append((ref, describe_validation_error(exc)))
        after = data.get("after_cursor") or cursor
        return PullPage(items=items, cursor=after, has_more=not data["end_of_stream"], rejected=rejected)

    def _ticket(
        self, raw: dict[str, Any], comments: list[dict[str, Any]], user: dict[str, Any] | None
    ) -> InboundTicket:
        requester_id = raw.get("requester_id")
        messages = [
            {
                "role": "customer" if c.get("author_id") == requester_id else "agent",
                "text": c.get("plain_body") or c.get("body") or "",
                "external_id": str(c["id"]),
                "created_at": c.get("created_at"),
            }
            for c in comments
            if c.get("public", True) and "id" in c
        ]
        channel = (raw.get("via") or {}).get("channel")
        record: dict[str, Any] = {
            "external_id": raw["id"],
            "channel": "chat" if channel in CHAT_CHANNELS else "ticket",
            "subject": raw.get("subject") or None,
            "messages": messages,
        }
        if user:
            record["requester"] = {"name": user.get("name"), "email": user.get("email")}
            record["locale"] = user.get("locale")
        return InboundTicket.model_validate(record)

    def _comments(self, ticket_id: object) -> Iterator[dict[str, Any]]:
        path = f"/api/v2/tickets/{ticket_id}/comments.json"
        params: dict[str, Any] = {"page[size]": 100}
        while True:
            data = self.http.json("GET", path, params=params)
            if not isinstance(data, dict) or not isinstance(data.get("comments"), list):
                raise BadResponse(f"GET {path}: no 'comments' list in the answer", source=self.name)
            yield from (c for c in data["comments"] if isinstance(c, dict))
            meta = data.get("meta") or {}
            if not meta.get("has_more") or not meta.get("after_cursor"):
                return
            params = {"page[size]": 100, "page[after]": meta["after_cursor"]}

    # --- push ----------------------------------------------------------------------------------

    def push(self, write_back: WriteBack) -> WriteBackReceipt:
        ticket_id = write_back.ticket_external_id
        if not ticket_id.isdigit():
            raise NotFound(f"{ticket_id!r} is not a Zendesk ticket id", source=self.name)
        existing = next(
            (c for c in self._comments(ticket_id) if write_back.marker in str(c.get("body", ""))), None
        )
        update: dict[str, Any] = {}
        if write_back.tags:
            update["additional_tags"] = list(write_back.tags)
        fields = {k: v for k, v in write_back.fields.items() if k in self.custom_fields}
        if fields:
            update["custom_fields"] = [{"id": self.custom_fields[k], "value": v} for k, v in fields.items()]
        post_note = write_back.note is not None and existing is None
        if post_note:
            body = f"{write_back.note}\n\n{write_back.marker}"
            update["comment"] = {"body": body, "public": False}
        note_id = str(existing["id"]) if existing is not None else None
        if update:
            # Not retried blindly when it carries a note: a timed-out PUT may have landed, and only the
            # marker search above (on the next attempt) can tell.
            data = self.http.json(
                "PUT", f"/api/v2/tickets/{ticket_id}.json", json={"ticket": update}, retry=not post_note
            )
            if post_note:
                events = ((data or {}).get("audit") or {}).get("events") or []
                note_id = next((str(e["id"]) for e in events if e.get("type") == "Comment"), None)
        return WriteBackReceipt(
            note_id=note_id,
            deduplicated=existing is not None,
            tags_applied=list(write_back.tags),
            fields_applied=fields,
        )

    def check(self) -> str:
        data = self.http.json("GET", "/api/v2/users/me.json")
        user = (data or {}).get("user") if isinstance(data, dict) else None
        if not isinstance(user, dict) or user.get("id") is None:
            raise BadResponse("GET /api/v2/users/me.json: not signed in", source=self.name)
        return f"signed in as {user.get('email')} ({user.get('role')}) at {self.http.client.base_url}"

    def close(self) -> None:
        self.http.client.close()


def from_config(
    name: str, options: dict[str, Any], secrets: dict[str, SecretStr], http: SourceHttp | None
) -> ZendeskConnector:
    parsed = ZendeskOptions.model_validate(options)
    if http is None:
        raise ConfigError("zendesk needs base_url, e.g. https://acme.zendesk.com", source=name)
    token = secrets.get("token")
    if token is None:
        raise ConfigError('zendesk needs token_env = "ENV_VAR_WITH_API_TOKEN"', source=name)
    http.client.auth = httpx.BasicAuth(f"{parsed.email}/token", token.get_secret_value())
    return ZendeskConnector(name, http, **parsed.model_dump())
