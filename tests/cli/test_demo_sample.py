"""The demo's bundled sample is where the demo looks for it, and every line of it imports."""

from __future__ import annotations

from connectors.import_format import parse_file
from ticketfleet.cli.demo import SAMPLE
from ticketfleet.core.settings import Settings


def test_the_demo_finds_its_sample_and_every_line_parses() -> None:
    assert SAMPLE.is_file(), SAMPLE
    lines = list(parse_file(SAMPLE, max_body_chars=Settings(_env_file=None).max_body_chars))  # type: ignore[call-arg]
    assert len(lines) >= 150
    assert [line.error for line in lines if line.error is not None] == []
