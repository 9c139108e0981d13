"""`ticketfleet heads eval`: how trained heads do on labelled data, and the gates that data supports.

Per field: accuracy, macro-F1, per-label precision / recall / support, the most confused pairs, ECE
(15 equal-width bins), and the lowest confidence threshold at which the predictions kept (confidence
≥ threshold) reach 95% and 98% precision, with the share of items they keep (coverage). For the
built-in fields the two thresholds become a ``TICKETFLEET_GATES`` value: ``review_below`` the 95%
threshold, ``auto_at`` the 98% one (1.0 where the data never reaches it: never automatic).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ticketfleet.core.settings import TRIAGE_FIELD_NAMES
from ticketfleet.engine.heads import HeadsArtifact
from ticketfleet.pipeline.heads_training import (
    Featurizer,
    LabelledData,
    Progress,
    compute_hidden,
    engine_inputs,
    expected_calibration_error,
    macro_f1,
)

PRECISION_TARGETS: tuple[float, ...] = (0.95, 0.98)
TOP_CONFUSIONS = 10


@dataclass
class Threshold:
    precision: float  # the target
    threshold: float | None  # None: no threshold reaches it
    coverage: float  # share of items with confidence >= threshold
    achieved: float | None  # the precision of the items kept


@dataclass
class FieldEvaluation:
    name: str
    items: int
    accuracy: float
    macro_f1: float
    ece: float
    per_label: dict[str, dict[str, float | int]]
    confused: list[tuple[str, str, int]]  # (true, predicted, count), most frequent first
    thresholds: list[Threshold]
    unknown_labels: int = 0  # items whose true label the head does not know (always wrong)

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "ece": self.ece,
            "unknown_labels": self.unknown_labels,
            "per_label": self.per_label,
            "confused": [{"true": t, "predicted": p, "count": n} for t, p, n in self.confused],
            "thresholds": [t.__dict__ for t in self.thresholds],
        }


@dataclass
class EvaluationReport:
    fields: dict[str, FieldEvaluation]
    skipped: dict[str, str] = field(default_factory=dict)  # field: why it was not evaluated
    seconds: float = 0.0

    def gates(self) -> dict[str, dict[str, float]]:
        """A ``TICKETFLEET_GATES`` value for the built-in fields evaluated here."""
        out = {}
        for name, evaluation in self.fields.items():
            if name not in TRIAGE_FIELD_NAMES:
                continue
            by_target = {t.precision: t.threshold for t in evaluation.thresholds}
            review = by_target.get(0.95)
            auto = by_target.get(0.98)
            review_below = 1.0 if review is None else review
            auto_at = 1.0 if auto is None else max(auto, review_below)
            out[name] = {"review_below": round(review_below, 4), "auto_at": round(auto_at, 4)}
        return out

    def gates_json(self) -> str:
        return json.dumps(self.gates(), separators=(",", ":"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "fields": {name: e.as_dict() for name, e in self.fields.items()},
            "skipped": self.skipped,
            "gates": self.gates(),
            "seconds": round(self.seconds, 2),
        }


def precision_thresholds(
    confidence: np.ndarray, correct: np.ndarray, targets: Sequence[float] = PRECISION_TARGETS
) -> list[Threshold]:
    """Per target, the lowest confidence ``t`` such that the items with confidence ≥ ``t`` are correct
    at least that often, with the coverage (share of items kept) and the precision reached."""
    n = len(confidence)
    order = np.argsort(-confidence, kind="stable")
    conf = confidence[order]
    hits = np.cumsum(correct[order].astype(np.int64))
    # Cut only where the confidence changes: every item at the threshold is kept.
    last_of_value = np.flatnonzero(np.r_[conf[1:] != conf[:-1], True]) if n else np.zeros(0, np.int64)
    kept = last_of_value + 1
    precision = hits[last_of_value] / kept if n else np.zeros(0)
    out = []
    for target in targets:
        ok = np.flatnonzero(precision >= target - 1e-12)
        if len(ok) == 0:
            out.append(Threshold(target, None, 0.0, None))
            continue
        i = ok[-1]  # the most items kept: the lowest threshold
        out.append(
            Threshold(
                target,
                float(conf[last_of_value[i]]),
                float(kept[i] / n),
                float(precision[i]),
            )
        )
    return out


def evaluate_predictions(
    name: str, labels: list[str], probabilities: np.ndarray, truth: Sequence[str]
) -> FieldEvaluation:
    """A field's evaluation from its probabilities (rows: items; columns: ``labels``) and true labels."""
    predicted_index = probabilities.argmax(axis=1)
    predicted = [labels[i] for i in predicted_index]
    confidence = probabilities[np.arange(len(predicted_index)), predicted_index]
    correct = np.asarray([p == t for p, t in zip(predicted, truth, strict=True)])
    known = set(labels)
    per_label: dict[str, dict[str, float | int]] = {}
    true_counts = Counter(truth)
    predicted_counts = Counter(predicted)
    hit_counts = Counter(t for t, p in zip(truth, predicted, strict=True) if t == p)
    for label in sorted(set(truth) | set(predicted)):
        tp = hit_counts[label]
        per_label[label] = {
            "precision": round(tp / predicted_counts[label], 4) if predicted_counts[label] else 0.0,
            "recall": round(tp / true_counts[label], 4) if true_counts[label] else 0.0,
            "support": true_counts[label],
        }
    confusions = Counter((t, p) for t, p in zip(truth, predicted, strict=True) if t != p)
    confused = sorted(confusions.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CONFUSIONS]
    return FieldEvaluation(
        name=name,
        items=len(truth),
        accuracy=round(float(correct.mean()), 4) if len(truth) else 0.0,
        macro_f1=round(macro_f1(list(truth), predicted), 4) if len(truth) else 0.0,
        ece=round(float(expected_calibration_error(confidence, correct)), 4),
        per_label=per_label,
        confused=[(t, p, n) for (t, p), n in confused],
        thresholds=precision_thresholds(confidence, correct),
        unknown_labels=sum(1 for t in truth if t not in known),
    )


def evaluate(
    artifact: HeadsArtifact,
    data: LabelledData,
    featurizer: Featurizer,
    *,
    progress: Progress | None = None,
    hidden: np.ndarray | None = None,
) -> EvaluationReport:
    """Evaluate every head of ``artifact`` on the examples of ``data`` that label its field."""
    started = time.perf_counter()
    report = EvaluationReport(fields={})
    labelled = data.fields()
    for name in artifact.fields:
        if name not in labelled:
            report.skipped[name] = "no example labels this field"
    wanted = [name for name in artifact.fields if name in labelled]
    keep = [i for i, e in enumerate(data.examples) if any(name in e.labels for name in wanted)]
    examples = [data.examples[i] for i in keep]
    if not examples:
        report.seconds = time.perf_counter() - started
        return report
    recipe = artifact.manifest.features
    if recipe.hidden is not None:
        artifact.check_model(featurizer.model_id, featurizer.model_revision)
    items = engine_inputs(examples)
    states = None
    if recipe.hidden is not None:
        states = (
            compute_hidden(featurizer, items, recipe.hidden, progress)
            if hidden is None
            else np.asarray(hidden, dtype=np.float32)[keep]
        )
    probabilities = artifact.predict(states, featurizer.texts(items))
    for name in wanted:
        rows = [i for i, e in enumerate(examples) if name in e.labels]
        report.fields[name] = evaluate_predictions(
            name,
            artifact.heads[name].labels,
            probabilities[name][rows],
            [examples[i].labels[name] for i in rows],
        )
    report.seconds = time.perf_counter() - started
    return report
