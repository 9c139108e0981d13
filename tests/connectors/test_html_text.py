"""HTML bodies → text for the model, and text → HTML for APIs that store HTML notes."""

from __future__ import annotations

from connectors.html_text import html_to_text, text_to_html


def test_blocks_breaks_entities_and_hidden_parts() -> None:
    body = (
        "<html><head><title>t</title><style>p{}</style></head><body>"
        "<p>Caf&eacute;&nbsp;order&nbsp;#4471</p><div>line one<br>line two</div>"
        "<script>alert(1)</script><ul><li>a</li><li>b</li></ul></body></html>"
    )
    assert html_to_text(body) == "Café order #4471\n\nline one\nline two\n\na\n\nb"


def test_plain_text_and_broken_markup_never_raise() -> None:
    assert html_to_text("  just   text \n") == "just text"
    assert html_to_text("<p>unclosed <b>bold") == "unclosed bold"
    assert html_to_text("") == ""


def test_text_to_html_escapes_and_keeps_lines() -> None:
    assert text_to_html("a < b\n[ticketfleet:k]") == "a &lt; b<br>[ticketfleet:k]"
