"""A local fake of the Zammad REST API endpoints the connector uses (real HTTP on 127.0.0.1).

Reproduces what https://docs.zammad.org/en/latest/api/ describes:

* ``Authorization: Token token=…``; 401 otherwise;
* ``GET /api/v1/tickets/search`` with an ``updated_at:>=<escaped ISO>`` query (optionally ``AND (…)``,
  ignored here), ``sort_by``/``order_by``, ``page``/``per_page`` and ``expand=true`` (a list of expanded
  tickets; without it ``{"tickets": [ids], "tickets_count": n, "assets": {"Ticket": {...}}}``);
  tickets in :attr:`FakeZammad.unindexed` are missing from search, as a lagging Elasticsearch would;
* ``GET /api/v1/ticket_articles/by_ticket/{id}``, ``POST /api/v1/ticket_articles``;
* ``GET /api/v1/tickets/{id}``, ``PUT /api/v1/tickets/{id}`` (known attributes only);
* ``GET /api/v1/tags``, ``POST /api/v1/tags/add`` (idempotent);
* ``GET/PUT /api/v1/tickets/{id}/shared_draft`` (404 when none; 422 when the group has shared drafts
  switched off; the PUT overwrites the ticket's one draft);
* ``GET /api/v1/users/me``.

Timestamps carry milliseconds (``2026-01-05T09:00:01.000Z``) from a :class:`FakeClock`.
"""

from __future__ import annotations

import html
import itertools
import re
from datetime import UTC, datetime
from typing import Any

