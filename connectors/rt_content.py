"""Turning Request Tracker attachments into message text.

In RT a message (the Create, Correspond or Comment transaction) has no body of its own: its content
lives in the transaction's attachments, one per MIME part — a ``multipart/alternative`` container
with empty content, then ``text/plain`` and/or ``text/html`` parts, then any files. REST 2.0 returns
``Content`` as text in attachment collections (RT has already converted text parts to UTF-8 and
records the original charset in ``X-RT-Original-Encoding``) and as base64 of the stored bytes from
``GET /attachment/{id}``; both are handled here. The body is the first inline ``text/plain`` part,
else the first inline ``text/html`` part converted to text — the same preference RT's own UI has.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Iterable, Mapping
from email.message import Message
from email.parser import HeaderParser
from html.parser import HTMLParser
from typing import Any

BLOCK_TAGS = frozenset(
    {"address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset"}
    | {"figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr"}
    | {"li", "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul"}
)
SKIPPED_TAGS = frozenset({"script", "style", "head", "title"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIPPED_TAGS:
            self._skip_depth += 1
        elif tag == "pre":
            self._pre_depth += 1
            self.parts.append("\n")
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
            self.parts.append("\n")
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        # Outside <pre>, whitespace runs (line breaks included) are one space, as a browser shows them.
        self.parts.append(data if self._pre_depth else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """Readable plain text from an HTML body: tags dropped, entities decoded, blocks on their own lines."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    lines = [line.strip() for line in "".join(extractor.parts).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def parse_headers(raw: str | None) -> Message:
    return HeaderParser().parsestr(raw or "")


def charset_of(headers: Message) -> str:
    """The part's charset if Python knows it, else UTF-8 (what RT stores text parts as)."""
    charset = headers.get_content_charset() or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        return "utf-8"
    return charset


def decode_base64_content(content: str, headers: Message) -> str:
    """``Content`` of ``GET /attachment/{id}``: base64 of the stored bytes, in the part's charset."""
    try:
        raw = base64.b64decode(content, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"attachment content is not valid base64: {exc}") from exc
    return raw.decode(charset_of(headers), errors="replace")


def is_inline_text(attachment: Mapping[str, Any]) -> bool:
    """A message body part: text/plain or text/html, not a file attached to the message."""
    content_type = str(attachment.get("ContentType") or "").lower()
    if content_type not in ("text/plain", "text/html"):
        return False
    if attachment.get("Filename"):
        return False
    disposition = parse_headers(attachment.get("Headers")).get("Content-Disposition", "")
    return not disposition.lower().startswith("attachment")


def attachment_text(attachment: Mapping[str, Any], *, base64_content: bool = False) -> str:
    """The text of one body part (HTML converted), from a collection item or a single-attachment answer."""
    content = attachment.get("Content")
    if not isinstance(content, str):
        return ""
    headers = parse_headers(attachment.get("Headers"))
    text = decode_base64_content(content, headers) if base64_content else content
    if str(attachment.get("ContentType") or "").lower() == "text/html":
        text = html_to_text(text)
    return text.replace("\r\n", "\n").strip()


def body_part(attachments: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The attachment holding a transaction's message: first inline text/plain, else first text/html."""
    candidates = [a for a in attachments if is_inline_text(a)]
    for wanted in ("text/plain", "text/html"):
        for attachment in candidates:
            if str(attachment.get("ContentType")).lower() == wanted:
                return attachment
    return None


def declared_length(attachment: Mapping[str, Any]) -> int:
    """Content-Length from the part's headers (0 when absent): tells an empty part from one not inlined."""
    value = parse_headers(attachment.get("Headers")).get("Content-Length", "0")
    try:
        return int(str(value).strip())
    except ValueError:
        return 0
