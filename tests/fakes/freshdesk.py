"""A local fake of the Freshdesk API v2 endpoints the connector uses (real HTTP on 127.0.0.1).

Reproduces what the docs describe (https://developers.freshdesk.com/api/):

* basic auth with the API key as user name and any password (``X``); 401 ``invalid_credentials``;
* ``GET /api/v2/tickets`` with ``updated_since``, ``order_by=updated_at``, ``order_type``, ``per_page``
  (max 100, else 400) and ``page`` (max ``max_page``, else 400), ``include=requester``, and a
  ``Link: <…>; rel="next"`` header while more pages exist;
* ``GET/PUT /api/v2/tickets/{id}`` (PUT replaces ``tags``, merges ``custom_fields``, 400 for an
  unknown custom field, bumps ``updated_at``), ``GET /api/v2/tickets/{id}/conversations`` (paged),
  ``POST /api/v2/tickets/{id}/notes``, ``GET /api/v2/agents/me``;
* ``X-Ratelimit-Total`` / ``X-Ratelimit-Remaining`` / ``X-Ratelimit-Used-CurrentRequest`` on answers.

Timestamps are second-granular ``YYYY-MM-DDTHH:MM:SSZ`` from a :class:`FakeClock`.
"""

from __future__ import annotations

import base64
import html
import itertools
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from tests.fakes.clock import FakeClock
from tests.fakes.server import FakeApi, Request, Response


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text_of(body: str) -> str:
    text = re.sub(r"<br\s*/?>|</p>|</div>", "\n", body)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


