"""Zammad connector: ticket search by ``updated_at``, articles, tags, shared drafts.

Endpoints (https://docs.zammad.org/en/latest/api/):

* pull — ``GET /api/v1/tickets/search?query=updated_at:>=…&sort_by=updated_at&order_by=asc&page=…
  &per_page=…&expand=true`` (a list of expanded tickets; the non-expanded ``{"tickets": [...],
  "assets": {...}}`` shape is read too), then ``GET /api/v1/ticket_articles/by_ticket/{id}`` per ticket.
  Search runs on Elasticsearch, which sees a change a little after it happened; the query reaches back
  ``overlap_seconds`` (default 60) before the newest ``updated_at`` seen and the cursor drops what it
  already emitted (:mod:`connectors.window_cursor`), so a late-indexed ticket is still caught.
  Articles: ``internal`` ones are skipped (agents' notes, our drafts); sender ``Customer`` → customer,
  ``Agent`` → agent, ``System`` → skipped; ``text/html`` bodies become text.
* push — ``GET /api/v1/tickets/{id}`` (404 → NotFound), tags via ``GET /api/v1/tags?object=Ticket&o_id=``
  and ``POST /api/v1/tags/add`` ``{"object": "Ticket", "o_id": id, "item": tag}`` for the missing ones,
  mapped fields via ``PUT /api/v1/tickets/{id}``, and the draft as the ticket's **shared draft**:
  ``PUT /api/v1/tickets/{id}/shared_draft`` with ``new_article`` ``{"type": "note", "internal": true,
  "content_type": "text/html", "body": …}`` (documented under "Shared drafts"; the PUT overwrites, so it
  is safe to retry). When the ticket already holds a shared draft that is not ours (an agent's work in
  progress, never overwritten), or shared drafts are off for the ticket's group (422), the draft goes as
  an internal note article instead: ``POST /api/v1/ticket_articles`` ``{"type": "note", "internal":
  true}``, never retried blindly. ``draft_mode: internal_note`` always uses the article.
* check — ``GET /api/v1/users/me``.

Auth: ``Authorization: Token token=<access token>`` (permissions ``ticket.agent``; ``admin.tag`` is not
needed to add existing or new tags to tickets an agent can change).

Trigger webhooks' ``X-Hub-Signature: sha1=<hex>`` is checked by
:func:`connectors.webhook_signatures.verify_zammad_webhook`, the one implementation the HTTP API uses.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import (
    AuthError,
    BadResponse,
    NotFound,
    PermanentError,
    PullPage,
    WriteBack,
    WriteBackReceipt,
)
from connectors.html_text import html_to_text, text_to_html
from connectors.http import SourceHttp
from connectors.saas_support import (
    HttpConnector,
    dated_hits,
    decode_json,
    expect,
    find_marked,
    mapped_fields,
    normalised,
    note_body,
    owning,
    parse_options,
    receipt,
    requester,
    require_http,
    require_secret,
)
from connectors.window_cursor import WindowCursor, iso, maybe_timestamp, read_page_with_lookback
from ticketfleet.core.inbound import InboundMessage, InboundTicket, Requester
from ticketfleet.core.vocabulary import Channel

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SENDER_ROLES = {"Customer": "customer", "Agent": "agent"}


class ZammadOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    per_page: int = Field(default=100, ge=1, le=200)
    start: datetime = EPOCH
    # How far the search reaches back before the newest updated_at seen: covers the search index lag.
    overlap_seconds: float = Field(default=60.0, ge=0)
    # Extra search condition ANDed to the updated_at range, e.g. 'group.name:"Support"'.
    query: str | None = None
    # Elasticsearch's result window: page × per_page beyond it is refused.
    max_results: int = Field(default=10_000, ge=1)
    # Article types (the ticket's create_article_type) that make it a chat conversation.
    chat_types: frozenset[str] = frozenset(
        {"chat", "sms", "telegram personal-message", "whatsapp message", "facebook feed post"}
    )
    draft_mode: Literal["shared_draft", "internal_note"] = "shared_draft"
    # WriteBack field → Zammad ticket attribute, e.g. {"priority": "tf_priority"}.
    field_map: dict[str, str] = Field(default_factory=dict)


def _escape(value: str) -> str:
    """A value inside an Elasticsearch query_string: ':' and other reserved characters escaped."""
    return "".join(f"\\{c}" if c in '+-=&|><!(){}[]^"~*?:\\/' else c for c in value)


class ZammadConnector(HttpConnector):
    kind: ClassVar[str] = "zammad"

    def __init__(self, name: str, http: SourceHttp, **options: Any) -> None:
        super().__init__(name, http)
        self.options = ZammadOptions.model_validate(options)

    def _call(self, method: str, url: str, *, retry: bool = True, **kwargs: Any) -> Any:
        return decode_json(self.http.request(method, url, retry=retry, **kwargs), self.name)

    # --- pull ----------------------------------------------------------------------------------

    def _window_start(self, newest: datetime) -> datetime:
        return newest - timedelta(seconds=self.options.overlap_seconds)

    def search_query(self, bound: datetime) -> str:
        # Zammad stores milliseconds; the range is inclusive so ties at the bound are re-read, then
        # dropped by the cursor's seen-set.
        stamp = bound.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        clause = f"updated_at:>={_escape(stamp)}"
        return f"{clause} AND ({self.options.query})" if self.options.query else clause

    def pull(self, cursor: str | None) -> PullPage:
        opts = self.options
        state = WindowCursor.decode(cursor, source=self.name)
        bound, token = state.query(self._window_start)
        query = self.search_query(bound or opts.start)

        def fetch(page: int) -> tuple[list[Any], bool]:
            params: dict[str, str | int] = {
                "query": query,
                "sort_by": "updated_at",
                "order_by": "asc",
                "page": page,
                "per_page": opts.per_page,
                "expand": "true",
            }
            rows = self._search_rows(self._call("GET", "/api/v1/tickets/search", params=params))
            return rows, len(rows) >= opts.per_page  # search answers carry no "next" link

        rows, next_token = read_page_with_lookback(fetch, token)
        hits, rejected = dated_hits(
            rows, lambda row: row["updated_at"], what="ticket without a usable id/updated_at"
        )
        fresh, after, more = state.advance(
            hits, next_token, window_start=self._window_start, page_size=opts.per_page
        )
        if after.token is not None and int(after.token) * opts.per_page > opts.max_results:
            raise PermanentError(
                f"more than {opts.max_results} tickets share the search window from "
                f"{iso(after.bound or opts.start)}; narrow it with the 'query' option",
                source=self.name,
            )
        items = normalised(fresh, self._ticket, rejected)
        return PullPage(items=items, cursor=after.encode(), has_more=more, rejected=rejected)

    def _search_rows(self, data: Any) -> list[Any]:
        if isinstance(data, list):  # expand=true
            return data
        if isinstance(data, dict) and isinstance(data.get("tickets"), list):
            assets = (data.get("assets") or {}).get("Ticket") or {}
            return [assets.get(str(tid)) or {"id": tid} for tid in data["tickets"]]
        raise BadResponse(
            f"GET /api/v1/tickets/search: expected a list of tickets, got {type(data).__name__}",
            source=self.name,
        )

    def _articles(self, ticket_id: str) -> list[dict[str, Any]]:
        data = self._call("GET", f"/api/v1/ticket_articles/by_ticket/{ticket_id}")
        rows = expect(data, list, f"GET /api/v1/ticket_articles/by_ticket/{ticket_id}", self.name)
        return [r for r in rows if isinstance(r, dict)]

    @staticmethod
    def _article_text(article: dict[str, Any]) -> str:
        body = article.get("body") or ""
        return html_to_text(body) if article.get("content_type") == "text/html" else body.strip()

    def _ticket(self, raw: dict[str, Any]) -> InboundTicket:
        ticket_id = str(raw["id"])
        articles = self._articles(ticket_id)
        messages: list[InboundMessage] = []
        customer_from: str | None = None
        for article in articles:
            role = SENDER_ROLES.get(str(article.get("sender")))
            if article.get("internal") or role is None:
                continue
            text = self._article_text(article)
            if not text:
                continue
            if role == "customer" and customer_from is None:
                customer_from = article.get("from")
            messages.append(
                InboundMessage(
                    role=role,  # type: ignore[arg-type]  # values of SENDER_ROLES are Roles
                    text=text,
                    external_id=str(article.get("id")),
                    created_at=maybe_timestamp(article.get("created_at")),
                )
            )
        kind = raw.get("create_article_type") or (articles[0].get("type") if articles else None)
        return InboundTicket(
            external_id=ticket_id,
            source=self.name,
            channel=Channel.chat if kind in self.options.chat_types else Channel.ticket,
            subject=raw.get("title"),
            requester=self._requester(raw.get("customer"), customer_from),
            messages=messages,
        )

    @staticmethod
    def _requester(customer: Any, article_from: str | None) -> Requester | None:
        name, address = email.utils.parseaddr(article_from or "")
        if isinstance(customer, str) and "@" in customer:
            address = customer
        if not (name or address):
            return None
        return requester(name, address)

    # --- push ----------------------------------------------------------------------------------

    def push(self, write_back: WriteBack) -> WriteBackReceipt:
        ticket_id = write_back.ticket_external_id
        expect(self._call("GET", f"/api/v1/tickets/{ticket_id}"), dict, "GET ticket", self.name)
        self._add_tags(ticket_id, write_back.tags)
        fields = mapped_fields(write_back, self.options.field_map)
        if fields:
            self._call("PUT", f"/api/v1/tickets/{ticket_id}", json=fields)
        note_id: str | None = None
        deduplicated = False
        if write_back.note is not None:
            note_id, deduplicated = self._draft(ticket_id, write_back)
        return receipt(write_back, self.options.field_map, note_id=note_id, deduplicated=deduplicated)

    def _add_tags(self, ticket_id: str, tags: list[str]) -> None:
        if not tags:
            return
        data = self._call("GET", "/api/v1/tags", params={"object": "Ticket", "o_id": ticket_id})
        present = set((data or {}).get("tags") or []) if isinstance(data, dict) else set()
        for tag in tags:
            if tag not in present:  # tags/add is idempotent in Zammad, so a retry cannot duplicate
                self._call(
                    "POST", "/api/v1/tags/add", json={"object": "Ticket", "o_id": int(ticket_id), "item": tag}
                )

    def _draft(self, ticket_id: str, write_back: WriteBack) -> tuple[str, bool]:
        marker = write_back.marker
        existing_article = self._find_internal_article(ticket_id, marker)
        if existing_article is not None:
            return existing_article, True
        if self.options.draft_mode == "shared_draft":
            shared = self._shared_draft(ticket_id)
            if shared is not None and marker in shared[1]:
                return f"shared_draft:{shared[0]}", True
            if shared is None:
                try:
                    return self._put_shared_draft(ticket_id, write_back), False
                except (AuthError, NotFound):
                    raise
                except PermanentError as exc:
                    if exc.status != 422:
                        raise
                    # 422: shared drafts are switched off for the ticket's group → internal note.
        return self._post_internal_article(ticket_id, write_back), False

    def _shared_draft(self, ticket_id: str) -> tuple[str, str] | None:
        """(id, body) of the ticket's shared draft, or None when it has none."""
        try:
            data = self._call("GET", f"/api/v1/tickets/{ticket_id}/shared_draft")
        except NotFound:
            return None
        if not isinstance(data, dict) or data.get("shared_draft_id") is None:
            return None
        draft_id = str(data["shared_draft_id"])
        zoom = ((data.get("assets") or {}).get("TicketSharedDraftZoom") or {}).get(draft_id) or {}
        body = (zoom.get("new_article") or {}).get("body") or ""
        return draft_id, str(body)

    def _put_shared_draft(self, ticket_id: str, write_back: WriteBack) -> str:
        payload = {
            "new_article": {
                "body": text_to_html(note_body(write_back)),
                "content_type": "text/html",
                "internal": True,
                "type": "note",
                "ticket_id": int(ticket_id),
            },
            "ticket_attributes": {},
        }
        # PUT overwrites the (single) shared draft: re-sending after a timeout leaves one draft.
        data = self._call("PUT", f"/api/v1/tickets/{ticket_id}/shared_draft", json=payload)
        answer = expect(data, dict, "PUT shared_draft", self.name)
        return f"shared_draft:{answer.get('shared_draft_id')}"

    def _find_internal_article(self, ticket_id: str, marker: str) -> str | None:
        internal = (article for article in self._articles(ticket_id) if article.get("internal"))
        return find_marked(internal, marker)

    def _post_internal_article(self, ticket_id: str, write_back: WriteBack) -> str:
        payload = {
            "ticket_id": int(ticket_id),
            "body": note_body(write_back),
            "content_type": "text/plain",
            "type": "note",
            "internal": True,
            "sender": "Agent",
        }
        data = self._call("POST", "/api/v1/ticket_articles", json=payload, retry=False)
        return str(expect(data, dict, "POST /api/v1/ticket_articles", self.name).get("id"))

    # --- check ---------------------------------------------------------------------------------

    def check(self) -> str:
        me = expect(self._call("GET", "/api/v1/users/me"), dict, "GET /api/v1/users/me", self.name)
        who = me.get("email") or me.get("login") or f"user {me.get('id')}"
        return f"Zammad at {self.http.client.base_url} as {who}"


def from_config(
    name: str, options: dict[str, Any], secrets: dict[str, SecretStr], http: SourceHttp | None
) -> ZammadConnector:
    """Build for the registry: options per :class:`ZammadOptions`, secret ``token`` (an access token).

    ``http`` is the source's client (base URL, timeout, request budget from the sources file); the
    token goes on it as ``Authorization: Token token=…``. The connector owns it from here.
    """
    opts = parse_options(ZammadOptions, options, kind="zammad", source=name)
    http = require_http(http, kind="zammad", example="https://helpdesk.example.com", source=name)
    token = require_secret(secrets, "token", kind="zammad", source=name)
    http.client.headers["Authorization"] = f"Token token={token}"
    return owning(ZammadConnector(name, http, **opts.model_dump()))