from tests.fakes.clock import FakeClock
from tests.fakes.server import FakeApi, Request, Response


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class FakeZammad(FakeApi):
    attributes = frozenset({"tf_priority", "tf_language", "tf_intent", "tf_sentiment"})

    def __init__(self, token: str = "zm-token", *, clock: FakeClock | None = None) -> None:
        super().__init__()
        self.token = token
        self.clock = clock or FakeClock()
        self.tickets: dict[int, dict[str, Any]] = {}
        self.articles: dict[int, list[dict[str, Any]]] = {}
        self.tags: dict[int, list[str]] = {}
        self.shared_drafts: dict[int, dict[str, Any]] = {}
        self.shared_drafts_enabled = True
        self.unindexed: set[int] = set()
        self._ids = itertools.count(1)
        self._article_ids = itertools.count(101)
        self._draft_ids = itertools.count(1)
        self.route("GET", r"/api/v1/tickets/search", self._search)
        self.route("GET", r"/api/v1/tickets/(?P<tid>\d+)", self._show)
        self.route("PUT", r"/api/v1/tickets/(?P<tid>\d+)", self._update)
        self.route("GET", r"/api/v1/ticket_articles/by_ticket/(?P<tid>\d+)", self._by_ticket)
        self.route("POST", r"/api/v1/ticket_articles", self._create_article)
        self.route("GET", r"/api/v1/tags", self._tags)
        self.route("POST", r"/api/v1/tags/add", self._tag_add)
        self.route("GET", r"/api/v1/tickets/(?P<tid>\d+)/shared_draft", self._draft_show)
        self.route("PUT", r"/api/v1/tickets/(?P<tid>\d+)/shared_draft", self._draft_put)
        self.route("GET", r"/api/v1/users/me", self._me)

    def authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Token token={self.token}"

    def unauthorised(self) -> Response:
        return Response(401, {"error": "Authentication required", "error_human": "Authentication required"})

    @staticmethod
    def _not_found() -> Response:
        return Response(404, {"error": "Couldn't find Ticket with 'id'=0", "error_human": "Not found"})

    # --- state helpers for the harness ---------------------------------------------------------

    def add_ticket(self, title: str, text: str, *, customer: str | None = None, kind: str = "web") -> int:
        now = _stamp(self.clock.tick())
        tid = next(self._ids)
        email = customer or f"customer{tid}@example.com"
        self.tickets[tid] = {
            "id": tid,
            "number": str(31000 + tid),
            "title": title,
            "group": "Users",
            "state": "new",
            "priority": "2 normal",
            "customer_id": 1000 + tid,
            "customer": email,
            "create_article_type": kind,
            "created_at": now,
            "updated_at": now,
        }
        self.articles[tid] = []
        self.tags[tid] = []
        self.add_article(tid, text, sender="Customer", kind=kind, sender_from=f"Customer <{email}>")
        return tid

    def add_article(
        self,
        tid: int,
        body: str,
        *,
        sender: str,
        kind: str = "web",
        internal: bool = False,
        content_type: str = "text/html",
        sender_from: str | None = None,
    ) -> dict[str, Any]:
        now = _stamp(self.clock.tick())
        if content_type == "text/html" and not body.lstrip().startswith("<"):
            body = "<div>" + html.escape(body).replace("\n", "<br>") + "</div>"
        article = {
            "id": next(self._article_ids),
            "ticket_id": tid,
            "sender": sender,
            "type": kind,
            "internal": internal,
            "content_type": content_type,
            "body": body,
            "from": sender_from or ("Support Agent" if sender == "Agent" else None),
            "created_at": now,
            "updated_at": now,
        }
        self.articles[tid].append(article)
        self.tickets[tid]["updated_at"] = now
        return article

    # --- routes --------------------------------------------------------------------------------

    def _search(self, request: Request) -> Response:
        query = request.arg("query") or ""
        match = re.search(r"updated_at:>=((?:\\.|[^\s\\])+)", query)
        rows = [t for tid, t in self.tickets.items() if tid not in self.unindexed]
        if match:
            bound = _parse(re.sub(r"\\(.)", r"\1", match.group(1)))
            rows = [t for t in rows if _parse(t["updated_at"]) >= bound]
        sort_by = request.arg("sort_by", "updated_at") or "updated_at"
        rows.sort(key=lambda t: (t[sort_by], t["id"]), reverse=request.arg("order_by") == "desc")
        per_page = int(request.arg("per_page", "50") or 50)
        page = int(request.arg("page", "1") or 1)
        chunk = rows[(page - 1) * per_page : page * per_page]
        if request.arg("expand") == "true":
            return Response(200, chunk)
        return Response(
            200,
            {
                "tickets": [t["id"] for t in chunk],
                "tickets_count": len(chunk),
                "assets": {"Ticket": {str(t["id"]): t for t in chunk}},
            },
        )

    def _show(self, request: Request, tid: str) -> Response:
        ticket = self.tickets.get(int(tid))
        return Response(200, ticket) if ticket else self._not_found()

    def _update(self, request: Request, tid: str) -> Response:
        ticket = self.tickets.get(int(tid))
        if ticket is None:
            return self._not_found()
        for key, value in (request.json() or {}).items():
            if key in self.attributes:
                ticket[key] = value
        ticket["updated_at"] = _stamp(self.clock.tick())
        return Response(200, ticket)

    def _by_ticket(self, request: Request, tid: str) -> Response:
        if int(tid) not in self.tickets:
            return self._not_found()
        return Response(200, self.articles[int(tid)])

    def _create_article(self, request: Request) -> Response:
        body = request.json() or {}
        tid = int(body.get("ticket_id") or 0)
        if tid not in self.tickets:
            return self._not_found()
        article = self.add_article(
            tid,
            body.get("body") or "",
            sender=body.get("sender") or "Agent",
            kind=body.get("type") or "note",
            internal=bool(body.get("internal")),
            content_type=body.get("content_type") or "text/html",
        )
        return Response(201, article)

    def _tags(self, request: Request) -> Response:
        tid = int(request.arg("o_id", "0") or 0)
        if tid not in self.tickets:
            return self._not_found()
        return Response(200, {"tags": list(self.tags[tid])})

    def _tag_add(self, request: Request) -> Response:
        body = request.json() or {}
        tid = int(body.get("o_id") or 0)
        if body.get("object") != "Ticket" or tid not in self.tickets or not body.get("item"):
            return Response(422, {"error": "Need object, o_id and item"})
        if body["item"] not in self.tags[tid]:
            self.tags[tid].append(body["item"])
            self.tickets[tid]["updated_at"] = _stamp(self.clock.tick())
        return Response(200, True)

    def _draft_show(self, request: Request, tid: str) -> Response:
        draft = self.shared_drafts.get(int(tid))
        if draft is None:
            return self._not_found()
        return Response(
            200,
            {"shared_draft_id": draft["id"], "assets": {"TicketSharedDraftZoom": {str(draft["id"]): draft}}},
        )

    def _draft_put(self, request: Request, tid: str) -> Response:
        if int(tid) not in self.tickets:
            return self._not_found()
        if not self.shared_drafts_enabled:
            return Response(422, {"error": "Shared drafts are not activated for the selected group"})
        body = request.json() or {}
        previous = self.shared_drafts.get(int(tid))
        draft = {
            "id": previous["id"] if previous else next(self._draft_ids),
            "ticket_id": int(tid),
            "new_article": body.get("new_article") or {},
            "ticket_attributes": body.get("ticket_attributes") or {},
        }
        self.shared_drafts[int(tid)] = draft
        return Response(200 if previous else 201, {"shared_draft_id": draft["id"], "assets": {}})

    def _me(self, request: Request) -> Response:
        return Response(200, {"id": 3, "login": "triage-bot", "email": "triage-bot@example.com"})