class FakeFreshdesk(FakeApi):
    custom_fields = frozenset({"cf_tf_priority", "cf_tf_language", "cf_tf_intent", "cf_tf_sentiment"})

    def __init__(
        self, api_key: str = "fd-key", *, clock: FakeClock | None = None, max_page: int = 300
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.clock = clock or FakeClock()
        self.max_page = max_page
        self.tickets: dict[int, dict[str, Any]] = {}
        self.conversations: dict[int, list[dict[str, Any]]] = {}
        self.contacts: dict[int, dict[str, Any]] = {}
        self.rate_total = 200
        self.rate_remaining = 200
        self._ids = itertools.count(1001)
        self._conv_ids = itertools.count(50001)
        self._contact_ids = itertools.count(70001)
        self.agent_id = 9001
        # Notes whose answer is delayed past the client's timeout after they were stored: a write
        # that reached Freshdesk although the connector saw a timeout.
        self.slow_notes = 0
        self.route("GET", r"/api/v2/tickets", self._list)
        self.route("GET", r"/api/v2/tickets/(?P<tid>\d+)", self._show)
        self.route("PUT", r"/api/v2/tickets/(?P<tid>\d+)", self._update)
        self.route("GET", r"/api/v2/tickets/(?P<tid>\d+)/conversations", self._conversations)
        self.route("POST", r"/api/v2/tickets/(?P<tid>\d+)/notes", self._note)
        self.route("GET", r"/api/v2/agents/me", self._me)

    # --- auth and common answers ---------------------------------------------------------------

    def authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        user, _, _ = base64.b64decode(header[6:]).decode().partition(":")
        return user == self.api_key

    def unauthorised(self) -> Response:
        return Response(
            401,
            {"code": "invalid_credentials", "message": "You have to be logged in to perform this action."},
        )

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        self.rate_remaining = max(0, self.rate_remaining - 1)
        limits = {
            "X-Ratelimit-Total": str(self.rate_total),
            "X-Ratelimit-Remaining": str(self.rate_remaining),
            "X-Ratelimit-Used-CurrentRequest": "1",
        }
        return Response(status, body, {**limits, **(headers or {})})

    def _invalid(self, field: str, message: str) -> Response:
        return self._answer(
            400,
            {
                "description": "Validation failed",
                "errors": [{"field": field, "message": message, "code": "invalid_value"}],
            },
        )

    def _missing(self) -> Response:
        return self._answer(404, None)

    # --- state helpers used by the tests' harness ----------------------------------------------

    def contact(self, email: str | None) -> int:
        for cid, person in self.contacts.items():
            if person["email"] == email:
                return cid
        cid = next(self._contact_ids)
        name = (email or "anonymous").split("@")[0].title()
        self.contacts[cid] = {"id": cid, "name": name, "email": email, "mobile": None, "phone": None}
        return cid

    def add_ticket(self, subject: str, text: str, *, email: str | None = None, source: int = 2) -> int:
        now = _stamp(self.clock.tick())
        tid = next(self._ids)
        body = "<div>" + html.escape(text).replace("\n", "<br>") + "</div>"
        self.tickets[tid] = {
            "id": tid,
            "subject": subject,
            "description": body,
            "description_text": text,
            "source": source,
            "status": 2,
            "priority": 1,
            "requester_id": self.contact(email or f"customer{tid}@example.com"),
            "tags": [],
            "custom_fields": {name: None for name in sorted(self.custom_fields)},
            "created_at": now,
            "updated_at": now,
        }
        self.conversations[tid] = []
        return tid

    def add_conversation(
        self, tid: int, text: str, *, incoming: bool, private: bool, user_id: int
    ) -> dict[str, Any]:
        now = _stamp(self.clock.tick())
        body = "<div>" + html.escape(text).replace("\n", "<br>") + "</div>"
        conv = {
            "id": next(self._conv_ids),
            "ticket_id": tid,
            "body": body,
            "body_text": text,
            "incoming": incoming,
            "private": private,
            "user_id": user_id,
            "source": 2 if private else 0,
            "created_at": now,
            "updated_at": now,
        }
        self.conversations[tid].append(conv)
        self.tickets[tid]["updated_at"] = now
        return conv

    # --- routes --------------------------------------------------------------------------------

    def _list(self, request: Request) -> Response:
        try:
            per_page = int(request.arg("per_page", "30") or 30)
            page = int(request.arg("page", "1") or 1)
        except ValueError:
            return self._invalid("page", "It should be a/an Positive Integer")
        if not 1 <= per_page <= 100:
            return self._invalid("per_page", "It should be a Positive Integer less than or equal to 100")
        if not 1 <= page <= self.max_page:
            return self._invalid(
                "page",
                f"You cannot access tickets beyond the {self.max_page}th page. "
                "Please provide a smaller page number.",
            )
        rows = list(self.tickets.values())
        since = request.arg("updated_since")
        if since:
            try:
                bound = datetime.fromisoformat(since.replace("Z", "+00:00"))
            except ValueError:
                return self._invalid("updated_since", "It should be in the 'valid date time' format")
            rows = [
                t for t in rows if datetime.fromisoformat(t["updated_at"].replace("Z", "+00:00")) >= bound
            ]
        order_by = request.arg("order_by", "created_at") or "created_at"
        rows.sort(key=lambda t: (t[order_by], t["id"]), reverse=request.arg("order_type", "desc") == "desc")
        chunk = rows[(page - 1) * per_page : page * per_page]
        include = (request.arg("include") or "").split(",")
        out = []
        for ticket in chunk:
            row = dict(ticket)
            if "requester" in include:
                row["requester"] = dict(self.contacts[ticket["requester_id"]])
            out.append(row)
        headers = {}
        if page * per_page < len(rows) and page < self.max_page:
            query = {k: v[0] for k, v in request.query.items()} | {"page": str(page + 1)}
            headers["Link"] = f'<https://acme.freshdesk.com/api/v2/tickets?{urlencode(query)}>; rel="next"'
        return self._answer(200, out, headers)

    def _show(self, request: Request, tid: str) -> Response:
        ticket = self.tickets.get(int(tid))
        return self._answer(200, ticket) if ticket else self._missing()

    def _update(self, request: Request, tid: str) -> Response:
        ticket = self.tickets.get(int(tid))
        if ticket is None:
            return self._missing()
        body = request.json() or {}
        fields = body.get("custom_fields") or {}
        unknown = sorted(set(fields) - self.custom_fields)
        if unknown:
            return self._invalid(unknown[0], "Unexpected/invalid field in request")
        if "tags" in body:
            ticket["tags"] = list(body["tags"])
        ticket["custom_fields"].update(fields)
        ticket["updated_at"] = _stamp(self.clock.tick())
        return self._answer(200, ticket)

    def _conversations(self, request: Request, tid: str) -> Response:
        if int(tid) not in self.tickets:
            return self._missing()
        per_page = int(request.arg("per_page", "30") or 30)
        page = int(request.arg("page", "1") or 1)
        rows = self.conversations[int(tid)]
        headers = {}
        if page * per_page < len(rows):
            headers["Link"] = (
                f'<https://acme.freshdesk.com/api/v2/tickets/{tid}/conversations?page={page + 1}>; rel="next"'
            )
        return self._answer(200, rows[(page - 1) * per_page : page * per_page], headers)

    def _note(self, request: Request, tid: str) -> Response:
        if int(tid) not in self.tickets:
            return self._missing()
        body = request.json() or {}
        if not body.get("body"):
            return self._invalid("body", "It should not be blank as this is a mandatory field")
        conv = self.add_conversation(
            int(tid),
            _text_of(body["body"]),
            incoming=False,
            private=bool(body.get("private", True)),
            user_id=self.agent_id,
        )
        conv["body"] = body["body"]
        if self.slow_notes:
            self.slow_notes -= 1
            time.sleep(self.slow_seconds)
        return self._answer(201, conv)

    def _me(self, request: Request) -> Response:
        return self._answer(
            200,
            {
                "id": self.agent_id,
                "available": True,
                "contact": {"name": "Triage Bot", "email": "bot@acme.test"},
            },
        )
