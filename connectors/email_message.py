"""One raw RFC 5322 message → the fields a ticket needs: ids, thread references, sender, subject, text.

Threading follows the headers mail clients write (RFC 5322 §3.6.4): ``References`` lists the thread's
ids oldest first, so its first entry is the thread's root; ``In-Reply-To`` names the parent. A message
without a Message-ID gets a stable synthetic one (a hash of its bytes), so re-reading it after a crash
yields the same id and ingest absorbs the duplicate.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from connectors.email_text import BodyText, body_text, decode_header_value
from ticketfleet.core.inbound import MAX_ID_LENGTH

MSG_ID = re.compile(r"<([^<>\s]+)>")
REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|antw|wg|fwd?|tr|rv|r)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
LOCALE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def normalise_message_id(value: str) -> str | None:
    """``<local@domain>`` as written, or None when there is no well-formed id in ``value``."""
    match = MSG_ID.search(value)
    if match is None:
        bare = value.strip()
        return f"<{bare}>" if bare and "@" in bare and not re.search(r"[\s<>]", bare) else None
    return f"<{match.group(1)}>"


def message_ids(value: str | None) -> list[str]:
    """Every ``<id>`` in a References / In-Reply-To header, in order, without repeats."""
    if not value:
        return []
    found: list[str] = []
    for match in MSG_ID.finditer(value):
        ident = f"<{match.group(1)}>"
        if ident not in found:
            found.append(ident)
    return found


def fit_id(ident: str) -> str:
    """An id that fits the store's column: over-long Message-IDs are replaced by a stable hash."""
    if len(ident) <= MAX_ID_LENGTH:
        return ident
    return "sha256:" + hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()


def strip_reply_prefix(subject: str) -> str:
    return REPLY_PREFIX.sub("", subject).strip()


@dataclass
class ParsedMail:
    message_id: str
    synthetic_id: bool
    in_reply_to: list[str]
    references: list[str]
    from_name: str | None
    from_email: str | None
    subject: str
    created_at: datetime | None
    locale: str | None
    body: BodyText
    has_headers: bool = True
    automatic: str | None = None  # why this is an automatic message (auto-reply, bounce), else None
    notes: list[str] = field(default_factory=list)

    @property
    def thread_refs(self) -> list[str]:
        """References then In-Reply-To, oldest first: the first is the best guess at the thread root."""
        refs = [r for r in self.references if r != self.message_id]
        refs += [r for r in self.in_reply_to if r not in refs and r != self.message_id]
        return refs


def _sender(raw: object) -> tuple[str | None, str | None]:
    text, _ = decode_header_value(raw)
    pairs = email.utils.getaddresses([text]) if text else []
    for name, address in pairs:
        if address and "@" in address:
            return (name or None), address.strip().lower()
    return None, None


def _date(raw: object, fallback: datetime | None) -> datetime | None:
    if raw:
        try:
            when = email.utils.parsedate_to_datetime(str(raw))
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    return fallback


def _locale(raw: object) -> str | None:
    # Content-Language may list several ("de-DE, en"); the first is the body's main language.
    text, _ = decode_header_value(raw)
    first = text.split(",")[0].strip()
    return first if first and LOCALE.match(first) and len(first) <= 35 else None


def _automatic(message: email.message.Message) -> str | None:
    """Out-of-office replies and bounces say so (RFC 3834 Auto-Submitted, RFC 6522 reports)."""
    auto = str(message.get("Auto-Submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto}"
    if message.get_content_type() == "multipart/report":
        return "a delivery or read report (multipart/report)"
    if str(message.get("Precedence") or "").strip().lower() == "auto_reply" or message.get("X-Autoreply"):
        return "an auto-reply (Precedence/X-Autoreply)"
    return None


def parse_mail(raw: bytes, *, received_at: datetime | None = None) -> ParsedMail:
    """Parse one message; never raises for malformed headers or bodies (problems go to ``notes``)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    notes: list[str] = []
    own = normalise_message_id(str(message.get("Message-ID") or ""))
    synthetic = own is None
    if own is None:
        own = f"<sha256.{hashlib.sha256(raw).hexdigest()[:40]}@ticketfleet.invalid>"
        notes.append("no Message-ID; synthesised one from the message's bytes")
    subject, subject_notes = decode_header_value(message.get("Subject"))
    notes.extend(f"Subject: {n}" for n in subject_notes)
    name, address = _sender(message.get("From"))
    body = body_text(message)
    notes.extend(body.notes)
    return ParsedMail(
        message_id=own,
        synthetic_id=synthetic,
        in_reply_to=message_ids(str(message.get("In-Reply-To") or "")),
        references=message_ids(" ".join(str(v) for v in message.get_all("References") or [])),
        from_name=name,
        from_email=address,
        subject=subject,
        created_at=_date(message.get("Date"), received_at),
        locale=_locale(message.get("Content-Language")),
        body=body,
        has_headers=bool(message.keys()),
        automatic=_automatic(message),
        notes=notes,
    )
