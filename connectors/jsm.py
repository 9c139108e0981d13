"""Jira Service Management (Cloud) connector: JQL search, request comments, internal comments, labels.

Endpoints:

* pull — ``POST /rest/api/3/search/jql`` with ``{"jql": "project = X AND updated >= \"yyyy/MM/dd HH:mm\"
  ORDER BY updated ASC", "fields": [...], "maxResults": n, "nextPageToken": …}``; the answer holds
  ``issues``, ``nextPageToken`` (absent or null on the last page, valid for 7 days) and ``isLast``.
  Then ``GET /rest/servicedeskapi/request/{id}/comment?start=&limit=`` per request (``isLastPage``):
  ``public: false`` comments are internal and skipped; the reporter's public comments are the
  customer's, other public comments the agents'. The description (Atlassian Document Format) is the
  first customer message.
* push — ``PUT /rest/api/3/issue/{id}`` ``{"update": {"labels": [{"add": tag}, …]}, "fields": {…}}``
  (idempotent; 404 → NotFound), then the draft as an internal comment ``POST
  /rest/servicedeskapi/request/{id}/comment`` ``{"body": …, "public": false}`` unless a comment holding
  the write-back's marker exists (the POST is never retried blindly).
* check — ``GET /rest/api/3/myself``.

**JQL compares whole minutes, in the API user's time zone.** ``updated >= "2026/01/05 10:07"`` includes
all of 10:07, so the cursor's query starts at the minute of (newest ``updated`` seen − ``overlap_seconds``,
default 60 s): it always re-reads at least the last minute, and the cursor's seen-set (id → exact
``updated``) drops what was already emitted; a request updated again within that minute has a newer
``updated`` and is emitted again. What still slips through twice (say, after a lost cursor) is absorbed
by the idempotent ingest. The minute is written in the user's time zone: ``timezone`` when configured,
else the ``timeZone`` of ``/rest/api/3/myself`` (looked up once).

Auth: HTTP basic with the account's e-mail and an API token. Permissions: Browse projects, Add comments,
Edit issues (labels, fields) and a Service Management agent licence (internal comments).
Atlassian answers 429 with ``Retry-After`` (honoured by :class:`SourceHttp`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from connectors.base import BadResponse, ConfigError, PermanentError, PullPage, WriteBack, WriteBackReceipt
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
from connectors.window_cursor import WindowCursor, maybe_timestamp
from ticketfleet.core.inbound import InboundMessage, InboundTicket
from ticketfleet.core.vocabulary import Channel, Role

# Default start for a source without a cursor: before any Jira Cloud issue, and a date JQL takes.
DEFAULT_START = datetime(2000, 1, 1, tzinfo=UTC)
SEARCH_FIELDS = ["summary", "description", "reporter", "created", "updated", "labels", "status"]
_BLOCK_NODES = {"paragraph", "heading", "listItem", "blockquote", "codeBlock", "rule", "tableRow"}


class JsmOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str  # the service project's key, e.g. "SUP"
    email: str | None = None  # the API user's e-mail (basic auth user name) — only for from_config
    jql_filter: str | None = None  # extra JQL ANDed to the project and time condition
    max_results: int = Field(default=50, ge=1, le=100)
    comment_page_size: int = Field(default=50, ge=1, le=100)
    start: datetime = DEFAULT_START
    overlap_seconds: float = Field(default=60.0, ge=0)
    timezone: str | None = None  # IANA name of the API user's time zone; None: ask /myself
    # WriteBack field → Jira field id, e.g. {"priority": "customfield_10050"}.
    field_map: dict[str, str] = Field(default_factory=dict)

    @field_validator("project")
    @classmethod
    def _project_key(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,254}", value):
            raise ValueError(f"not a Jira project key: {value!r} (upper-case letters, digits, _)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value


def adf_to_text(node: Any) -> str:
    """Plain text of an Atlassian Document Format tree (or a plain string, as API v2 returns)."""
    if isinstance(node, str):
        return node.strip()
    parts: list[str] = []

    def walk(item: Any) -> None:
        if not isinstance(item, dict):
            return
        kind = item.get("type")
        if kind == "text":
            parts.append(str(item.get("text") or ""))
        elif kind == "hardBreak":
            parts.append("\n")
        elif kind in ("mention", "emoji"):
            parts.append(str((item.get("attrs") or {}).get("text") or ""))
        for child in item.get("content") or []:
            walk(child)
        if kind in _BLOCK_NODES:
            parts.append("\n")

    walk(node)
    # Nested blocks (a paragraph in a list item) each end a line: one line break per block is enough.
    return re.sub(r"\n{2,}", "\n", "".join(parts)).strip()


class JsmConnector(HttpConnector):
    kind: ClassVar[str] = "jsm"

    def __init__(self, name: str, http: SourceHttp, **options: Any) -> None:
        super().__init__(name, http)
        self.options = JsmOptions.model_validate(options)
        self._zone: ZoneInfo | None = ZoneInfo(self.options.timezone) if self.options.timezone else None
        self.rate_limit: RateLimitStatus | None = None

    def _call(self, method: str, url: str, *, retry: bool = True, **kwargs: Any) -> Any:
        response = self.http.request(method, url, retry=retry, **kwargs)
        status = RateLimitStatus.from_headers(
            response.headers, total="X-RateLimit-Limit", remaining="X-RateLimit-Remaining"
        )
        if status is not None:
            self.rate_limit = status
        return decode_json(response, self.name)

    def _myself(self) -> dict[str, Any]:
        data = self._call("GET", "/rest/api/3/myself")
        return expect(data, dict, "GET /rest/api/3/myself", self.name)

    def zone(self) -> ZoneInfo:
        """The time zone JQL dates are read in: configured, else the API user's own."""
        if self._zone is None:
            name = self._myself().get("timeZone") or "UTC"
            try:
                self._zone = ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise BadResponse(f"/myself names an unknown time zone {name!r}", source=self.name) from exc
        return self._zone

    # --- pull ----------------------------------------------------------------------------------

    def _window_start(self, newest: datetime) -> datetime:
        # JQL compares minutes: the bound is a whole minute at or before newest − overlap.
        return (newest - timedelta(seconds=self.options.overlap_seconds)).replace(second=0, microsecond=0)

    def jql(self, bound: datetime) -> str:
        minute = bound.astimezone(self.zone()).strftime("%Y/%m/%d %H:%M")
        extra = f" AND ({self.options.jql_filter})" if self.options.jql_filter else ""
        return f'project = {self.options.project}{extra} AND updated >= "{minute}" ORDER BY updated ASC'

    def _search(self, bound: datetime, token: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "jql": self.jql(bound),
            "fields": SEARCH_FIELDS,
            "maxResults": self.options.max_results,
        }
        if token is not None:
            body["nextPageToken"] = token
        data = self._call("POST", "/rest/api/3/search/jql", json=body)
        return expect(data, dict, "POST /rest/api/3/search/jql", self.name)

    def pull(self, cursor: str | None) -> PullPage:
        opts = self.options
        state = WindowCursor.decode(cursor, source=self.name)
        bound, token = state.query(self._window_start)
        try:
            answer = self._search(bound or opts.start, token)
        except PermanentError as exc:
            if token is None or exc.status != 400:
                raise
            # An expired or foreign nextPageToken: restart the query from the cursor's window.
            state = WindowCursor(since=state.since, seen=state.seen)
            bound, token = state.query(self._window_start)
            answer = self._search(bound or opts.start, None)
        issues = expect(answer.get("issues") or [], list, "search/jql issues", self.name)
        hits, rejected = dated_hits(
            issues, lambda issue: issue["fields"]["updated"], what="issue without a usable id/updated"
        )
        next_token = answer.get("nextPageToken")
        if answer.get("isLast") is True or not next_token:
            next_token = None
        fresh, after, more = state.advance(
            hits, next_token, window_start=self._window_start, page_size=opts.max_results
        )
        items = normalised(fresh, self._ticket, rejected)
        return PullPage(items=items, cursor=after.encode(), has_more=more, rejected=rejected)

    def _comments(self, issue_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start = 0
        limit = self.options.comment_page_size
        while True:
            data = self._call(
                "GET",
                f"/rest/servicedeskapi/request/{issue_id}/comment",
                params={"start": start, "limit": limit},
            )
            page = expect(data, dict, f"GET request/{issue_id}/comment", self.name)
            values = [v for v in page.get("values") or [] if isinstance(v, dict)]
            out.extend(values)
            if page.get("isLastPage", True) or not values:
                return out
            start += len(values)

    def _ticket(self, issue: dict[str, Any]) -> InboundTicket:
        fields = issue.get("fields") or {}
        reporter = fields.get("reporter") or {}
        messages: list[InboundMessage] = []
        description = adf_to_text(fields.get("description") or "")
        if description:
            messages.append(
                InboundMessage(
                    role=Role.customer,
                    text=description,
                    external_id="description",
                    created_at=maybe_timestamp(fields.get("created")),
                )
            )
        for comment in self._comments(str(issue["id"])):
            if not comment.get("public", False):
                continue  # internal comments: agents' notes and our own drafts
            text = str(comment.get("body") or "").strip()
            if not text:
                continue
            author = comment.get("author") or {}
            by_reporter = bool(reporter.get("accountId")) and author.get("accountId") == reporter.get(
                "accountId"
            )
            messages.append(
                InboundMessage(
                    role=Role.customer if by_reporter else Role.agent,
                    text=text,
                    external_id=str(comment.get("id")),
                    created_at=maybe_timestamp((comment.get("created") or {}).get("iso8601")),
                )
            )
        who = requester(reporter.get("displayName"), reporter.get("emailAddress"))
        return InboundTicket(
            external_id=str(issue["id"]),
            source=self.name,
            channel=Channel.ticket,
            subject=fields.get("summary"),
            requester=who,
            messages=messages,
        )

    # --- push ----------------------------------------------------------------------------------

    def push(self, write_back: WriteBack) -> WriteBackReceipt:
        issue_id = write_back.ticket_external_id
        fields = mapped_fields(write_back, self.options.field_map)
        edit: dict[str, Any] = {}
        if write_back.tags:
            edit["update"] = {"labels": [{"add": tag} for tag in write_back.tags]}
        if fields:
            edit["fields"] = fields
        if edit:
            self._call("PUT", f"/rest/api/3/issue/{issue_id}", json=edit)  # label add is idempotent
        note_id: str | None = None
        deduplicated = False
        if write_back.note is not None:
            note_id = self._find_comment(issue_id, write_back.marker)
            if note_id is not None:
                deduplicated = True
            else:
                created = self._call(
                    "POST",
                    f"/rest/servicedeskapi/request/{issue_id}/comment",
                    json={"body": note_body(write_back), "public": False},
                    retry=False,  # a POST that timed out may have landed: the next push re-checks
                )
                note_id = str(expect(created, dict, "POST request comment", self.name).get("id"))
        return receipt(write_back, self.options.field_map, note_id=note_id, deduplicated=deduplicated)

    def _find_comment(self, issue_id: str, marker: str) -> str | None:
        return find_marked(self._comments(issue_id), marker)

    # --- check ---------------------------------------------------------------------------------

    def check(self) -> str:
        me = self._myself()
        who = me.get("emailAddress") or me.get("displayName") or me.get("accountId")
        zone = me.get("timeZone") or "UTC"
        return f"Jira Service Management at {self.http.client.base_url} as {who} (time zone {zone})"


def from_config(
    name: str, options: dict[str, Any], secrets: dict[str, SecretStr], http: SourceHttp | None
) -> JsmConnector:
    """Build for the registry: options per :class:`JsmOptions` (``project``, ``email``), secret ``api_token``.

    ``http`` is the source's client (base URL, timeout, request budget from the sources file); e-mail
    and API token go on it as basic auth. The connector owns it from here.
    """
    opts = parse_options(JsmOptions, options, kind="jsm", source=name)
    http = require_http(http, kind="jsm", example="https://acme.atlassian.net", source=name)
    if not opts.email:
        raise ConfigError("jsm options: email (the API user's account e-mail) is required", source=name)
    token = require_secret(secrets, "api_token", kind="jsm", source=name)
    http.client.auth = httpx.BasicAuth(opts.email, token)
    return owning(JsmConnector(name, http, **opts.model_dump()))
