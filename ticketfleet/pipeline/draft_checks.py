"""Checks a draft must pass before an agent sees it as a proposal.

A draft that fails is still stored, with the reason, so nothing is lost and nothing is silently
shown: agents and write-back use only drafts whose ``check_result`` is ``passed``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from difflib import SequenceMatcher

from ticketfleet.language import detect_language

PASSED = "passed"
# Language ID on a short draft is unreliable; judge only drafts this long, and only confident calls.
MIN_CHARS_FOR_LANGUAGE = 24
LANGUAGE_CONFIDENCE = 0.6
# An echo is a draft that is mostly the customer's own words handed back, or that leaks a long stretch
# of the instructions. Restating an order number or a short phrase is fine.
ECHO_SHARE = 0.6
ECHO_MIN_CHARS = 12
INSTRUCTION_LEAK_CHARS = 50


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def longest_shared_run(a: str, b: str) -> int:
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return match.size


def check_draft(
    draft: str | None, *, language: str | None, customer_texts: Sequence[str], instructions: str
) -> str:
    """``passed``, or why not: ``empty``, ``echo``, ``wrong_language:<code>``."""
    text = _normalise(draft or "")
    if not text:
        return "empty"
    if longest_shared_run(text, _normalise(instructions)) >= INSTRUCTION_LEAK_CHARS:
        return "echo"
    copied = max((longest_shared_run(text, _normalise(t)) for t in customer_texts), default=0)
    if copied >= max(ECHO_MIN_CHARS, ECHO_SHARE * len(text)):
        return "echo"
    if language and language != "und" and len(text) >= MIN_CHARS_FOR_LANGUAGE:
        # The expected language as a hint: it settles near-ties (no/da, hr/sr) without overriding
        # a draft clearly written in another language.
        detected = detect_language(draft or "", locale_hint=language)
        if detected.value not in (language, "und") and detected.confidence >= LANGUAGE_CONFIDENCE:
            return f"wrong_language:{detected.value}"
    return PASSED
