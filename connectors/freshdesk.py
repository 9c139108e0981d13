"""Freshdesk API v2 connector: tickets by ``updated_since``, conversations, private notes, tags/fields.

Endpoints (https://developers.freshdesk.com/api/):

* pull — ``GET /api/v2/tickets?updated_since=…&order_by=updated_at&order_type=asc&per_page=…&page=…
  &include=requester``, then ``GET /api/v2/tickets/{id}/conversations`` per ticket (``Link: rel="next"``
  pages). The list endpoint caps how far page numbers go, so the cursor (see
  :mod:`connectors.window_cursor`) restarts from the newest ``updated_at`` seen instead of paging one
  query forever, and remembers the ids already emitted at that second so ties are neither skipped nor
  re-read in a loop. ``updated_since`` is second-granular; the query reaches back ``overlap_seconds``
  (default 1 s) so it does not matter whether Freshdesk compares with ``>`` or ``>=``.
* push — ``GET /api/v2/tickets/{id}`` (tags now, and 404 for a missing ticket), ``PUT
  /api/v2/tickets/{id}`` with the union of tags and the mapped ``custom_fields``, then the draft as
  ``POST /api/v2/tickets/{id}/notes`` ``{"body": …, "private": true}`` unless a note holding the
  write-back's marker already exists (the POST is never retried blindly).
* check — ``GET /api/v2/agents/me``.

Auth: HTTP basic with the API key as user name and ``X`` as password. Rate limits are per plan and per
endpoint; every answer carries ``X-Ratelimit-Total`` / ``X-Ratelimit-Remaining`` (exposed as
:attr:`FreshdeskConnector.rate_limit`), a 429 carries ``Retry-After`` (honoured by :class:`SourceHttp`).
With ``reserve_requests`` set, the connector pauses ``reserve_pause_seconds`` once the remaining budget
falls to that reserve, leaving room for the agents' own use of the helpdesk.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import PermanentError, PullPage, WriteBack, WriteBackReceipt
from connectors.html_text import html_to_text, text_to_html
from connectors.http import SourceHttp
from connectors.saas_support import (
    HttpConnector,
    RateLimitStatus,
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
from ticketfleet.core.inbound import InboundMessage, InboundTicket
from ticketfleet.core.vocabulary import Channel, Role

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OUTBOUND_EMAIL = 10  # Freshdesk source value: the ticket was opened by an agent's outbound e-mail


class FreshdeskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # https://<account>.freshdesk.com — only needed when from_config builds the HTTP client itself.
    per_page: int = Field(default=100, ge=1, le=100)  # Freshdesk's maximum is 100
    # Where a source without a cursor starts. Without updated_since Freshdesk lists only 30 days.
    start: datetime = EPOCH
    overlap_seconds: float = Field(default=1.0, ge=0)
    # Page numbers Freshdesk serves on the list endpoint; only a page made entirely of ties pages on.
    max_page: int = Field(default=300, ge=1)
    # Ticket ``source`` values that are chat conversations (7 = Chat). Portal (2), e-mail (1),
    # phone (3), feedback widget (9) and outbound e-mail (10) are tickets.
    chat_sources: frozenset[int] = frozenset({7})
    # WriteBack field → Freshdesk custom field name, e.g. {"priority": "cf_tf_priority"}.
    field_map: dict[str, str] = Field(default_factory=dict)
    # Pause before the next request once X-Ratelimit-Remaining is at or below this (0 = never).
    reserve_requests: int = Field(default=0, ge=0)
    reserve_pause_seconds: float = Field(default=60.0, ge=0)


class FreshdeskConnector(HttpConnector):
    kind: ClassVar[str] = "freshdesk"

    def __init__(self, name: str, http: SourceHttp, **options: Any) -> None:
        super().__init__(name, http)
        self.options = FreshdeskOptions.model_validate(options)
        # The budget Freshdesk reported on the latest answer (None until one arrived).
        self.rate_limit: RateLimitStatus | None = None

    # --- HTTP ----------------------------------------------------------------------------------

    def _call(
        self, method: str, url: str, *, retry: bool = True, **kwargs: Any
    ) -> tuple[Any, httpx.Response]:
        reserve = self.options.reserve_requests
        left = self.rate_limit.remaining if self.rate_limit else None
        if reserve and left is not None and left <= reserve:
            self.http.sleep(self.options.reserve_pause_seconds)
            self.rate_limit = None  # the pause starts a new window; wait for fresh figures
        response = self.http.request(method, url, retry=retry, **kwargs)
        status = RateLimitStatus.from_headers(
            response.headers,
            total="X-Ratelimit-Total",
            remaining="X-Ratelimit-Remaining",
            used="X-Ratelimit-Used-CurrentRequest",
        )
        if status is not None:
            self.rate_limit = status
        return decode_json(response, self.name), response

    @staticmethod
    def _has_next(response: httpx.Response, count: int, per_page: int) -> bool:
        link = response.headers.get("Link")
        if link is not None:
            return 'rel="next"' in link
        return count >= per_page

    # --- pull ----------------------------------------------------------------------------------

    def _window_start(self, newest: datetime) -> datetime:
        return newest - timedelta(seconds=self.options.overlap_seconds)

    def pull(self, cursor: str | None) -> PullPage:
        opts = self.options
        state = WindowCursor.decode(cursor, source=self.name)
        bound, token = state.query(self._window_start)
        since = iso(bound or opts.start)

        def fetch(page: int) -> tuple[list[Any], bool]:
            params: dict[str, str | int] = {
                "updated_since": since,
                "order_by": "updated_at",
                "order_type": "asc",
                "per_page": opts.per_page,
                "page": page,
                "include": "requester",
            }
            data, response = self._call("GET", "/api/v2/tickets", params=params)
            rows = expect(data, list, "GET /api/v2/tickets", self.name)
            # At the last page Freshdesk serves, a full page may hide more rows behind the cap.
            at_cap = page >= opts.max_page and len(rows) >= opts.per_page
            return rows, at_cap or self._has_next(response, len(rows), opts.per_page)

        rows, next_token = read_page_with_lookback(fetch, token)
        hits, rejected = dated_hits(
            rows, lambda row: row["updated_at"], what="ticket without a usable id/updated_at"
        )
        fresh, after, more = state.advance(
            hits, next_token, window_start=self._window_start, page_size=opts.per_page
        )
        if after.token is not None and int(after.token) > opts.max_page:
            raise PermanentError(
                f"more than {opts.max_page * opts.per_page} tickets share updated_at "
                f"{iso(after.since) if after.since else '?'}; "
                f"Freshdesk serves no page beyond {opts.max_page}",
                source=self.name,
            )
        items = normalised(fresh, self._ticket, rejected)
        return PullPage(items=items, cursor=after.encode(), has_more=more, rejected=rejected)

    def _conversations(self, ticket_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            data, response = self._call(
                "GET", f"/api/v2/tickets/{ticket_id}/conversations", params={"per_page": 100, "page": page}
            )
            rows = expect(data, list, f"GET /api/v2/tickets/{ticket_id}/conversations", self.name)
            out.extend(r for r in rows if isinstance(r, dict))
            if not self._has_next(response, len(rows), 100):
                return out
            page += 1

    def _ticket(self, raw: dict[str, Any]) -> InboundTicket:
        ticket_id = str(raw["id"])
        requester_id = raw.get("requester_id")
        messages: list[InboundMessage] = []
        description = raw.get("description_text") or html_to_text(raw.get("description") or "")
        if description.strip():
            messages.append(
                InboundMessage(
                    role=Role.agent if raw.get("source") == OUTBOUND_EMAIL else Role.customer,
                    text=description,
                    external_id="description",
                    created_at=maybe_timestamp(raw.get("created_at")),
                )
            )
        for conv in self._conversations(ticket_id):
            if conv.get("private"):
                continue  # internal notes, our own drafts among them: never customer-visible text
            text = conv.get("body_text") or html_to_text(conv.get("body") or "")
            if not text.strip():
                continue
            from_customer = bool(conv.get("incoming")) or (
                requester_id is not None and conv.get("user_id") == requester_id
            )
            messages.append(
                InboundMessage(
                    role=Role.customer if from_customer else Role.agent,
                    text=text,
                    external_id=str(conv.get("id")),
                    created_at=maybe_timestamp(conv.get("created_at")),
                )
            )
        embedded = raw.get("requester")
        person: dict[str, Any] = embedded if isinstance(embedded, dict) else {}
        who = requester(person.get("name"), person.get("email"))
        return InboundTicket(
            external_id=ticket_id,
            source=self.name,
            channel=Channel.chat if raw.get("source") in self.options.chat_sources else Channel.ticket,
            subject=raw.get("subject"),
            requester=who,
            messages=messages,
        )

    # --- push ----------------------------------------------------------------------------------

    def push(self, write_back: WriteBack) -> WriteBackReceipt:
        ticket_id = write_back.ticket_external_id
        data, _ = self._call("GET", f"/api/v2/tickets/{ticket_id}")
        ticket = expect(data, dict, f"GET /api/v2/tickets/{ticket_id}", self.name)
        current_tags = set(ticket.get("tags") or [])
        fields = mapped_fields(write_back, self.options.field_map)
        update: dict[str, Any] = {}
        if not set(write_back.tags) <= current_tags:
            # PUT replaces the tag list, so send the union: the agents' tags stay.
            update["tags"] = sorted(current_tags | set(write_back.tags))
        current_fields = ticket.get("custom_fields") or {}
        if any(current_fields.get(k) != v for k, v in fields.items()):
            update["custom_fields"] = fields
        if update:
            self._call("PUT", f"/api/v2/tickets/{ticket_id}", json=update)  # idempotent: retry is safe
        note_id: str | None = None
        deduplicated = False
        if write_back.note is not None:
            note_id = self._find_note(ticket_id, write_back.marker)
            if note_id is not None:
                deduplicated = True
            else:
                body = text_to_html(note_body(write_back))
                created, _ = self._call(
                    "POST",
                    f"/api/v2/tickets/{ticket_id}/notes",
                    json={"body": body, "private": True},
                    retry=False,  # a POST that timed out may have landed: the caller re-checks instead
                )
                note_id = str(expect(created, dict, "POST notes", self.name).get("id"))
        return receipt(write_back, self.options.field_map, note_id=note_id, deduplicated=deduplicated)

    def _find_note(self, ticket_id: str, marker: str) -> str | None:
        return find_marked(self._conversations(ticket_id), marker, text_keys=("body_text", "body"))

    # --- check ---------------------------------------------------------------------------------

    def check(self) -> str:
        data, _ = self._call("GET", "/api/v2/agents/me")
        me = expect(data, dict, "GET /api/v2/agents/me", self.name)
        contact = me.get("contact") or {}
        who = contact.get("email") or contact.get("name") or f"agent {me.get('id')}"
        budget = f"; {self.rate_limit.describe()}" if self.rate_limit else ""
        return f"Freshdesk at {self.http.client.base_url} as {who}{budget}"


def from_config(
    name: str, options: dict[str, Any], secrets: dict[str, SecretStr], http: SourceHttp | None
) -> FreshdeskConnector:
    """Build for the registry: options per :class:`FreshdeskOptions`, secret ``api_key``.

    ``http`` is the source's client (base URL, timeout, request budget from the sources file); the
    API key goes on it as basic auth, user name = key, password = "X". The connector owns it from here.
    """
    opts = parse_options(FreshdeskOptions, options, kind="freshdesk", source=name)
    http = require_http(http, kind="freshdesk", example="https://acme.freshdesk.com", source=name)
    api_key = require_secret(secrets, "api_key", kind="freshdesk", source=name)
    http.client.auth = httpx.BasicAuth(api_key, "X")
    return owning(FreshdeskConnector(name, http, **opts.model_dump()))
