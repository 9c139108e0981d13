"""IMAP e-mail connector: new messages of a mailbox become ticket threads; drafts go back to Drafts.

Why one module past 400 lines: it is one protocol client. Pull, threading and write-back share one
IMAP session (SELECT/EXAMINE state, UIDVALIDITY, the mailbox lookups of a thread's root), so splitting
them would only pass that session around. What is not IMAP already lives apart: parsing a message
(:mod:`connectors.email_message`) and turning its body into text (:mod:`connectors.email_text`).

Pull
    Messages with a UID above the cursor's, ``page_size`` per page, in UID order. The cursor is
    ``UIDVALIDITY:UID``. When the server's UIDVALIDITY differs from the cursor's (the mailbox was
    recreated or rebuilt, so old UIDs mean nothing), the pull restarts from the first message and relies
    on idempotent ingest (tickets and messages are unique by their Message-IDs) to absorb what was
    already stored. The mailbox is opened read-only (EXAMINE + BODY.PEEK): pulling never marks mail read.
Threads
    A ticket's external id is the Message-ID of its thread's root: the first entry of ``References``
    (RFC 5322 puts the root first), else the root of the ``In-Reply-To`` parent (looked up in this
    page, then in the mailbox), else the message's own id. A reply whose root is not in the mailbox
    still gets a stable key: its oldest reference. Each message's external id is its Message-ID, or
    a hash of its bytes when it has none.
Write-back
    The draft is APPENDed to the Drafts mailbox with ``\\Draft``, as a reply to the thread's newest
    message (In-Reply-To/References, "Re: " subject, To the requester), never sent. The
    ``X-Ticketfleet-Key`` header carries the idempotency key; a push first searches Drafts for it, so a
    retried push leaves one draft. Tags become IMAP keywords (``$tf-intent-refund``) on the thread's
    messages when the server allows keywords.

Uses stdlib :mod:`imaplib` over TLS (or plain TCP for loopback tests); the connection factory is
injectable. One connection per call (pull, push, check), logged out at the end.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import imaplib
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from connectors.base import (
    AuthError,
    BadResponse,
    ConfigError,
    Connector,
    ConnectorError,
    NotFound,
    PullPage,
    ServerError,
    SourceTimeout,
    WriteBack,
    WriteBackReceipt,
)
from connectors.email_message import ParsedMail, fit_id, parse_mail, strip_reply_prefix
from connectors.http import SourceHttp
from ticketfleet.core.errors import describe_validation_error
from ticketfleet.core.inbound import InboundMessage, InboundTicket, Requester
from ticketfleet.core.vocabulary import Channel, Role

log = logging.getLogger(__name__)

KEY_HEADER = "X-Ticketfleet-Key"
# Families of tags where a new value replaces the old one (a re-triage changes the intent, not adds one).
TAG_FAMILIES = ("tf-lang-", "tf-sentiment-", "tf-intent-", "tf-priority-")
MAX_PARENT_HOPS = 10


class ImapOptions(BaseModel):
    """``[sources.options]`` of an ``imap`` source. The password comes from the environment: preferably
    ``password_env = "VAR"`` on the source itself (resolved by the sources file), or here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535, description="default 993 with ssl, else 143")
    ssl: bool = True
    starttls: bool = Field(default=False, description="upgrade a plain connection with STARTTLS")
    ca_file: str | None = Field(default=None, description="PEM of a private CA to trust besides the system's")
    username: str = Field(min_length=1)
    password_env: str | None = None
    mailbox: str = "INBOX"
    drafts_mailbox: str = "Drafts"
    support_address: str = Field(description="mail from this address is the agents' own")
    page_size: int = Field(default=50, ge=1, le=1000)
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_message_bytes: int = Field(default=10_000_000, ge=1024)

    @field_validator("support_address")
    @classmethod
    def _address(cls, value: str) -> str:
        if "@" not in value or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} is not an e-mail address")
        return value.strip().lower()

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.ssl else 143)


ConnectionFactory = Callable[[ImapOptions], imaplib.IMAP4]


