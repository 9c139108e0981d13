"""Request Tracker 5 (REST 2.0) connector: tickets by LastUpdated, threads from history, drafts as comments.

Why one module past 400 lines: it is one protocol client. The TicketSQL search, the overlap-window
cursor, the history walk and the comment/custom-field push all speak RT's REST 2.0 dialect and share
its quirks (second-granularity LastUpdated, the API user's timezone, hypermedia refs). What is not
RT's protocol already lives apart: decoding attachment content (:mod:`connectors.rt_content`).

Pull
    ``GET /REST/2.0/tickets?query=<TicketSQL>&orderby=LastUpdated&order=ASC&orderby=id&order=ASC
    &page=1&per_page=N&fields=…`` finds tickets changed since the cursor; for each, ``/ticket/{id}/history``
    gives the transactions and ``/ticket/{id}/attachments`` their content (see :mod:`connectors.rt_content`).
    Create and Correspond transactions are the conversation — the customer's when the transaction's
    creator is one of the ticket's requestors, an agent's otherwise; Comment transactions are internal
    and never part of the thread.

    RT's LastUpdated has second granularity and a transaction may commit a moment after it stamped
    the ticket, so the cursor never trusts "newer than the last timestamp": it re-reads an overlap
    window (``overlap_seconds``) behind the newest LastUpdated seen and remembers which version of each
    ticket in that window it already returned (``seen``: id → LastUpdated). The query excludes exactly
    those versions, so every page is page 1 of what is still unseen — no offsets that shift when a
    ticket is updated mid-way, no page that repeats forever when many tickets share one second — and
    a ticket updated again (new LastUpdated) comes back. A version read while its LastUpdated second was
    still open ("fresh") could change again within that second without a new LastUpdated, so fresh
    versions are dropped from ``seen`` at the end of each pass and returned once more. Anything
    returned twice is absorbed by the idempotent ingest. Details: docs/connectors-rt.md.

Push
    The draft goes in as a text/plain *comment* (``POST /ticket/{id}/comment``) — never a correspondence,
    which RT would mail to the requestor. Its body ends with :attr:`WriteBack.marker`; before posting, the
    ticket's attachments are searched for that marker, so a retried push never comments twice.
    RT has no tags: labels (``WriteBack.fields``, and the ``tf-lang-…``/``tf-intent-…`` tags) go to the
    custom fields named in ``custom_fields`` via ``PUT /ticket/{id}`` with ``CustomFields``.

Auth: an RT auth token (``Authorization: token …``) or a user name and password (HTTP basic).
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from connectors.base import (
    AuthError,
    BadResponse,
    ConfigError,
    Connector,
    NotFound,
    PermanentError,
    PullPage,
    WriteBack,
    WriteBackReceipt,
)
from connectors.http import RequestBudget, SourceHttp
from connectors.rt_content import attachment_text, body_part, declared_length
from ticketfleet.core.errors import describe_validation_error
from ticketfleet.core.inbound import InboundMessage, InboundTicket, Requester
from ticketfleet.core.schemas import Role
from ticketfleet.core.vocabulary import Channel

REST_PATH = "/REST/2.0"
# Tag prefixes (the write-back convention for every source) → the label names custom fields are keyed by.
TAG_FIELDS = {
    "tf-lang-": "language",
    "tf-sentiment-": "sentiment",
    "tf-intent-": "intent",
    "tf-priority-": "priority",
}
TICKET_FIELDS = "Subject,LastUpdated,Created,Status,Queue,Requestor"
MESSAGE_TYPES = ("Create", "Correspond")
# Past this length a search goes in a POST body (RT accepts the same parameters there) instead of the URL.
MAX_QUERY_IN_URL = 4000
CURSOR_VERSION = 1
# A ticket read less than this long after its LastUpdated (by the server's clock) may still change within
# that same second; it is returned once more at the end of the pass (see RtConnector.pull).
SETTLE_SECONDS = 2


class RtOptions(BaseModel):
    """The ``options`` of an ``rt`` source in the sources file."""

    model_config = ConfigDict(extra="forbid")

    # RT's web root, e.g. https://rt.example.com or https://example.com/rt (REST 2.0 lives below it).
    url: str | None = None
    # Basic auth user (with the ``password`` secret); with a ``token`` secret it is not needed.
    username: str | None = None
    # Queues to pull from (names); empty: every queue the API user can see.
    queues: list[str] = Field(default_factory=list)
    # Extra TicketSQL ANDed to the search, e.g. "Status != 'resolved'".
    query: str | None = None
    # Label name (language, sentiment, intent, priority) → RT custom field name (or id) to write it to.
    custom_fields: dict[str, str] = Field(default_factory=dict)
    page_size: int = Field(default=50, ge=1, le=100)  # REST 2.0 caps per_page at 100
    # How far behind the newest LastUpdated each pull looks again (late commits, same-second updates).
    overlap_seconds: int = Field(default=5, ge=SETTLE_SECONDS, le=3600)
    # First pull: tickets updated at or after this instant (default: all of them).
    start: datetime | None = None
    # RT reads the dates in a search in the API user's timezone (their preference, else RT's $Timezone).
    timezone: str = "UTC"
    # A ticket an agent opened for a customer (creator not a requestor): is its first message the customer's?
    agent_created_as_customer: bool = True
    # Most ticket versions the cursor excludes by id; past it (a bulk update of many tickets within the
    # window) the oldest give way to a (LastUpdated, id) floor, which keeps queries short.
    max_seen: int = Field(default=500, ge=1, le=5000)
    timeout: float = Field(default=30.0, gt=0)
    requests_per_minute: float | None = Field(default=None, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {value!r}")
        return value.rstrip("/") if value else value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @field_validator("custom_fields")
    @classmethod
    def _known_labels(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(TAG_FIELDS.values()))
        if unknown:
            raise ValueError(
                f"custom_fields: unknown label(s) {unknown}; expected some of {sorted(TAG_FIELDS.values())}"
            )
        return value


def _config_error(name: str, exc: ValidationError) -> ConfigError:
    problems = describe_validation_error(exc, whole="options")
    return ConfigError(f"invalid rt options: {problems}", source=name)


def parse_options(name: str, options: Mapping[str, Any]) -> RtOptions:
    try:
        return RtOptions.model_validate(dict(options))
    except ValidationError as exc:
        raise _config_error(name, exc) from exc


def from_config(
    name: str,
    options: dict[str, Any],
    secrets: dict[str, SecretStr],
    http: SourceHttp | None,
) -> RtConnector:
    """Build from the sources file. Secrets: ``token`` (``token_env``, an RT auth token), or ``password``
    (``password_env``) with ``options.username``.

    The fleet's registry passes ``http`` built from the source's ``base_url`` (RT's web root),
    ``timeout_seconds`` and ``requests_per_minute``, without credentials: they are added here. Without
    it (a script, a test) the client is built from ``options.url``, ``timeout`` and ``requests_per_minute``.
    """
    parsed = parse_options(name, options)
    headers, auth = _credentials(name, parsed, secrets)
    if http is None:
        if not parsed.url:
            raise ConfigError("rt source needs base_url (or options.url): RT's web root", source=name)
        client = httpx.Client(base_url=parsed.url + REST_PATH, timeout=parsed.timeout)
        http = SourceHttp(
            client, source=name, budget=RequestBudget(requests_per_minute=parsed.requests_per_minute)
        )
    http.client.headers.update(headers)
    if auth is not None:
        http.client.auth = auth
    return RtConnector(name, http, **parsed.model_dump(exclude_none=True))


def _credentials(
    name: str, parsed: RtOptions, secrets: Mapping[str, SecretStr]
) -> tuple[dict[str, str], httpx.BasicAuth | None]:
    headers = {"Accept": "application/json"}
    if "token" in secrets:
        headers["Authorization"] = f"token {secrets['token'].get_secret_value()}"
        return headers, None
    if "password" in secrets:
        if not parsed.username:
            raise ConfigError("rt source with a password secret needs options.username", source=name)
        return headers, httpx.BasicAuth(parsed.username, secrets["password"].get_secret_value())
    raise ConfigError(
        "rt source needs a 'token' secret (token_env) or a 'password' secret (password_env)", source=name
    )


class _Cursor(BaseModel):
    """Newest LastUpdated returned so far, and the versions already returned inside the overlap window."""

    model_config = ConfigDict(extra="forbid")

    v: int = CURSOR_VERSION
    t: datetime | None = None
    seen: dict[str, datetime] = Field(default_factory=dict)
    # Ids in ``seen`` whose version was read while its LastUpdated second was not yet over.
    fresh: list[str] = Field(default_factory=list)
    # Everything at or before (floor_t, floor_id) in (LastUpdated, id) order was returned already.
    floor_t: datetime | None = None
    floor_id: int | None = None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _rt_time(value: Any) -> datetime | None:
    """RT's REST 2.0 timestamps ("2026-11-30T00:26:25Z"); None for empty or unset ones."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return _utc(parsed)


def _server_time(response: httpx.Response) -> datetime:
    """The RT server's clock from the Date header (so client clock skew does not matter), else ours."""
    try:
        return _utc(email.utils.parsedate_to_datetime(response.headers["Date"]))
    except (KeyError, TypeError, ValueError):
        return datetime.now(UTC)


def _sql_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class RtConnector(Connector):
    kind: ClassVar[str] = "rt"

    def __init__(self, name: str, http: SourceHttp, **options: Any) -> None:
        super().__init__(name)
        self.http = http
        self.options = parse_options(name, options)
        self._zone = ZoneInfo(self.options.timezone)
        # Paths are relative to REST 2.0; a client whose base URL is RT's web root gets the prefix added.
        base_path = http.client.base_url.path.rstrip("/")
        self._api_prefix = "" if base_path.endswith(REST_PATH) else REST_PATH.lstrip("/") + "/"

    # --- check ----------------------------------------------------------------------------------

    def check(self) -> str:
        about = self._get("rt")
        version = about.get("Version") if isinstance(about, dict) else None
        if not version:
            raise BadResponse("GET /rt: no Version in the answer", source=self.name)
        return f"Request Tracker {version} at {self.http.client.base_url}"

    # --- pull -----------------------------------------------------------------------------------

    def pull(self, cursor: str | None) -> PullPage:
        state = self._read_cursor(cursor)
        found, server_now = self._search(state)
        items = found.get("items")
        if not isinstance(items, list):
            raise BadResponse("GET /tickets: answer has no 'items' list", source=self.name)

        page = PullPage()
        newest = state.t
        seen = dict(state.seen)
        fresh = set(state.fresh)
        settled_before = server_now - timedelta(seconds=SETTLE_SECONDS)
        for raw in items:
            ticket_id, updated = self._ticket_key(raw)
            newest = updated if newest is None or updated > newest else newest
            # Rejected tickets count as seen too: their version is never asked for again.
            seen[ticket_id] = updated
            if updated > settled_before:
                fresh.add(ticket_id)
            else:
                fresh.discard(ticket_id)
            try:
                page.items.append(self._ticket(raw))
            except ValidationError as exc:
                page.rejected.append((ticket_id, describe_validation_error(exc, whole="ticket")))
            except (BadResponse, NotFound) as exc:
                page.rejected.append((ticket_id, str(exc)))

        total = found.get("total")
        page.has_more = total > len(items) if isinstance(total, int) else len(items) >= self.options.page_size
        if not page.has_more:
            # End of this pass: versions seen while their second was still open may have changed since
            # without a new LastUpdated. Stop excluding them, so the next pull returns them once more.
            for ticket_id in fresh:
                seen.pop(ticket_id, None)
            fresh = set()
        floor_t, floor_id = state.floor_t, state.floor_id
        if newest is not None:
            horizon = newest - timedelta(seconds=self.options.overlap_seconds)
            seen = {tid: at for tid, at in seen.items() if at >= horizon}
            if floor_t is not None and floor_t < horizon:
                floor_t = floor_id = None  # the window alone keeps those out now
        if len(seen) > self.options.max_seen:
            ordered = sorted(seen.items(), key=lambda kv: (kv[1], int(kv[0])))
            evicted = ordered[: len(ordered) - self.options.max_seen]
            seen = dict(ordered[len(evicted) :])
            floor_t, floor_id = evicted[-1][1], int(evicted[-1][0])
        fresh &= set(seen)
        page.cursor = _Cursor(
            t=newest, seen=seen, fresh=sorted(fresh, key=int), floor_t=floor_t, floor_id=floor_id
        ).model_dump_json()
        return page

    def _read_cursor(self, cursor: str | None) -> _Cursor:
        if cursor is None:
            return _Cursor(t=_utc(self.options.start) if self.options.start else None)
        try:
            return _Cursor.model_validate_json(cursor)
        except ValidationError as exc:
            problems = describe_validation_error(exc, whole="cursor")
            raise ConfigError(
                f"stored cursor is not an rt cursor ({problems}): {cursor[:120]!r}", source=self.name
            ) from exc

    def _local(self, value: datetime) -> str:
        """A UTC instant as RT reads a search date: wall time in the API user's timezone, to the second."""
        return _utc(value).astimezone(self._zone).strftime("%Y-%m-%d %H:%M:%S")

    def search_query(self, state: _Cursor) -> str:
        """The TicketSQL of one pull (public so a test can read what a cursor asks RT for)."""
        clauses: list[str] = []
        if self.options.queues:
            clauses.append("(" + " OR ".join(f"Queue = {_sql_quote(q)}" for q in self.options.queues) + ")")
        if self.options.query:
            clauses.append(f"({self.options.query})")
        if state.t is not None:
            since = state.t - timedelta(seconds=self.options.overlap_seconds)
            clauses.append(f"LastUpdated >= {_sql_quote(self._local(since))}")
        if state.floor_t is not None and state.floor_id is not None:
            floor = _sql_quote(self._local(state.floor_t))
            clauses.append(f"(LastUpdated > {floor} OR (LastUpdated >= {floor} AND id > {state.floor_id}))")
        for ticket_id, updated in sorted(state.seen.items(), key=lambda kv: int(kv[0])):
            # This version was returned already; a later update (LastUpdated past it) brings it back.
            clauses.append(f"(id != {int(ticket_id)} OR LastUpdated > {_sql_quote(self._local(updated))})")
        return " AND ".join(clauses) if clauses else "id > 0"

    def _search(self, state: _Cursor) -> tuple[dict[str, Any], datetime]:
        query = self.search_query(state)
        params: list[tuple[str, str | int]] = [
            ("query", query),
            ("orderby", "LastUpdated"),
            ("order", "ASC"),
            ("orderby", "id"),
            ("order", "ASC"),
            ("page", 1),
            ("per_page", self.options.page_size),
            ("fields", TICKET_FIELDS),
            ("fields[Requestor]", "EmailAddress,RealName,Name"),
            ("fields[Queue]", "Name"),
        ]
        if len(query) > MAX_QUERY_IN_URL:
            # A search is safe to repeat, so the POST form of it keeps the usual retries.
            response = self.http.request("POST", self._url("tickets"), data=_merge_params(params))
        else:
            response = self.http.request("GET", self._url("tickets"), params=params)
        try:
            found = response.json()
        except ValueError as exc:
            raise BadResponse(f"GET /tickets: malformed JSON ({exc})", source=self.name) from exc
        if not isinstance(found, dict):
            raise BadResponse("GET /tickets: expected a JSON object", source=self.name)
        return found, _server_time(response)

    def _ticket_key(self, raw: Any) -> tuple[str, datetime]:
        if not isinstance(raw, dict) or raw.get("id") in (None, ""):
            raise BadResponse(f"GET /tickets: item without an id: {str(raw)[:200]}", source=self.name)
        updated = _rt_time(raw.get("LastUpdated"))
        if updated is None:
            raise BadResponse(
                f"GET /tickets: ticket {raw.get('id')} has no LastUpdated (was it asked for in fields?)",
                source=self.name,
            )
        return str(raw["id"]), updated

    def _ticket(self, raw: dict[str, Any]) -> InboundTicket:
        ticket_id = str(raw["id"])
        requestors = [r for r in raw.get("Requestor") or [] if isinstance(r, dict)]
        identities = {
            str(value).strip().lower()
            for r in requestors
            for value in (r.get("id"), r.get("Name"), r.get("EmailAddress"))
            if value
        }
        messages = self._messages(ticket_id, identities, subject=str(raw.get("Subject") or ""))
        first = requestors[0] if requestors else None
        requester = (
            Requester(email=first.get("EmailAddress") or None, name=first.get("RealName") or None)
            if first
            else None
        )
        return InboundTicket(
            external_id=ticket_id,
            source=self.name,
            channel=Channel.ticket,
            subject=raw.get("Subject") or None,
            requester=requester,
            messages=messages,
        )

    def _messages(self, ticket_id: str, requestors: set[str], *, subject: str) -> list[InboundMessage]:
        transactions = [
            t
            for t in self._collection(f"ticket/{ticket_id}/history", TRANSACTION_PARAMS)
            if t.get("Type") in MESSAGE_TYPES
        ]
        if not transactions:
            return []
        parts: dict[str, list[dict[str, Any]]] = {}
        for attachment in self._collection(f"ticket/{ticket_id}/attachments", ATTACHMENT_PARAMS):
            parts.setdefault(_ref_id(attachment.get("TransactionId")), []).append(attachment)

        messages: list[InboundMessage] = []
        for txn in transactions:
            txn_id = str(txn.get("id"))
            creator = txn.get("Creator")
            by_requestor = bool(_identities(creator) & requestors)
            role: Role
            if txn.get("Type") == "Create":
                role = Role.customer if by_requestor or self.options.agent_created_as_customer else Role.agent
            else:
                role = Role.customer if by_requestor else Role.agent
            text = self._body(parts.get(txn_id, []))
            if not text and txn.get("Type") == "Create" and subject.strip():
                text = subject.strip()  # a ticket opened with a subject only: the subject is the request
            if not text:
                continue
            messages.append(
                InboundMessage(
                    role=role, text=text, external_id=txn_id, created_at=_rt_time(txn.get("Created"))
                )
            )
        return messages

    def _body(self, attachments: list[dict[str, Any]]) -> str:
        part = body_part(attachments)
        if part is None:
            return ""
        text = attachment_text(part)
        if not text and declared_length(part) > 0 and part.get("id"):
            # Content not inlined in the collection (e.g. stored externally): fetch it, base64-encoded.
            single = self._get(f"attachment/{part['id']}")
            if isinstance(single, dict):
                try:
                    text = attachment_text({**part, **single}, base64_content=True)
                except ValueError as exc:
                    raise BadResponse(f"attachment {part['id']}: {exc}", source=self.name) from exc
        return text

    # --- push -----------------------------------------------------------------------------------

    def push(self, write_back: WriteBack) -> WriteBackReceipt:
        ticket_id = write_back.ticket_external_id
        if not ticket_id.isdigit():
            raise NotFound(f"ticket {ticket_id!r}: RT ticket ids are numbers", source=self.name)
        ticket = self._get(f"ticket/{ticket_id}")  # 404 → NotFound before anything is written
        if not isinstance(ticket, dict):
            raise BadResponse(f"GET /ticket/{ticket_id}: expected a JSON object", source=self.name)
        receipt = WriteBackReceipt()
        receipt.fields_applied = self._apply_fields(ticket_id, ticket, write_back)
        receipt.tags_applied = [
            tag
            for tag in write_back.tags
            if (label := _tag_label(tag)) is not None and label[0] in receipt.fields_applied
        ]
        if write_back.note is not None:
            existing = self._find_marker(ticket_id, write_back.marker)
            if existing is not None:
                receipt.note_id = existing
                receipt.deduplicated = True
            else:
                receipt.note_id = self._comment(ticket_id, f"{write_back.note}\n\n{write_back.marker}")
        return receipt

    def labels_for(self, write_back: WriteBack) -> dict[str, str]:
        """Custom field name → value for a write-back: tags first, explicit fields win."""
        values: dict[str, str] = {}
        for tag in write_back.tags:
            label = _tag_label(tag)
            if label is not None:
                values[label[0]] = label[1]
        values.update(write_back.fields)
        return {
            self.options.custom_fields[label]: value
            for label, value in values.items()
            if label in self.options.custom_fields
        }

    def _apply_fields(self, ticket_id: str, ticket: dict[str, Any], write_back: WriteBack) -> dict[str, str]:
        wanted = self.labels_for(write_back)
        if not wanted:
            return {}
        current = _custom_field_values(ticket)
        missing = [name for name in wanted if name.lower() not in current]
        if missing:
            # RT ignores unknown custom fields silently; say which configuration is wrong instead.
            raise ConfigError(
                f"ticket {ticket_id}: custom field(s) {missing} do not apply to its queue or are not "
                "visible to the API user (RT needs SeeCustomField and ModifyCustomField on them)",
                source=self.name,
            )
        changes = {name: value for name, value in wanted.items() if current[name.lower()] != [value]}
        if changes:
            messages = self.http.json("PUT", self._url(f"ticket/{ticket_id}"), json={"CustomFields": changes})
            self._verify_fields(ticket_id, changes, messages)
        by_field = {v: k for k, v in self.options.custom_fields.items()}
        return {by_field[name]: value for name, value in wanted.items()}

    def _verify_fields(self, ticket_id: str, changes: dict[str, str], messages: Any) -> None:
        """RT answers 200 with a list of messages even when it refused a value (no ModifyCustomField,
        a value the field's pattern rejects); read the ticket back so a refusal is an error, not a lie."""
        after = _custom_field_values(self._get(f"ticket/{ticket_id}"))
        refused = sorted(name for name, value in changes.items() if after.get(name.lower()) != [value])
        if not refused:
            return
        said = "; ".join(str(m) for m in messages) if isinstance(messages, list) else str(messages)
        error = AuthError if "permission" in said.lower() else PermanentError
        raise error(
            f"ticket {ticket_id}: RT did not set custom field(s) {refused} (it said: {said[:300]}); "
            "the API user needs ModifyCustomField on them",
            source=self.name,
        )

    def _find_marker(self, ticket_id: str, marker: str) -> str | None:
        """The transaction id of an earlier note carrying ``marker``, if the ticket has one."""
        for attachment in self._collection(f"ticket/{ticket_id}/attachments", MARKER_PARAMS):
            content = attachment.get("Content")
            if isinstance(content, str) and marker in content:
                return _ref_id(attachment.get("TransactionId")) or None
        return None

    def _comment(self, ticket_id: str, body: str) -> str | None:
        # Not retried blindly: a comment that landed before a timeout would be posted twice. The
        # write-back pipeline retries the whole push, which finds the marker first.
        # A text/plain comment sent as JSON: RT 5.0 takes a raw text/plain request body as Latin-1
        # bytes and stores non-ASCII drafts double-encoded ("Ã¼" for "ü"); JSON strings arrive intact.
        response = self.http.request(
            "POST",
            self._url(f"ticket/{ticket_id}/comment"),
            retry=False,
            json={"Content": body, "ContentType": "text/plain"},
        )
        # 201 Created, Location: /REST/2.0/transaction/{id} — the comment's transaction.
        location = response.headers.get("Location", "")
        if "/transaction/" not in location:
            return None
        return location.rstrip("/").rsplit("/", 1)[-1] or None

    # --- helpers --------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self._api_prefix + path

    def _get(self, path: str, params: Any = None) -> Any:
        return self.http.json("GET", self._url(path), params=params)

    def _collection(self, path: str, params: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        """Every item of a paged REST 2.0 collection."""
        page = 1
        while True:
            found = self._get(path, params=[*params, ("page", str(page)), ("per_page", "100")])
            items = found.get("items") if isinstance(found, dict) else None
            if not isinstance(items, list):
                raise BadResponse(f"GET /{path}: answer has no 'items' list", source=self.name)
            yield from (item for item in items if isinstance(item, dict))
            pages = found.get("pages")
            if not items or not isinstance(pages, int) or page >= pages:
                return
            page += 1


TRANSACTION_PARAMS = [("fields", "Type,Creator,Created"), ("fields[Creator]", "Name,EmailAddress")]
# Text parts only (a JSON search on the collection): attached files' content never travels.
TEXT_PARTS = json.dumps([{"field": "ContentType", "operator": "LIKE", "value": "text/"}])
ATTACHMENT_PARAMS = [("query", TEXT_PARTS), ("fields", "TransactionId,ContentType,Filename,Headers,Content")]
MARKER_PARAMS = [("query", TEXT_PARTS), ("fields", "TransactionId,Content")]


def _merge_params(params: list[tuple[str, str | int]]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for key, value in params:
        merged.setdefault(key, []).append(str(value))
    return merged


def _ref_id(value: Any) -> str:
    """An id from REST 2.0, which gives related records either as a bare id or as {type, id, _url}."""
    if isinstance(value, dict):
        value = value.get("id")
    return "" if value is None else str(value)


def _identities(user: Any) -> set[str]:
    if isinstance(user, dict):
        return {
            str(v).strip().lower() for v in (user.get("id"), user.get("Name"), user.get("EmailAddress")) if v
        }
    return {str(user).strip().lower()} if user else set()


def _tag_label(tag: str) -> tuple[str, str] | None:
    for prefix, label in TAG_FIELDS.items():
        if tag.startswith(prefix) and len(tag) > len(prefix):
            return label, tag[len(prefix) :]
    return None


def _custom_field_values(ticket: dict[str, Any]) -> dict[str, list[str]]:
    """Lower-cased custom field name and id → current values, from ``GET /ticket/{id}``."""
    fields = ticket.get("CustomFields")
    if not isinstance(fields, list):
        return {}
    values: dict[str, list[str]] = {}
    for field in fields:
        if isinstance(field, dict):
            current = [str(v) for v in field.get("values") or []]
            for key in (field.get("name"), field.get("id")):
                if key not in (None, ""):
                    values[str(key).lower()] = current
    return values
