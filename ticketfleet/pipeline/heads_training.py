"""`ticketfleet heads train`: labelled tickets in, a heads artifact (ticketfleet/engine/heads.py) out.

Input, one example a line (or a CSV row):

- JSONL ``{"text": "...", "locale": "de-DE"?, "labels": {"intent": "card_arrival", "sentiment": "negative"}}``
  (a line may label any subset of the fields; an empty or null label leaves the field unlabelled);
- CSV with a ``text`` column, an optional ``locale`` column and one column per field (an empty cell
  leaves the field unlabelled).

A bad line becomes a :class:`~ticketfleet.core.errors.LineError` (its number and why, never its text);
the good lines are used. Every text is redacted (``ticketfleet.pii.redact_text``) before anything reads
it, as everywhere in the fleet: the model, the lexical features and the data fingerprint see only the
redacted text.

Features are the engine's own (``TransformersEngine.thread_features``: a hidden state of the forward
pass over the item's thread) beside hashed word and char n-grams (``LexicalFeatures``), as set by the
:data:`DEFAULT_RECIPE`, which was chosen by measurement (docs/heads.md). Each field gets one multinomial
logistic regression (``class_weight="balanced"``) trained on a per-label stratified split; the held-out
part fits the softmax temperature (minimum negative log-likelihood) and gives the metrics stored in
the manifest: accuracy, macro-F1, ECE, NLL before and after calibration.

Over ~400 lines for now: loading, featurising, fitting and calibrating are one training run's steps;
splitting the data loading out (a module of its own) is the next step when the store becomes a
source of labels too (`--from-store`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from scipy import sparse

from connectors.import_format import has_surrogates
from ticketfleet.core.errors import ConfigurationError, LineError, describe_validation_error
from ticketfleet.core.schemas import EngineInput, ThreadMessage
from ticketfleet.core.vocabulary import STORED_LABEL_LENGTH, Role, reserved_head_name
from ticketfleet.engine.heads import (
    FeatureRecipe,
    FieldHead,
    FieldManifest,
    HeadsArtifact,
    HiddenRecipe,
    LexicalFeatures,
    LexicalRecipe,
    Manifest,
    softmax,
)
from ticketfleet.pii import redact_text

DEFAULT_RECIPE = FeatureRecipe(
    hidden=HiddenRecipe(layer=20, pooling="mean", weight=0.1),
    lexical=LexicalRecipe(word_ngrams=(1, 2), char_ngrams=(2, 5), n_features=1 << 14),
)
"""Chosen by measurement on held-out parts of BANKING77 and XLM-T with SmolLM2-135M (docs/heads.md)."""

DEFAULT_C = 10.0
"""Inverse regularisation of every head, chosen by measurement (docs/heads.md)."""

MIN_EXAMPLES = 10
"""A field with fewer labelled examples is skipped: too few to train and measure anything."""

MAX_COEF = 48_000_000
"""Largest head (labels × features) trained as is: about 190 MB of float32 weights. A field with more
labels shrinks the lexical hashing space (a power of two) until its largest head fits."""

MAX_ITER = 300
FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_LABEL_LENGTH = 200

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: ``"featurising"`` (items) and ``"training <field>"`` (fields)."""


# --- data ------------------------------------------------------------------------------------------


class LabelledRecord(BaseModel):
    """One JSONL line (or CSV row) of training data."""

    model_config = ConfigDict(extra="ignore")

    text: str = Field(min_length=1)
    locale: str | None = None
    labels: dict[str, str | int | None]

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str | int | None]) -> dict[str, str | int | None]:
        for name, label in value.items():
            if not FIELD_NAME.match(name):
                raise ValueError(
                    "field names are a letter then letters, digits or '_' (at most 64 characters)"
                )
            if isinstance(label, str) and len(label.strip()) > MAX_LABEL_LENGTH:
                raise ValueError(f"a label of {name} is longer than {MAX_LABEL_LENGTH} characters")
        return value

    def clean_labels(self) -> dict[str, str]:
        out = {}
        for name, label in self.labels.items():
            text = "" if label is None else str(label).strip()
            if text:
                out[name] = text
        return out


@dataclass(frozen=True)
class Example:
    """One labelled example, its text already redacted."""

    line: int
    text: str
    labels: dict[str, str]
    locale: str | None = None


