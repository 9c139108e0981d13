"""HTML bodies (ticket descriptions, e-mail parts) → plain text the triage model can read.

Ticket systems and mail clients store messages as HTML. The model wants the words with paragraph
breaks, not markup: block elements and ``<br>`` become line breaks, ``<script>``/``<style>`` vanish,
entities are decoded, and runs of blank lines collapse to one. Standard library only, so a hostile or
broken body can at worst produce odd text, never an exception.

One parser serves both callers; they differ only in which tags count as blocks or hidden and in
whether cited replies are dropped (mail: :func:`connectors.email_text.html_to_text`).
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

# Ticket-system bodies (Freshdesk, Zammad): rich-text editors also emit sectioning elements.
PAGE_BLOCKS = frozenset(
    {"p", "div", "br", "li", "ul", "ol", "tr", "table", "blockquote", "pre", "hr"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "header", "footer"}
)
PAGE_HIDDEN = frozenset({"script", "style", "head", "title"})
# Mail bodies: a blockquote is either a cited reply (dropped) or the customer's own quotation, kept inline.
MAIL_BLOCKS = frozenset(
    {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr", "pre"}
)
MAIL_HIDDEN = PAGE_HIDDEN | {"template"}


class _VisibleText(HTMLParser):
    """Visible text of an HTML body; block elements become line breaks, cited replies optionally dropped."""

    def __init__(self, *, blocks: frozenset[str], hidden: frozenset[str], drop_quotes: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.dropped_quote = False
        self._blocks = blocks
        self._hidden = hidden
        self._drop_quotes = drop_quotes
        self._hidden_depth = 0
        self._quote_depth = 0  # >0 inside a cited reply: counts the divs/blockquotes opened within it

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._hidden:
            self._hidden_depth += 1
        if self._quote_depth:
            if tag in ("blockquote", "div"):
                self._quote_depth += 1
        elif self._drop_quotes and _is_cited_reply(tag, dict(attrs)):
            self._quote_depth = 1
            self.dropped_quote = True
        if tag in self._blocks:
            self.chunks.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._blocks:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._hidden and self._hidden_depth:
            self._hidden_depth -= 1
        if self._quote_depth and tag in ("blockquote", "div"):
            self._quote_depth -= 1
        if tag in self._blocks:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden_depth and not self._quote_depth:
            self.chunks.append(data)

    def text(self) -> str:
        joined = "".join(self.chunks).replace("\xa0", " ")
        lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in joined.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _is_cited_reply(tag: str, attrs: dict[str, str | None]) -> bool:
    # Cited replies as the big clients write them: <blockquote type="cite"> (Apple, Thunderbird),
    # <div class="gmail_quote"> (Gmail). Plain <blockquote> may be the customer's own quotation: kept.
    if tag == "blockquote" and (attrs.get("type") or "").lower() == "cite":
        return True
    return tag == "div" and "gmail_quote" in (attrs.get("class") or "").split()


def visible_text(
    markup: str,
    *,
    blocks: frozenset[str] = PAGE_BLOCKS,
    hidden: frozenset[str] = PAGE_HIDDEN,
    drop_quotes: bool = False,
) -> tuple[str, bool]:
    """(text, whether a cited reply was dropped); never raises."""
    parser = _VisibleText(blocks=blocks, hidden=hidden, drop_quotes=drop_quotes)
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # html.parser is lenient; this only guards against the unexpected
        return html.unescape(re.sub(r"<[^>]+>", " ", markup)).strip(), False
    return parser.text(), parser.dropped_quote


def html_to_text(body: str) -> str:
    """Readable text of an HTML fragment; plain text passes through with whitespace tidied."""
    return visible_text(body)[0]


def text_to_html(text: str) -> str:
    """Plain text as a minimal HTML body (escaped, line breaks kept) for APIs that store HTML."""
    return "<br>".join(html.escape(line) for line in text.split("\n"))
