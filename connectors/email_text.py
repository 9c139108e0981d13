"""E-mail → plain text: MIME part choice, charset decoding, RFC 2047 headers, HTML to text, quoted tails.

Pure functions over :mod:`email` (stdlib, ``compat32`` policy so nothing is decoded behind our back).
Nothing here raises on bad input: an unknown or lying charset decodes with replacement characters and the
problem is returned as a note, so one badly labelled message never costs the others.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from email.header import decode_header
from email.message import Message

from connectors.html_text import MAIL_BLOCKS, MAIL_HIDDEN, visible_text

# Labels that mail clients write but mean a superset in practice (the WHATWG encoding standard does the
# same for browsers): a "Shift_JIS" mail with NEC/IBM extensions, or "iso-8859-1" with curly quotes.
SUPERSET_CHARSETS = {
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "iso-8859-9": "cp1254",
    "gb2312": "gbk",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "tis-620": "cp874",
}


def decode_bytes(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """``data`` as text, never raising. Returns (text, problem) where problem names what went wrong.

    No charset: UTF-8 if it decodes cleanly, else Windows-1252 (what unlabelled 8-bit mail usually is).
    """
    label = (charset or "").strip().strip('"').lower()
    if label in ("", "us-ascii", "ascii"):
        # Unlabelled, or labelled 7-bit but carrying 8-bit bytes: UTF-8 when valid, else Windows text.
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            return data.decode("cp1252", errors="replace"), None
    codec = SUPERSET_CHARSETS.get(label, label)
    problem = None
    try:
        # A label such as "base64" or "zlib" names a codec, but not a text encoding: bytes.decode refuses it.
        if not codecs.lookup(codec)._is_text_encoding:
            raise LookupError(codec)
    except (LookupError, ValueError):  # ValueError: a label with a NUL in it
        problem = f"unknown charset {charset!r}, decoded as UTF-8 with replacements"
        codec = "utf-8"
    try:
        return data.decode(codec), problem
    except UnicodeDecodeError:
        text = data.decode(codec, errors="replace")
        return text, problem or f"bytes not valid in charset {charset!r} were replaced"


def _unescape_surrogates(value: str) -> str:
    # compat32 keeps raw 8-bit header bytes as surrogate escapes; most such headers are UTF-8.
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        raw = value.encode("ascii", errors="surrogateescape")
        return decode_bytes(raw, None)[0]
    return value


def decode_header_value(value: object) -> tuple[str, list[str]]:
    """An RFC 2047 (encoded-word) header as text, plus notes on undecodable parts. Never raises."""
    if value is None:
        return "", []
    raw = _unescape_surrogates(str(value))
    notes: list[str] = []
    try:
        parts = decode_header(raw)
    except Exception:  # a malformed encoded word: keep the header as written
        return raw, ["malformed encoded word in header"]
    out: list[str] = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        text, problem = decode_bytes(chunk, charset)
        if problem:
            notes.append(problem)
        out.append(text)
    # decode_header keeps folding whitespace of unencoded runs; collapse it to single spaces.
    return re.sub(r"\s+", " ", "".join(out)).strip(), notes


def html_to_text(markup: str) -> str:
    """Visible text of an HTML mail body (no scripts, styles or cited replies); never raises."""
    text, dropped = visible_text(markup, blocks=MAIL_BLOCKS, hidden=MAIL_HIDDEN, drop_quotes=True)
    if not text and dropped:
        # Dropping the cited part must never leave nothing: keep it when it is all there is.
        text, _ = visible_text(markup, blocks=MAIL_BLOCKS, hidden=MAIL_HIDDEN)
    return text


ATTRIBUTION = re.compile(
    r"^\s*(on|am|le|el|il|op|em|den|dne|w dniu)\b.*\b(wrote|schrieb|a écrit|escribió|ha scritto|scrisse|"
    r"schreef|escreveu|skrev|napisał|napsal)\s*:\s*$",
    re.IGNORECASE,
)
WROTE_ALONE = re.compile(r"^\s*(wrote|schrieb|a écrit|escribió|scrisse|schreef|escreveu)\s*:\s*$", re.I)
ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{2,}\s*(original message|ursprüngliche nachricht|message d'origine)", re.I
)


def strip_quoted_tail(text: str) -> str:
    """Drop a reply's quoted tail ("On … wrote:" + ``>`` lines, or "-----Original Message-----" and
    below). Only a *tail* goes: inline answers between quoted lines are kept, and if nothing but quote
    would remain the text is returned unchanged."""
    lines = text.splitlines()
    cut = len(lines)
    for index, line in enumerate(lines):
        if ORIGINAL_MESSAGE.match(line):
            cut = index
            break
    end = cut
    while end > 0 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith(">")):
        end -= 1
    quoted_tail = any(line.lstrip().startswith(">") for line in lines[end:cut])
    if not quoted_tail:
        end = cut
    elif end > 0 and ATTRIBUTION.match(lines[end - 1]):
        end -= 1
    elif end > 1 and WROTE_ALONE.match(lines[end - 1]):
        end -= 2  # a client wrapped the attribution line before "wrote:"
    kept = "\n".join(lines[:end]).rstrip()
    return kept if kept.strip() else text.strip()


# C0 controls other than tab and newline: noise in mail, and PostgreSQL text cannot hold NUL at all.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class BodyText:
    """What a message body yields: its text, where it came from, what was skipped or odd."""

    text: str = ""
    kind: str = ""  # "plain" or "html"; "" when there was no text part
    attachments: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _is_attachment(part: Message) -> bool:
    disposition = (part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
    return disposition == "attachment"


def _decoded_part(part: Message, body: BodyText) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    text, problem = decode_bytes(payload, part.get_content_charset())
    if problem:
        body.notes.append(problem)
    return text


def _walk(part: Message, body: BodyText) -> tuple[str, str]:
    """(text, kind) for one part, recursively; attachments and non-text parts are listed, not read."""
    ctype = part.get_content_type()
    if _is_attachment(part) or ctype == "message/rfc822":  # a forwarded mail is quoted material too
        body.attachments.append(part.get_filename() or ctype)
        return "", ""
    if part.is_multipart():
        subparts = [p for p in part.get_payload() if isinstance(p, Message)]
        if ctype == "multipart/alternative":
            results = [_walk(p, body) for p in subparts]
            for wanted in ("plain", "html"):
                for text, kind in reversed(results):  # the last alternative is the richest of a kind
                    if kind == wanted and text.strip():
                        return text, kind
            return "", ""
        texts = [_walk(p, body) for p in subparts]
        found = [(t, k) for t, k in texts if t.strip()]
        if not found:
            return "", ""
        kind = "plain" if any(k == "plain" for _, k in found) else "html"
        return "\n\n".join(t.strip() for t, _ in found), kind
    if ctype == "text/plain":
        return _decoded_part(part, body), "plain"
    if ctype == "text/html":
        return html_to_text(_decoded_part(part, body)), "html"
    body.attachments.append(part.get_filename() or ctype)
    return "", ""


def body_text(message: Message) -> BodyText:
    """The message's readable text: text/plain preferred, else text/html as text; quoted tail dropped."""
    body = BodyText()
    for defect in message.defects:
        body.notes.append(type(defect).__name__)
    text, kind = _walk(message, body)
    body.kind = kind
    normalised = CONTROL_CHARS.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    body.text = strip_quoted_tail(normalised) if normalised.strip() else ""
    return body