@dataclass
class LabelledData:
    examples: list[Example]
    errors: list[LineError]

    def fields(self) -> dict[str, int]:
        """Labelled examples per field, in order of first appearance."""
        counts: Counter[str] = Counter()
        for example in self.examples:
            counts.update(example.labels.keys())
        return dict(counts)


def _example(number: int, record: LabelledRecord, errors: list[LineError]) -> Example | None:
    labels = record.clean_labels()
    if not labels:
        errors.append(LineError(number, "no labels: label at least one field"))
        return None
    return Example(number, redact_text(record.text, locale=record.locale), labels, record.locale)


def parse_jsonl(lines: Iterable[bytes]) -> LabelledData:
    examples: list[Example] = []
    errors: list[LineError] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
            if not isinstance(value, dict):
                raise TypeError("expected a JSON object")
            record = LabelledRecord.model_validate(value)
        except UnicodeDecodeError as exc:
            errors.append(LineError(number, f"invalid UTF-8 at byte {exc.start}"))
            continue
        except json.JSONDecodeError as exc:
            errors.append(LineError(number, f"malformed JSON: {exc.msg}"))
            continue
        except TypeError as exc:
            errors.append(LineError(number, str(exc)))
            continue
        except ValidationError as exc:
            errors.append(LineError(number, describe_validation_error(exc)))
            continue
        example = _example(number, record, errors)
        if example is not None:
            examples.append(example)
    return LabelledData(examples, errors)


def parse_csv(data: bytes) -> LabelledData:
    """CSV with a header: ``text``, optional ``locale``, one column per field."""
    text = data.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        return LabelledData([], [])
    except csv.Error as exc:
        raise ConfigurationError(f"the CSV header cannot be read ({exc})") from exc
    if "text" not in header:
        raise ConfigurationError("the CSV has no 'text' column (columns: text, locale?, one per field)")
    duplicate = [name for name, n in Counter(header).items() if n > 1]
    if duplicate:
        raise ConfigurationError(f"the CSV header repeats column(s) {sorted(duplicate)}")
    bad = [name for name in header if name not in ("text", "locale") and not FIELD_NAME.match(name)]
    if bad:
        raise ConfigurationError(
            f"CSV column(s) {bad[:5]} are not field names (a letter then letters, digits or '_')"
        )
    fields = [name for name in header if name not in ("text", "locale")]
    examples: list[Example] = []
    errors: list[LineError] = []
    number = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(LineError(reader.line_num, f"malformed CSV: {exc}"))
            break  # the reader cannot resynchronise after a broken quote
        start, number = number + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            errors.append(LineError(start, f"{len(row)} cells, the header has {len(header)}"))
            continue
        if any(has_surrogates(cell) for cell in row):
            errors.append(LineError(start, "invalid UTF-8"))
            continue
        cells = dict(zip(header, row, strict=True))
        try:
            record = LabelledRecord.model_validate(
                {
                    "text": cells["text"],
                    "locale": cells.get("locale") or None,
                    "labels": {name: cells[name] for name in fields},
                }
            )
        except ValidationError as exc:
            errors.append(LineError(start, describe_validation_error(exc)))
            continue
        example = _example(start, record, errors)
        if example is not None:
            examples.append(example)
    return LabelledData(examples, errors)