def default_connect(options: ImapOptions) -> imaplib.IMAP4:
    """TLS (certificate verified) or plain TCP, optionally upgraded with STARTTLS."""
    context = ssl.create_default_context()
    if options.ca_file:
        try:
            context.load_verify_locations(cafile=options.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"ca_file {options.ca_file!r} cannot be loaded: {exc}") from exc
    if options.ssl:
        return imaplib.IMAP4_SSL(
            options.host, options.effective_port, ssl_context=context, timeout=options.timeout_seconds
        )
    conn = imaplib.IMAP4(options.host, options.effective_port, timeout=options.timeout_seconds)
    if options.starttls:
        try:
            conn.starttls(ssl_context=context)
        except imaplib.IMAP4.abort:
            conn.shutdown()
            raise
        except imaplib.IMAP4.error as exc:  # the server offers no STARTTLS: the options are wrong
            conn.shutdown()
            raise ConfigError(f"STARTTLS refused by {options.host}: {exc}") from exc
        except BaseException:
            conn.shutdown()
            raise
    return conn


def imap_utf7(name: str) -> str:
    """A mailbox name in IMAP's modified UTF-7 (RFC 3501 §5.1.3), e.g. "Entwürfe" → "Entw&APw-rfe"."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).rstrip(b"=")
            out.append("&" + encoded.replace(b"/", b",").decode("ascii") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def quoted(value: str) -> str:
    """An IMAP quoted string; only printable ASCII can be searched without a CHARSET."""
    if not all(0x20 <= ord(c) <= 0x7E for c in value):
        raise ValueError(f"{value!r} has characters an IMAP quoted string cannot carry")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data: Any) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def _uids(data: list[Any]) -> list[int]:
    words = " ".join(_text(d) for d in data if d)
    return sorted({int(w) for w in words.split() if w.isdigit()})


def _fetch_literals(data: list[Any]) -> dict[int, tuple[str, bytes]]:
    """UID FETCH answer → {uid: (metadata line, literal bytes)} for items carrying a literal."""
    found: dict[int, tuple[str, bytes]] = {}
    for item in data:
        if isinstance(item, tuple) and len(item) == 2:
            meta = _text(item[0])
            match = re.search(r"\bUID (\d+)", meta)
            if match:
                found[int(match.group(1))] = (meta, item[1])
    return found


def _keyword(tag: str) -> str:
    # Keywords are IMAP atoms: keep letters, digits, "-", "_", "."; "$" marks them as client keywords.
    return "$" + re.sub(r"[^A-Za-z0-9_.\-]", "_", tag)


@dataclass(frozen=True)
class Selected:
    count: int
    uidvalidity: int
    keywords_allowed: bool  # PERMANENTFLAGS has \* : the client may create keywords


class ImapConnector(Connector):
    kind: ClassVar[str] = "imap"

    def __init__(
        self,
        name: str,
        *,
        options: ImapOptions,
        password: SecretStr,
        connect: ConnectionFactory | None = None,
    ) -> None:
        super().__init__(name)
        self.options = options
        self._password = password
        self._connect = connect or default_connect

    # --- sessions and errors ------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Map socket and imaplib failures onto the connector error tree."""
        try:
            yield
        except ConnectorError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise ConfigError(f"TLS certificate not trusted: {exc.verify_message}", source=self.name) from exc
        except imaplib.IMAP4.abort as exc:  # the connection broke mid-command
            raise SourceTimeout(f"IMAP connection lost: {exc}", source=self.name) from exc
        except (TimeoutError, OSError) as exc:
            raise SourceTimeout(
                f"cannot reach {self.options.host}:{self.options.effective_port}: {exc}", source=self.name
            ) from exc
        except imaplib.IMAP4.error as exc:
            raise BadResponse(f"IMAP command failed: {exc}", source=self.name) from exc

    @contextlib.contextmanager
    def _session(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in connection; errors raised by the caller's block are mapped too (they pass the
        ``yield`` inside ``_errors``)."""
        with self._errors():
            try:
                conn = self._connect(self.options)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:  # a BYE greeting: the server refuses sessions now
                raise ServerError(f"IMAP server refused the session: {exc}", source=self.name) from exc
            try:
                self._login(conn)
                yield conn
            finally:
                with contextlib.suppress(Exception):
                    conn.logout()

    def _login(self, conn: imaplib.IMAP4) -> None:
        try:
            conn.login(self.options.username, self._password.get_secret_value())
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            reason = str(exc)
            if "[UNAVAILABLE]" in reason:  # RFC 5530: a temporary back-end failure, not bad credentials
                raise ServerError(f"login unavailable: {reason}", source=self.name) from exc
            raise AuthError(
                f"login as {self.options.username!r} refused: {reason}", source=self.name
            ) from exc
        except UnicodeEncodeError as exc:
            raise ConfigError(
                "the IMAP username and password must be ASCII for LOGIN", source=self.name
            ) from exc

    def _select(self, conn: imaplib.IMAP4, mailbox: str, *, readonly: bool) -> Selected:
        """Open ``mailbox``. A missing mailbox is a ConfigError: the source names one that is not there."""
        typ, data = conn.select(quoted(imap_utf7(mailbox)), readonly=readonly)
        if typ != "OK":
            raise ConfigError(
                f"mailbox {mailbox!r} cannot be opened: {_text(data[0]) if data else typ}", source=self.name
            )
        _, validity = conn.response("UIDVALIDITY")
        _, permanent = conn.response("PERMANENTFLAGS")
        try:
            return Selected(
                count=int(_text(data[0])),
                uidvalidity=int(_text(validity[0])),
                keywords_allowed=any("\\*" in _text(p) for p in permanent or []),
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise BadResponse(
                f"SELECT {mailbox!r} gave no message count or UIDVALIDITY", source=self.name
            ) from exc

    def _uid(self, conn: imaplib.IMAP4, command: str, *args: str) -> list[Any]:
        typ, data = conn.uid(command, *args)
        if typ != "OK":
            raise BadResponse(f"UID {command} failed: {_text(data[0]) if data else typ}", source=self.name)
        return list(data)

    # --- check --------------------------------------------------------------------------------

    def check(self) -> str:
        with self._session() as conn:
            selected = self._select(conn, self.options.mailbox, readonly=True)
        o = self.options
        return f"{o.username} at {o.host}:{o.effective_port}, {o.mailbox}: {selected.count} messages"

    # --- pull ---------------------------------------------------------------------------------

    def _parse_cursor(self, cursor: str | None) -> tuple[int | None, int]:
        if cursor is None:
            return None, 0
        match = re.fullmatch(r"(\d+):(\d+)", cursor.strip())
        if match is None:
            raise ConfigError(f"cursor {cursor!r} is not UIDVALIDITY:UID", source=self.name)
        return int(match.group(1)), int(match.group(2))

    def pull(self, cursor: str | None) -> PullPage:
        seen_validity, last_uid = self._parse_cursor(cursor)
        with self._session() as conn:
            validity = self._select(conn, self.options.mailbox, readonly=True).uidvalidity
            if seen_validity is not None and seen_validity != validity:
                log.warning(
                    "%s: UIDVALIDITY of %s changed (%s → %s); re-reading the mailbox from the start",
                    self.name, self.options.mailbox, seen_validity, validity,
                )  # fmt: skip
                last_uid = 0
            # "UID n:*" also matches the highest UID when n is above it: filter, never trust the range.
            # Mail an agent already deleted (flagged, not yet expunged) is not worth triaging.
            found = self._uid(conn, "SEARCH", f"UID {last_uid + 1}:*", "UNDELETED")
            uids = [u for u in _uids(found) if u > last_uid]
            page_uids = uids[: self.options.page_size]
            if not page_uids:
                return PullPage(cursor=f"{validity}:{last_uid}", has_more=False)
            rejected: list[tuple[str, str]] = []
            mails = self._fetch_page(conn, page_uids, rejected)
            items = self._threads(conn, mails, rejected)
        return PullPage(
            items=items,
            cursor=f"{validity}:{page_uids[-1]}",
            has_more=len(uids) > len(page_uids),
            rejected=rejected,
        )

    def _fetch_page(
        self, conn: imaplib.IMAP4, uids: list[int], rejected: list[tuple[str, str]]
    ) -> dict[int, ParsedMail]:
        uid_set = ",".join(str(u) for u in uids)
        sizes: dict[int, tuple[int, datetime | None]] = {}
        for line in self._uid(conn, "FETCH", uid_set, "(RFC822.SIZE INTERNALDATE)"):
            meta = _text(line[0] if isinstance(line, tuple) else line)
            uid_match = re.search(r"\bUID (\d+)", meta)
            size = re.search(r"\bRFC822\.SIZE (\d+)", meta)
            if uid_match and size:
                stamp = imaplib.Internaldate2tuple(meta.encode("ascii", "replace"))
                when = datetime.fromtimestamp(time.mktime(stamp), UTC) if stamp else None
                sizes[int(uid_match.group(1))] = (int(size.group(1)), when)
        wanted = []
        for uid in uids:
            if uid not in sizes:
                continue  # expunged since the SEARCH: gone, nothing to report
            if sizes[uid][0] > self.options.max_message_bytes:
                rejected.append((f"uid {uid}", f"{sizes[uid][0]} bytes, over max_message_bytes"))
            else:
                wanted.append(uid)
        mails: dict[int, ParsedMail] = {}
        if not wanted:
            return mails
        bodies = _fetch_literals(self._uid(conn, "FETCH", ",".join(map(str, wanted)), "(BODY.PEEK[])"))
        for uid in wanted:
            if uid not in bodies:
                continue
            try:
                mail = parse_mail(bodies[uid][1], received_at=sizes[uid][1])
            except Exception as exc:  # parse_mail is defensive; this keeps one freak from costing the page
                rejected.append((f"uid {uid}", f"cannot parse message: {exc!r}"))
                continue
            if mail.notes:
                log.warning("%s: uid %s %s: %s", self.name, uid, mail.message_id, "; ".join(mail.notes))
            if not mail.has_headers:
                rejected.append((f"uid {uid}", "not an e-mail: no header fields before the body"))
                continue
            if mail.automatic:
                rejected.append((f"uid {uid} {mail.message_id}", f"not triaged: {mail.automatic}"))
                continue
            if not mail.body.text.strip():
                what = ", ".join(mail.body.attachments) or "no parts"
                defects = f"; defects: {', '.join(mail.body.notes)}" if mail.body.notes else ""
                rejected.append(
                    (
                        f"uid {uid} {mail.message_id}",
                        f"no readable text/plain or text/html body ({what}){defects}",
                    )
                )
                continue
            mails[uid] = mail
        return mails

    def _is_agent(self, mail: ParsedMail) -> bool:
        return mail.from_email == self.options.support_address

    def _root(self, conn: imaplib.IMAP4, mail: ParsedMail, known: dict[str, str]) -> str:
        """The thread root's Message-ID for ``mail`` (see the module docstring)."""
        current = mail
        for _ in range(MAX_PARENT_HOPS):
            refs = current.thread_refs
            if not refs:
                return current.message_id
            oldest = refs[0]
            # References lists the root first. Trusting it as written (not a root found for it in
            # this page) keeps the key the same however the thread's messages fall into pages.
            if current.references:
                return oldest
            if oldest in known:  # the parent is in this page: its root, found by these same rules
                return known[oldest]
            parent = self._lookup(conn, oldest)
            if parent is None:
                return oldest  # root unknown here: the oldest reference keys the thread
            current = parent
        return current.message_id

    def _lookup(self, conn: imaplib.IMAP4, message_id: str, *, whole: bool = False) -> ParsedMail | None:
        """The mailbox's message with this Message-ID: its threading headers, or ``whole`` message."""
        try:
            criteria = quoted(message_id)
        except ValueError:
            return None
        uids = _uids(self._uid(conn, "SEARCH", "HEADER", "Message-ID", criteria))
        fields = (
            "(BODY.PEEK[])" if whole else "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID REFERENCES IN-REPLY-TO)])"
        )
        for uid in uids:  # SEARCH HEADER matches substrings: take the exact one
            for _, raw in _fetch_literals(self._uid(conn, "FETCH", str(uid), fields)).values():
                mail = parse_mail(raw)
                if mail.message_id == message_id:
                    return mail
        return None

    def _with_customer_root(
        self, conn: imaplib.IMAP4, root: str, thread: list[ParsedMail]
    ) -> list[ParsedMail]:
        """An agent-only slice of a thread, led by the thread's customer root message from the mailbox
        (ingest already has it, and skips it): without it the agent messages could not be ingested, and
        whether they were would depend on how the thread fell into pages."""
        found = self._lookup(conn, root, whole=True)
        if found is None or self._is_agent(found) or not found.body.text.strip() or found.automatic:
            return thread
        return [found, *thread]

    def _threads(
        self, conn: imaplib.IMAP4, mails: dict[int, ParsedMail], rejected: list[tuple[str, str]]
    ) -> list[InboundTicket]:
        known: dict[str, str] = {}
        threads: dict[str, list[ParsedMail]] = {}
        for uid in sorted(mails):
            mail = mails[uid]
            root = self._root(conn, mail, known)
            known[mail.message_id] = root
            thread = threads.setdefault(root, [])
            if all(m.message_id != mail.message_id for m in thread):  # the same mail delivered twice
                thread.append(mail)
        items: list[InboundTicket] = []
        for root, thread in threads.items():
            customers = [m for m in thread if not self._is_agent(m)]
            if not customers:
                thread = self._with_customer_root(conn, root, thread)
                customers = [m for m in thread if not self._is_agent(m)]
            if not customers:
                rejected.append(
                    (
                        f"thread {root}",
                        "only messages from the support address, and no customer message starts the thread",
                    )
                )
                continue
            first = customers[0]
            try:
                items.append(
                    InboundTicket(
                        external_id=fit_id(root),
                        source=self.name,
                        channel=Channel.ticket,
                        subject=strip_reply_prefix(thread[0].subject) or None,
                        requester=Requester(name=first.from_name, email=first.from_email),
                        locale=first.locale,
                        messages=[
                            InboundMessage(
                                role=Role.agent if self._is_agent(m) else Role.customer,
                                text=m.body.text,
                                external_id=fit_id(m.message_id),
                                created_at=m.created_at,
                            )
                            for m in thread
                        ],
                    )
                )
            except ValidationError as exc:
                rejected.append((f"thread {root}", describe_validation_error(exc)))
        return items

    # --- push ---------------------------------------------------------------------------------

    def push(self, write_back: WriteBack) -> WriteBackReceipt:
        root = write_back.ticket_external_id
        with self._session() as conn:
            selected = self._select(conn, self.options.mailbox, readonly=False)
            thread, flags = self._thread_of(conn, root)
            tags_applied = []
            if write_back.tags and selected.keywords_allowed:
                tags_applied = self._apply_keywords(conn, flags, write_back.tags)
            elif write_back.tags:
                log.info("%s: %s allows no keywords; tags not written", self.name, self.options.mailbox)
            receipt = WriteBackReceipt(tags_applied=tags_applied)
            if write_back.note is not None:
                note_id, deduplicated = self._save_draft(conn, thread, write_back)
                receipt = receipt.model_copy(update={"note_id": note_id, "deduplicated": deduplicated})
        return receipt

    def _thread_of(
        self, conn: imaplib.IMAP4, root: str
    ) -> tuple[list[tuple[int, ParsedMail, str]], dict[int, str]]:
        """The thread's messages in the mailbox, oldest first: (uid, headers, raw header block)."""
        try:
            needle = quoted(root)
        except ValueError as exc:
            raise NotFound(f"{root!r} is not a Message-ID this mailbox can hold", source=self.name) from exc
        uids = _uids(
            self._uid(
                conn, "SEARCH", "OR", "OR", "HEADER", "Message-ID", needle,
                "HEADER", "References", needle, "HEADER", "In-Reply-To", needle,
            )
        )  # fmt: skip
        if not uids:
            raise NotFound(f"no message of thread {root} in {self.options.mailbox}", source=self.name)
        fields = "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID REFERENCES IN-REPLY-TO FROM REPLY-TO SUBJECT)])"
        thread: list[tuple[int, ParsedMail, str]] = []
        flags: dict[int, str] = {}
        for uid, (meta, raw) in sorted(
            _fetch_literals(self._uid(conn, "FETCH", ",".join(map(str, uids)), fields)).items()
        ):
            mail = parse_mail(raw)
            # HEADER search matches substrings: keep only messages that really name the root.
            if root == mail.message_id or root in mail.references or root in mail.in_reply_to:
                thread.append((uid, mail, raw.decode("ascii", "replace")))
                flags[uid] = meta
        if not thread:
            raise NotFound(f"no message of thread {root} in {self.options.mailbox}", source=self.name)
        return thread, flags

    def _apply_keywords(self, conn: imaplib.IMAP4, flags: dict[int, str], tags: list[str]) -> list[str]:
        wanted = {_keyword(t) for t in tags}
        families = {_keyword(f) for f in TAG_FAMILIES if any(t.startswith(f) for t in tags)}
        uid_set = ",".join(str(u) for u in flags)
        stale: set[str] = set()
        for meta in flags.values():
            match = re.search(r"FLAGS \(([^)]*)\)", meta)
            present = match.group(1).split() if match else []
            stale |= {k for k in present if k not in wanted and any(k.startswith(f) for f in families)}
        if stale:
            self._uid(conn, "STORE", uid_set, "-FLAGS.SILENT", "(" + " ".join(sorted(stale)) + ")")
        self._uid(conn, "STORE", uid_set, "+FLAGS.SILENT", "(" + " ".join(sorted(wanted)) + ")")
        return list(tags)

    def _key_value(self, key: str) -> str:
        # The header must be a searchable ASCII atom; any other key is carried as its hash.
        if re.fullmatch(r"[A-Za-z0-9._:\-]{1,200}", key):
            return key
        return "sha256-" + hashlib.sha256(key.encode("utf-8")).hexdigest()

    def _save_draft(
        self, conn: imaplib.IMAP4, thread: list[tuple[int, ParsedMail, str]], write_back: WriteBack
    ) -> tuple[str, bool]:
        key = self._key_value(write_back.idempotency_key)
        drafts = self.options.drafts_mailbox
        self._select(conn, drafts, readonly=True)
        hits = _uids(self._uid(conn, "SEARCH", "HEADER", KEY_HEADER, quoted(key)))
        if hits:
            fields = f"(BODY.PEEK[HEADER.FIELDS ({KEY_HEADER.upper()} MESSAGE-ID)])"
            for _, raw in _fetch_literals(
                self._uid(conn, "FETCH", ",".join(map(str, hits)), fields)
            ).values():
                text = raw.decode("ascii", "replace")
                # SEARCH HEADER matches substrings: confirm the key is the whole header value.
                if re.search(rf"^{KEY_HEADER}:\s*{re.escape(key)}\s*$", text, re.IGNORECASE | re.MULTILINE):
                    return parse_mail(raw).message_id, True
        draft = self._draft(thread, write_back, key)
        typ, data = conn.append(
            quoted(imap_utf7(drafts)), r"(\Draft)", imaplib.Time2Internaldate(time.time()), draft.as_bytes()
        )
        if typ != "OK":
            raise BadResponse(
                f"APPEND to {drafts!r} failed: {_text(data[0]) if data else typ}", source=self.name
            )
        return str(draft["Message-ID"]), False

    def _draft(
        self, thread: list[tuple[int, ParsedMail, str]], write_back: WriteBack, key: str
    ) -> EmailMessage:
        if write_back.note is None:
            raise ValueError("an IMAP draft needs a note; push saves one only for write-backs with a note")
        mails = [mail for _, mail, _ in thread]
        customers = [m for m in mails if not self._is_agent(m)] or mails
        root = next((m for m in mails if m.message_id == write_back.ticket_external_id), mails[0])
        parent = mails[-1]
        reply_to = self._reply_address(thread, customers[0])  # the requester, as pull reports it
        references = [*parent.references, *(r for r in parent.in_reply_to if r not in parent.references)]
        if (
            write_back.ticket_external_id not in references
            and parent.message_id != write_back.ticket_external_id
        ):
            references.insert(0, write_back.ticket_external_id)
        references = [*references, parent.message_id]
        if len(references) > 12:  # keep the root and the newest, as RFC 5322 suggests for long threads
            references = [references[0], *references[-11:]]
        domain = self.options.support_address.split("@", 1)[1]
        draft = EmailMessage()
        draft["From"] = self.options.support_address
        if reply_to:
            draft["To"] = reply_to
        draft["Subject"] = "Re: " + (strip_reply_prefix(root.subject) or strip_reply_prefix(parent.subject))
        draft["Date"] = format_datetime(datetime.now(UTC))
        draft["Message-ID"] = f"<tf.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"
        draft["In-Reply-To"] = parent.message_id
        draft["References"] = " ".join(references)
        draft[KEY_HEADER] = key
        draft.set_content(f"{write_back.note}\n\n{write_back.marker}\n")
        return draft

    def _reply_address(self, thread: list[tuple[int, ParsedMail, str]], customer: ParsedMail) -> str | None:
        for _, mail, raw in reversed(thread):
            if mail is customer:
                match = re.search(r"^Reply-To:(.*(?:\r?\n[ \t].*)*)", raw, re.IGNORECASE | re.MULTILINE)
                if match and "@" in match.group(1):
                    return " ".join(match.group(1).split())
        if customer.from_email is None:
            return None
        return formataddr((customer.from_name or "", customer.from_email))


def from_config(
    name: str, options: dict[str, Any], secrets: dict[str, SecretStr], http: SourceHttp | None
) -> ImapConnector:
    """Build from a sources-file entry; the password is ``secrets["password"]`` (``password_env`` on the
    source) or the variable named by the ``password_env`` option. ``http`` is unused: IMAP is no HTTP."""
    try:
        parsed = ImapOptions.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(f"options: {describe_validation_error(exc)}", source=name) from exc
    password = secrets.get("password")
    if password is None and parsed.password_env:
        value = os.environ.get(parsed.password_env)
        if not value:
            raise ConfigError(
                f"password_env: environment variable {parsed.password_env} is not set", source=name
            )
        password = SecretStr(value)
    if password is None:
        raise ConfigError('no password: set password_env = "VAR" on the source', source=name)
    return ImapConnector(name, options=parsed, password=password)
