"""A local fake of the Zendesk Support API, reproducing what the connector relies on, as documented:

* API token auth: HTTP basic ``{email}/token:{token}``; anything else → 401 ``Couldn't authenticate you``.
* Incremental cursor-based ticket export ``GET /api/v2/incremental/tickets/cursor.json`` with
  ``start_time`` (first call) or ``cursor``, ``per_page``, ``include=users``; answers ``tickets``,
  ``after_cursor``, ``before_cursor``, ``after_url``, ``end_of_stream``. Items updated in the most recent
  minute are excluded, and the endpoint allows 10 requests per minute (429 with ``Retry-After``).
* Ticket comments ``GET /api/v2/tickets/{id}/comments.json`` with cursor pagination
  (``page[size]``, ``page[after]`` → ``meta.has_more``, ``meta.after_cursor``, ``links.next``).
* ``PUT /api/v2/tickets/{id}.json`` with ``ticket.additional_tags`` / ``tags``, ``custom_fields`` and
  ``comment: {body, public}``; answers the ticket and its ``audit`` with the comment event.
* ``GET /api/v2/users/me.json``; 404 ``RecordNotFound`` for unknown tickets.

The clock is wall time plus an offset the tests advance (``advance``), so "the newest minute" and the
rate-limit window can be crossed without waiting. Test hooks: ``slow_puts`` (a PUT that is applied,
then answered too late: the client times out although the update landed) and ``export_delay``
(slow export pages after the first, so a test can kill a poller between pages).
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from datetime import UTC, datetime
from typing import Any

from tests.fakes.server import FakeApi, Request, Response

EXPORT_LIMIT_PER_MINUTE = 10
NEWEST_EXCLUDED_S = 60


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _encode(key: tuple[float, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode(cursor: str) -> tuple[float, int]:
    ts, ticket_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    return float(ts), int(ticket_id)


class FakeZendesk(FakeApi):
    slow_seconds = 1.0

    def __init__(self, *, email: str = "bot@example.com", token: str = "zd-token") -> None:
        super().__init__()
        self.email, self.token = email, token
        self.offset = 0.0
        self.tickets: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.users: dict[int, dict[str, Any]] = {1: {"id": 1, "email": email, "name": "Bot", "role": "agent"}}
        self._ids = 100
        self._state = threading.Lock()
        self._export_hits: list[float] = []
        self.slow_puts = 0
        self.export_delay = 0.0
        self.route("GET", "/api/v2/users/me.json", self._me)
        self.route("GET", "/api/v2/incremental/tickets/cursor.json", self._export)
        self.route("GET", r"/api/v2/tickets/(?P<ticket_id>\d+)/comments.json", self._list_comments)
        self.route("PUT", r"/api/v2/tickets/(?P<ticket_id>\d+).json", self._update)

    # --- clock and test helpers -----------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def create_ticket(
        self, *, subject: str, text: str, requester_email: str | None = None, channel: str = "web"
    ) -> int:
        with self._state:
            email = requester_email or f"customer{self._ids}@example.com"
            user = next((u for u in self.users.values() if u["email"] == email), None)
            if user is None:
                user = {
                    "id": self._next_id(),
                    "email": email,
                    "name": email.split("@")[0],
                    "role": "end-user",
                }
                user["locale"] = "en-US"
                self.users[user["id"]] = user
            ticket_id = self._next_id()
            now = self.now()
            self.tickets[ticket_id] = {
                "id": ticket_id,
                "subject": subject,
                "description": text,
                "status": "new",
                "requester_id": user["id"],
                "tags": [],
                "custom_fields": [],
                "via": {"channel": channel},
                "created_at": now,
                "updated_at": now,
            }
            self.comments[ticket_id] = []
            self._add_comment(ticket_id, text, author_id=user["id"], public=True)
            return ticket_id

    def add_comment(
        self, ticket_id: int, text: str, *, from_requester: bool = True, public: bool = True
    ) -> None:
        with self._state:
            author = self.tickets[ticket_id]["requester_id"] if from_requester else 1
            self._add_comment(ticket_id, text, author_id=author, public=public)
            self.tickets[ticket_id]["updated_at"] = self.now()

    def _add_comment(self, ticket_id: int, text: str, *, author_id: int, public: bool) -> dict[str, Any]:
        comment = {
            "id": self._next_id(),
            "type": "Comment",
            "author_id": author_id,
            "body": text,
            "html_body": f'<div class="zd-comment"><p>{text}</p></div>',
            "plain_body": text,
            "public": public,
            "created_at": _iso(self.now()),
        }
        self.comments[ticket_id].append(comment)
        return comment

    # --- auth ------------------------------------------------------------------------------------

    def authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        expected = base64.b64encode(f"{self.email}/token:{self.token}".encode()).decode()
        return header == f"Basic {expected}"

    # --- endpoints -----------------------------------------------------------------------------

    def _me(self, request: Request) -> Response:
        return Response(200, {"user": self.users[1]})

    def _export(self, request: Request) -> Response:
        now = self.now()
        with self._state:
            self._export_hits = [t for t in self._export_hits if t > now - 60]
            if len(self._export_hits) >= EXPORT_LIMIT_PER_MINUTE:
                wait = math.ceil(self._export_hits[0] + 60 - now)
                return Response(429, {"error": "APIRateLimitExceeded"}, {"Retry-After": str(max(1, wait))})
            first_call = not self._export_hits
            self._export_hits.append(now)
        if self.export_delay and not first_call:
            time.sleep(self.export_delay)
        per_page = min(int(request.arg("per_page", "1000") or 1000), 1000)
        cursor = request.arg("cursor")
        if cursor:
            try:
                after = _decode(cursor)
            except (ValueError, TypeError):
                return Response(400, {"error": "InvalidCursor", "description": "cursor is invalid"})
        else:
            start = request.arg("start_time")
            if start is None or not start.isdigit():
                return Response(400, {"error": "InvalidValue", "description": "start_time is required"})
            if int(start) > now - NEWEST_EXCLUDED_S:
                description = "Too recent start_time. Use a start_time at least one minute in the past"
                return Response(400, {"error": "InvalidValue", "description": description})
            after = (float(start) - 1e-6, 0)
        cutoff = now - NEWEST_EXCLUDED_S  # the newest minute is excluded, as documented
        with self._state:
            eligible = sorted(
                (
                    t
                    for t in self.tickets.values()
                    if (t["updated_at"], t["id"]) > after and t["updated_at"] <= cutoff
                ),
                key=lambda t: (t["updated_at"], t["id"]),
            )
            page = eligible[:per_page]
            users = {u["id"]: u for t in page for u in [self.users[t["requester_id"]]]}
            body = {
                "tickets": [self._ticket_json(t) for t in page],
                "after_cursor": _encode((page[-1]["updated_at"], page[-1]["id"])) if page else cursor,
                "before_cursor": None,
                "end_of_stream": len(eligible) <= per_page,
            }
        if body["after_cursor"] is None:
            body["after_cursor"] = _encode(after)
        body["after_url"] = f"/api/v2/incremental/tickets/cursor.json?cursor={body['after_cursor']}"
        if request.arg("include") == "users":
            body["users"] = list(users.values())
        return Response(200, body)

    def _ticket_json(self, ticket: dict[str, Any]) -> dict[str, Any]:
        return {
            **ticket,
            "url": f"/api/v2/tickets/{ticket['id']}.json",
            "created_at": _iso(ticket["created_at"]),
            "updated_at": _iso(ticket["updated_at"]),
            "generated_timestamp": int(ticket["updated_at"]),
        }

    def _list_comments(self, request: Request, ticket_id: str) -> Response:
        comments = self.comments.get(int(ticket_id))
        if comments is None:
            return Response(404, {"error": "RecordNotFound", "description": "Not found"})
        size = min(int(request.arg("page[size]", "100") or 100), 100)
        after = int(request.arg("page[after]", "0") or 0)
        with self._state:
            remaining = [c for c in comments if c["id"] > after]
        page = remaining[:size]
        has_more = len(remaining) > size
        after_cursor = str(page[-1]["id"]) if page else None
        return Response(
            200,
            {
                "comments": page,
                "meta": {"has_more": has_more, "after_cursor": after_cursor, "before_cursor": None},
                "links": {
                    "next": f"/api/v2/tickets/{ticket_id}/comments.json?page[after]={after_cursor}"
                    if has_more
                    else None
                },
            },
        )

    def _update(self, request: Request, ticket_id: str) -> Response:
        ticket = self.tickets.get(int(ticket_id))
        if ticket is None:
            return Response(404, {"error": "RecordNotFound", "description": "Not found"})
        try:
            update = request.json()["ticket"]
        except (ValueError, KeyError, TypeError):
            return Response(400, {"error": "InvalidValue", "description": 'expected {"ticket": {...}}'})
        events: list[dict[str, Any]] = []
        with self._state:
            if "tags" in update:
                ticket["tags"] = sorted(set(update["tags"]))
            if "additional_tags" in update:
                ticket["tags"] = sorted(set(ticket["tags"]) | set(update["additional_tags"]))
            for field in update.get("custom_fields", []):
                ticket["custom_fields"] = [f for f in ticket["custom_fields"] if f["id"] != field["id"]] + [
                    field
                ]
            if "comment" in update:
                comment = self._add_comment(
                    int(ticket_id),
                    update["comment"]["body"],
                    author_id=1,
                    public=update["comment"].get("public", True),
                )
                events.append({"id": comment["id"], "type": "Comment", "public": comment["public"]})
            ticket["updated_at"] = self.now()
            slow = self.slow_puts > 0
            self.slow_puts -= slow
            body = {"ticket": self._ticket_json(ticket), "audit": {"id": self._next_id(), "events": events}}
        if slow:
            time.sleep(self.slow_seconds)  # applied, but answered after the client gave up
        return Response(200, body)