def load_labelled(path: Path) -> LabelledData:
    """Read a JSONL or CSV file of labelled examples (by extension; ``.csv`` is CSV, anything else JSONL)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if path.suffix.lower() == ".csv":
        return parse_csv(data)
    return parse_jsonl(data.splitlines())


def select_fields(data: LabelledData, fields: Sequence[str] | None) -> list[str]:
    """The fields to train: ``fields`` (each must be labelled somewhere) or every labelled field."""
    present = data.fields()
    if not fields:
        return list(present)
    missing = [name for name in fields if name not in present]
    if missing:
        raise ConfigurationError(
            f"no example labels field(s) {missing}; labelled fields: {', '.join(present) or 'none'}"
        )
    return list(dict.fromkeys(fields))


def fingerprint(examples: Sequence[Example], fields: Sequence[str]) -> str:
    """sha256 over the (redacted text, labels of ``fields``) pairs, in order."""
    sha = hashlib.sha256()
    wanted = set(fields)
    for example in examples:
        labels = {k: v for k, v in sorted(example.labels.items()) if k in wanted}
        sha.update(json.dumps([example.text, labels], ensure_ascii=False).encode("utf-8"))
        sha.update(b"\n")
    return sha.hexdigest()


# --- features --------------------------------------------------------------------------------------


class HiddenStates(Protocol):
    """``TransformersEngine.thread_features``: one float32 row per item."""

    def __call__(self, items: list[EngineInput], *, layer: int, pooling: str = "mean") -> np.ndarray: ...


def last_message_texts(items: list[EngineInput]) -> list[str]:
    return [item.text for item in items]


@dataclass
class Featurizer:
    """Where features come from: the engine's hidden states (``hidden``) and the texts the lexical
    features read (``texts``: the engine's ``head_texts``, the screened last customer message)."""

    model_id: str
    model_revision: str
    hidden: HiddenStates | None = None
    texts: Callable[[list[EngineInput]], list[str]] = last_message_texts
    batch_size: int = 64


def engine_featurizer(engine: Any, *, batch_size: int = 64) -> Featurizer:
    """The featurizer of a loaded ``TransformersEngine``: the heads will read exactly these features."""
    return Featurizer(
        model_id=engine.model_id,
        model_revision=engine.model_revision,
        hidden=engine.thread_features,
        texts=engine.head_texts,
        batch_size=batch_size,
    )


def engine_inputs(examples: Sequence[Example]) -> list[EngineInput]:
    return [
        EngineInput(
            item_id=i,
            thread=[ThreadMessage(role=Role.customer, text=example.text)],
            want_draft=False,
            locale_hint=example.locale,
        )
        for i, example in enumerate(examples)
    ]


def compute_hidden(
    featurizer: Featurizer,
    items: list[EngineInput],
    recipe: HiddenRecipe,
    progress: Progress | None = None,
) -> np.ndarray:
    """The hidden states of ``items`` in batches, reporting progress."""
    if featurizer.hidden is None:
        raise ConfigurationError("the feature recipe reads hidden states but no model is loaded")
    rows: list[np.ndarray] = []
    total = len(items)
    if progress:
        progress("featurising", 0, total)
    for start in range(0, total, featurizer.batch_size):
        batch = items[start : start + featurizer.batch_size]
        rows.append(
            np.asarray(featurizer.hidden(batch, layer=recipe.layer, pooling=recipe.pooling), dtype=np.float32)
        )
        if progress:
            progress("featurising", min(start + len(batch), total), total)
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    return np.vstack(rows)


def fit_lexical_recipe(recipe: LexicalRecipe, max_labels: int, hidden_width: int) -> LexicalRecipe:
    """``recipe`` with its hashing space halved until the widest head fits :data:`MAX_COEF`."""
    n_features = recipe.n_features
    while n_features > 1 << 10 and max_labels * (2 * n_features + hidden_width) > MAX_COEF:
        n_features //= 2
    return recipe.model_copy(update={"n_features": n_features})


# --- training --------------------------------------------------------------------------------------


@dataclass
class FieldReport:
    name: str
    trained: bool
    message: str = ""
    labels: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingResult:
    artifact: HeadsArtifact
    fields: list[FieldReport]
    examples: int
    featurise_seconds: float
    train_seconds: float

    @property
    def trained(self) -> list[FieldReport]:
        return [report for report in self.fields if report.trained]


def stratified_split(
    labels: Sequence[str], holdout: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, held out): about ``holdout`` of each label's rows held out, never all of
    them; a label's fractional share is held out with that probability, so labels with few examples
    (thousands of labels) are split without bias."""
    by_label: dict[str, list[int]] = {}
    for row, label in enumerate(labels):
        by_label.setdefault(label, []).append(row)
    train: list[int] = []
    held: list[int] = []
    for rows in by_label.values():
        order = rng.permutation(len(rows))
        share = holdout * len(rows)
        k = int(share) + int(rng.random() < share - int(share))
        k = min(k, len(rows) - 1)
        held.extend(rows[i] for i in order[:k])
        train.extend(rows[i] for i in order[k:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature minimising the negative log-likelihood of ``y`` (indices) under
    ``logits / T``; 1.0 without data."""
    if len(y) == 0:
        return 1.0
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        lambda log_t: nll(logits / math.exp(log_t), y), bounds=(-4.0, 4.0), method="bounded"
    )
    return float(math.exp(result.x))


