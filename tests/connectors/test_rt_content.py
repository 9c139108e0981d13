"""RT attachment decoding without a server: the shapes REST 2.0 returns for message parts."""

from __future__ import annotations

import base64

import pytest

from connectors.rt_content import attachment_text, body_part, declared_length, html_to_text


def _part(content_type: str, content: str = "", headers: str = "", **extra: str) -> dict[str, str]:
    return {"ContentType": content_type, "Content": content, "Headers": headers, **extra}


def test_base64_content_is_decoded_in_the_parts_charset() -> None:
    raw = "Grüße aus Köln".encode("iso-8859-1")
    part = _part(
        "text/plain",
        base64.b64encode(raw).decode(),
        'Content-Type: text/plain; charset="iso-8859-1"\nContent-Length: 14',
    )

    assert attachment_text(part, base64_content=True) == "Grüße aus Köln"


def test_base64_content_without_charset_is_utf8() -> None:
    part = _part("text/plain", base64.b64encode("naïve café".encode()).decode())

    assert attachment_text(part, base64_content=True) == "naïve café"


def test_unknown_charset_falls_back_to_utf8() -> None:
    part = _part(
        "text/plain",
        base64.b64encode("日本語".encode()).decode(),
        "Content-Type: text/plain; charset=x-unknown-9",
    )

    assert attachment_text(part, base64_content=True) == "日本語"


def test_invalid_base64_is_reported() -> None:
    with pytest.raises(ValueError, match="base64"):
        attachment_text(_part("text/plain", "abc"), base64_content=True)


def test_html_part_becomes_text() -> None:
    part = _part("text/html", "<div>Hello&nbsp;<b>there</b></div><ul><li>one</li><li>two</li></ul>")

    assert attachment_text(part) == "Hello there\n\none\n\ntwo"


def test_html_to_text_keeps_pre_and_drops_scripts_and_styles() -> None:
    html = (
        "<html><head><style>p{}</style><title>x</title></head><body>"
        "<p>Line\none</p><pre>  a\n  b</pre><script>var x;</script>&lt;tag&gt;</body></html>"
    )

    assert html_to_text(html) == "Line one\n\na\nb\n<tag>"  # pre keeps its line breaks


def test_body_prefers_plain_then_html_and_skips_files_and_containers() -> None:
    container = _part("multipart/alternative")
    html = _part("text/html", "<p>html</p>", id="3")
    plain = _part("text/plain", "plain", id="2")
    file_part = _part("text/plain", "a file", Filename="notes.txt")
    disposition = _part("text/plain", "attached", "Content-Disposition: attachment; filename=x.txt")

    assert body_part([container, file_part, disposition, html, plain]) is plain
    assert body_part([container, html, file_part]) is html
    assert body_part([container, file_part, disposition]) is None


def test_declared_length_reads_the_header() -> None:
    assert declared_length(_part("text/plain", headers="Content-Length: 42")) == 42
    assert declared_length(_part("text/plain", headers="Content-Length: lots")) == 0
    assert declared_length(_part("text/plain")) == 0
