"""HTML bodies (ticket descriptions, e-mail articles) → plain text the triage model can read.

Ticket systems store agent and customer messages as HTML. The model wants the words with paragraph
breaks, not markup: block elements and ``<br>`` become line breaks, ``<script>``/``<style>`` vanish,
entities are decoded, and runs of blank lines collapse to one. Standard library only, so a hostile or
broken body can at worst produce odd text, never an exception.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_BLOCKS = frozenset(
    {"p", "div", "br", "li", "ul", "ol", "tr", "table", "blockquote", "pre", "hr"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "header", "footer"}
)
_HIDDEN = frozenset({"script", "style", "head", "title"})


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden_depth += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden_depth = max(0, self._hidden_depth - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden_depth:
            self.parts.append(data)


def html_to_text(body: str) -> str:
    """Readable text of an HTML fragment; plain text passes through with whitespace tidied."""
    collector = _TextCollector()
    collector.feed(body)
    collector.close()
    text = "".join(collector.parts).replace("\xa0", " ")
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def text_to_html(text: str) -> str:
    """Plain text as a minimal HTML body (escaped, line breaks kept) for APIs that store HTML."""
    return "<br>".join(html.escape(line) for line in text.split("\n"))