def nll(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the indices ``y`` under ``softmax(logits)``."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_z - shifted[np.arange(len(y)), y]))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: over ``bins`` equal-width confidence bins, the support-weighted |accuracy − confidence|."""
    if len(confidence) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.sum() * abs(float(correct[mask].mean()) - float(confidence[mask].mean()))
    return total / len(confidence)


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Macro-F1 over the labels present in ``y_true``."""
    from sklearn.metrics import f1_score

    labels = sorted(set(y_true))
    return float(f1_score(list(y_true), list(y_pred), labels=labels, average="macro", zero_division=0))


def fit_logistic(
    x: sparse.csr_matrix, y: np.ndarray, n_labels: int, c: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A multinomial logistic regression (balanced class weights) as (coef labels×features, intercept).

    Labels absent from ``y`` (all their rows held out) keep zero weights and a very low intercept."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, class_weight="balanced", max_iter=MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    coef = np.zeros((n_labels, x.shape[1]), dtype=np.float32)
    intercept = np.full(n_labels, -30.0, dtype=np.float32)
    classes = model.classes_.astype(np.int64)
    if len(classes) == 2 and model.coef_.shape[0] == 1:
        # Binary: sklearn keeps one row w for "class 1 vs 0"; softmax over (−w/2, w/2) is the same.
        half, bias = model.coef_[0] / 2, model.intercept_[0] / 2
        coef[classes[0]], coef[classes[1]] = -half, half
        intercept[classes[0]], intercept[classes[1]] = -bias, bias
    else:
        coef[classes] = model.coef_
        intercept[classes] = model.intercept_
    return coef, intercept


def _check_field(name: str, labels: list[str]) -> str | None:
    """Why ``name`` cannot be a head, or None."""
    if reserved_head_name(name):
        return (
            f"{name!r} cannot be a head (language comes from the detector; names must not clash with "
            "the keys of a classify record)"
        )
    width = STORED_LABEL_LENGTH.get(name)
    if width is not None:
        long = [label for label in labels if len(label) > width]
        if long:
            return f"{len(long)} label(s) longer than the {width} characters a {name} result stores"
    return None


def train_heads(
    data: LabelledData,
    featurizer: Featurizer,
    *,
    fields: Sequence[str] | None = None,
    recipe: FeatureRecipe = DEFAULT_RECIPE,
    holdout: float = 0.15,
    seed: int = 0,
    c: float = DEFAULT_C,
    min_examples: int = MIN_EXAMPLES,
    progress: Progress | None = None,
    hidden: np.ndarray | None = None,
) -> TrainingResult:
    """Train one head per field on ``data`` and return the artifact (not yet saved) with a report.

    ``hidden``: the hidden states of ``data.examples`` when the caller has them already (benchmarks).
    """
    if not 0.0 < holdout < 1.0:
        raise ConfigurationError(f"holdout must be between 0 and 1, not {holdout}")
    if recipe.hidden is None and recipe.lexical is None:
        raise ConfigurationError("the feature recipe has neither hidden nor lexical features")
    names = select_fields(data, fields)
    wanted = set(names)
    keep = [i for i, example in enumerate(data.examples) if wanted & set(example.labels)]
    examples = [data.examples[i] for i in keep]
    if not examples:
        raise ConfigurationError("no labelled examples to train on")
    items = engine_inputs(examples)
    texts = featurizer.texts(items)

    started = time.perf_counter()
    hidden_mean = hidden_scale = states = None
    if recipe.hidden is not None:
        states = (
            compute_hidden(featurizer, items, recipe.hidden, progress)
            if hidden is None
            else np.asarray(hidden, dtype=np.float32)[keep]
        )
        hidden_mean = states.mean(axis=0).astype(np.float32)
        hidden_scale = np.maximum(states.std(axis=0), 1e-6).astype(np.float32)
    featurise_seconds = time.perf_counter() - started

    label_sets = {name: sorted({e.labels[name] for e in examples if name in e.labels}) for name in names}
    lexical = None
    lexical_recipe = recipe.lexical
    if lexical_recipe is not None:
        hidden_width = 0 if hidden_mean is None else len(hidden_mean)
        lexical_recipe = fit_lexical_recipe(
            lexical_recipe, max(len(v) for v in label_sets.values()), hidden_width
        )
        recipe = recipe.model_copy(update={"lexical": lexical_recipe})
        lexical = LexicalFeatures(lexical_recipe)
        lexical.fit_idf(texts)  # unsupervised: every text, labelled for any field
    manifest = Manifest(
        model_id=featurizer.model_id if recipe.hidden is not None else "",
        model_revision=featurizer.model_revision if recipe.hidden is not None else "",
        features=recipe,
        fields={},
        data_fingerprint=fingerprint(examples, names),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    artifact = HeadsArtifact(manifest, {}, hidden_mean, hidden_scale, lexical)
    x = artifact.features(states, texts)

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    reports: list[FieldReport] = []
    for index, name in enumerate(names):
        if progress:
            progress(f"training {name}", index, len(names))
        rows = [i for i, e in enumerate(examples) if name in e.labels]
        labels = label_sets[name]
        report = FieldReport(name, trained=False, labels=len(labels))
        problem = _check_field(name, labels)
        if problem is None and len(labels) < 2:
            problem = f"only one label ({labels[0]!r}): a head needs at least 2"
        if problem is None and len(rows) < min_examples:
            problem = f"only {len(rows)} labelled examples, at least {min_examples} needed"
        if problem is not None:
            report.message = problem
            reports.append(report)
            continue
        head, metrics = _train_field(x, examples, rows, name, labels, holdout, c, seed, rng)
        artifact.heads[name] = head
        manifest.fields[name] = FieldManifest(labels=labels, metrics=metrics)
        report.trained, report.metrics = True, metrics
        report.message = (
            f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
            f"ECE {metrics['ece']:.3f} on {metrics['heldout']} held out"
        )
        reports.append(report)
    if progress:
        progress("training done", len(names), len(names))
    return TrainingResult(artifact, reports, len(examples), featurise_seconds, time.perf_counter() - started)


def _train_field(
    x: sparse.csr_matrix,
    examples: list[Example],
    rows: list[int],
    name: str,
    labels: list[str],
    holdout: float,
    c: float,
    seed: int,
    rng: np.random.Generator,
) -> tuple[FieldHead, dict[str, Any]]:
    index = {label: i for i, label in enumerate(labels)}
    y = np.asarray([index[examples[row].labels[name]] for row in rows], dtype=np.int64)
    train, held = stratified_split([examples[row].labels[name] for row in rows], holdout, rng)
    x_field = x[np.asarray(rows)]
    started = time.perf_counter()
    coef, intercept = fit_logistic(x_field[train], y[train], len(labels), c, seed)
    fit_seconds = time.perf_counter() - started
    head = FieldHead(labels=labels, coef=coef, intercept=intercept)
    metrics: dict[str, Any] = {
        "train": len(train),
        "heldout": len(held),
        "C": c,
        "fit_seconds": round(fit_seconds, 2),
    }
    if len(held):
        logits = np.asarray(x_field[held] @ coef.T) + intercept
        head.temperature = fit_temperature(logits, y[held])
        probabilities = softmax(logits / head.temperature)
        predicted = probabilities.argmax(axis=1)
        confidence = probabilities[np.arange(len(held)), predicted]
        correct = predicted == y[held]
        metrics.update(
            accuracy=round(float(correct.mean()), 4),
            macro_f1=round(macro_f1([labels[i] for i in y[held]], [labels[i] for i in predicted]), 4),
            ece=round(float(expected_calibration_error(confidence, correct)), 4),
            nll_uncalibrated=round(nll(logits, y[held]), 4),
            nll=round(nll(logits / head.temperature, y[held]), 4),
            temperature=round(head.temperature, 4),
        )
    else:
        metrics.update(accuracy=None, macro_f1=None, ece=None, temperature=1.0)
    return head, metrics


def save(result: TrainingResult, directory: Path) -> str:
    """Write the artifact; returns its digest."""
    if not result.artifact.heads:
        raise ConfigurationError("no field could be trained, so there are no heads to write")
    return result.artifact.save(directory)
