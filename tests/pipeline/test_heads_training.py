"""Training and evaluating trained heads (ticketfleet/pipeline/heads_training.py, heads_eval.py) on
labelled data written here, with a featurizer that needs no model, and once on the tiny Qwen engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ticketfleet.core.errors import ConfigurationError
from ticketfleet.core.schemas import EngineInput
from ticketfleet.engine.heads import FeatureRecipe, HeadsArtifact, HiddenRecipe, LexicalRecipe
from ticketfleet.pipeline.heads_eval import evaluate, evaluate_predictions, precision_thresholds
from ticketfleet.pipeline.heads_training import (
    Featurizer,
    expected_calibration_error,
    fingerprint,
    fit_temperature,
    load_labelled,
    nll,
    save,
    stratified_split,
    train_heads,
)

INTENTS = {
    "card_arrival": ["my card has not arrived", "when will my new card come", "still waiting for the card"],
    "refund": ["I want my money back", "please refund the order", "refund for the broken item"],
    "password": ["I forgot my password", "cannot log in, reset password", "password reset link broken"],
}
SENTIMENT = {"card_arrival": "negative", "refund": "negative", "password": "neutral"}


def _lines(n_per_intent: int = 20) -> list[dict[str, object]]:
    records = []
    for intent, phrases in INTENTS.items():
        for i in range(n_per_intent):
            labels: dict[str, object] = {"intent": intent}
            if i % 2 == 0:
                labels["sentiment"] = SENTIMENT[intent]
            records.append({"text": f"{phrases[i % 3]} (ticket {i})", "labels": labels})
    return records


def write_jsonl(path: Path, bad: bool = True) -> Path:
    lines = [json.dumps(r) for r in _lines()]
    if bad:
        lines[3:3] = [
            "{not json",  # line 4
            json.dumps({"labels": {"intent": "refund"}}),  # line 5: no text
            json.dumps({"text": "hello", "labels": {}}),  # line 6: no labels
            json.dumps({"text": "call me at anna@example.org", "labels": {"bad field": "x"}}),  # line 7
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class KeywordHidden:
    """A torch-free stand-in for ``thread_features``: a bag of the intent keywords, a little noise."""

    words = ("card", "refund", "money", "password", "log", "arrived")

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self.texts: list[str] = []

    def __call__(self, items: list[EngineInput], *, layer: int, pooling: str = "mean") -> np.ndarray:
        self.calls.append((layer, pooling))
        self.texts.extend(item.text for item in items)
        rng = np.random.default_rng(len(self.texts))
        rows = [[float(w in item.text.lower()) for w in self.words] for item in items]
        return np.asarray(rows, dtype=np.float32) + rng.normal(0, 0.05, (len(items), len(self.words)))


def featurizer(hidden: KeywordHidden | None = None) -> Featurizer:
    return Featurizer("fake-model", "r1", hidden=hidden or KeywordHidden(), batch_size=16)


RECIPE = FeatureRecipe(
    hidden=HiddenRecipe(layer=3, pooling="mean", weight=1.0), lexical=LexicalRecipe(n_features=1 << 10)
)


def test_bad_lines_are_reported_by_number_and_the_good_ones_used(tmp_path: Path) -> None:
    data = load_labelled(write_jsonl(tmp_path / "train.jsonl"))
    assert [e.line for e in data.errors] == [4, 5, 6, 7]
    assert "malformed JSON" in data.errors[0].error
    assert "text" in data.errors[1].error and "field required" in data.errors[1].error
    assert "no labels" in data.errors[2].error
    assert all("anna@example.org" not in e.error for e in data.errors)
    assert len(data.examples) == 60
    assert data.fields() == {"intent": 60, "sentiment": 30}


def test_csv_rows_with_empty_cells_are_unlabelled(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text(
        "text,intent,sentiment\n"
        "my card has not arrived,card_arrival,\n"
        '"refund, please",refund,negative\n'
        "too,many,cells,here\n"
        ",refund,negative\n"
        "no labels at all,,\n",
        encoding="utf-8",
    )
    data = load_labelled(path)
    assert [(e.line, e.labels) for e in data.examples] == [
        (2, {"intent": "card_arrival"}),
        (3, {"intent": "refund", "sentiment": "negative"}),
    ]
    assert [e.line for e in data.errors] == [4, 5, 6]
    bad = tmp_path / "bad.csv"
    bad.write_text("body,intent\nx,y\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="'text' column"):
        load_labelled(bad)


def test_texts_are_redacted_before_features(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    records = _lines()
    records[0]["text"] = "my card has not arrived, mail anna@example.org"
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    hidden = KeywordHidden()
    data = load_labelled(path)
    train_heads(data, featurizer(hidden), recipe=RECIPE, seed=1)
    assert all("anna@example.org" not in text for text in hidden.texts)
    assert len(hidden.texts) == 60 and hidden.calls[0] == (3, "mean")


def test_train_writes_a_loadable_artifact_with_held_out_metrics(tmp_path: Path) -> None:
    data = load_labelled(write_jsonl(tmp_path / "train.jsonl"))
    stages: list[str] = []
    result = train_heads(
        data, featurizer(), recipe=RECIPE, holdout=0.25, seed=3, progress=lambda s, d, t: stages.append(s)
    )
    assert "featurising" in stages and "training intent" in stages and "training sentiment" in stages
    digest = save(result, tmp_path / "heads")
    loaded = HeadsArtifact.load(tmp_path / "heads")
    assert loaded.digest == digest
    assert loaded.fields == ["intent", "sentiment"]
    manifest = loaded.manifest
    assert (manifest.model_id, manifest.model_revision) == ("fake-model", "r1")
    assert manifest.data_fingerprint == fingerprint(data.examples, ["intent", "sentiment"])
    intent = manifest.fields["intent"]
    assert intent.labels == ["card_arrival", "password", "refund"]
    for key in ("accuracy", "macro_f1", "ece", "temperature", "nll", "heldout", "train"):
        assert key in intent.metrics
    assert intent.metrics["heldout"] == 15  # a quarter of each label's 20
    assert intent.metrics["accuracy"] >= 0.9
    # The loaded heads predict what the trained ones did.
    hidden = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
    texts = ["refund please", "forgot password"]
    for name, probs in loaded.predict(hidden, texts).items():
        np.testing.assert_allclose(probs, result.artifact.predict(hidden, texts)[name], rtol=1e-4, atol=1e-5)


def test_fields_with_one_label_or_too_few_examples_are_skipped(tmp_path: Path) -> None:
    records = _lines()
    for r in records[:8]:
        r["labels"]["priority"] = "high"  # type: ignore[index]
    records[0]["labels"]["team"] = "a"  # type: ignore[index]
    records[1]["labels"]["team"] = "b"  # type: ignore[index]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    result = train_heads(load_labelled(path), featurizer(), recipe=RECIPE)
    skipped = {r.name: r.message for r in result.fields if not r.trained}
    assert "only one label" in skipped["priority"]
    assert "only 2 labelled examples" in skipped["team"]
    assert sorted(result.artifact.heads) == ["intent", "sentiment"]
    with pytest.raises(ConfigurationError, match="no example labels field"):
        train_heads(load_labelled(path), featurizer(), recipe=RECIPE, fields=["urgency"])


def test_many_labels_with_few_examples_each() -> None:
    from ticketfleet.pipeline.heads_training import Example, LabelledData

    rng = np.random.default_rng(0)
    examples = [
        Example(i + 1, f"topic {i % 1500} word{i % 1500} extra{i % 7}", {"topic": f"t{i % 1500}"})
        for i in range(3000)
    ]
    hidden = rng.normal(size=(3000, 4)).astype(np.float32)
    result = train_heads(
        LabelledData(examples, []),
        Featurizer("m", "r", hidden=None),
        recipe=FeatureRecipe(hidden=HiddenRecipe(layer=1), lexical=LexicalRecipe(n_features=1 << 12)),
        hidden=hidden,
        holdout=0.2,
    )
    head = result.artifact.heads["topic"]
    assert len(head.labels) == 1500 and head.coef.shape[0] == 1500
    assert result.fields[0].metrics["accuracy"] > 0.5


def test_stratified_split_keeps_every_label_in_training() -> None:
    labels = ["a"] * 100 + ["b"] * 10 + ["c"] * 1 + ["d"] * 2
    train, held = stratified_split(labels, 0.2, np.random.default_rng(0))
    assert len(set(train) | set(held)) == len(labels) and not set(train) & set(held)
    assert {labels[i] for i in train} == {"a", "b", "c", "d"}
    assert sum(labels[i] == "a" for i in held) == 20 and sum(labels[i] == "b" for i in held) == 2


def test_temperature_lowers_nll_of_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    logits = rng.normal(size=(400, 3))
    logits[np.arange(400), y] += 1.0  # right about 60% of the time ...
    logits *= 8.0  # ... and nearly certain every time
    t = fit_temperature(logits, y)
    assert t > 2.0
    assert nll(logits / t, y) < nll(logits, y) - 0.5


def test_ece_and_precision_thresholds_on_a_hand_computed_example() -> None:
    confidence = np.array([0.95, 0.9, 0.9, 0.83, 0.7, 0.62, 0.55, 0.5, 0.45, 0.3])
    correct = np.array([1, 1, 1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    # 15 bins of 1/15: every confidence sits in a bin of its own except the two 0.9s (both right).
    # |acc - conf| per bin x items: .05, 2 x .1, .17, .3, .62, .45, .5, .45, .3 -> 3.04 / 10
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.304)
    t95, t98 = precision_thresholds(confidence, correct, (0.95, 0.98))
    # Kept at >= 0.7: 5 of 5 right (100%); at >= 0.62: 5 of 6 (83%); at >= 0.55: 6 of 7 (86%).
    assert (t95.threshold, t95.coverage, t95.achieved) == (0.7, 0.5, 1.0)
    assert (t98.threshold, t98.coverage) == (0.7, 0.5)
    unreachable = precision_thresholds(np.array([0.9, 0.8]), np.array([False, True]), (0.95,))[0]
    assert unreachable.threshold is None and unreachable.coverage == 0.0


def test_evaluate_predictions_and_gates(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = ["billing", "refund", "shipping"]
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.2, 0.6, 0.2], [0.5, 0.3, 0.2]]
    )
    truth = ["billing", "billing", "refund", "shipping", "shipping"]
    e = evaluate_predictions("intent", labels, probabilities, truth)
    assert e.accuracy == 0.6
    assert e.per_label["billing"] == {"precision": 0.6667, "recall": 1.0, "support": 2}
    assert e.per_label["shipping"] == {"precision": 0.0, "recall": 0.0, "support": 2}
    assert e.confused == [("shipping", "billing", 1), ("shipping", "refund", 1)]
    assert [t.threshold for t in e.thresholds] == [0.7, 0.7]  # 0.9, 0.8, 0.7 all right; then 0.6 wrong

    from ticketfleet.core.settings import Settings
    from ticketfleet.pipeline.heads_eval import EvaluationReport

    report = EvaluationReport(fields={"intent": e, "team": e})
    assert report.gates() == {"intent": {"review_below": 0.7, "auto_at": 0.7}}
    monkeypatch.setenv("TICKETFLEET_GATES", report.gates_json())
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.gates["intent"].review_below == 0.7


def test_evaluate_an_artifact_on_labelled_data(tmp_path: Path) -> None:
    data = load_labelled(write_jsonl(tmp_path / "train.jsonl", bad=False))
    result = train_heads(data, featurizer(), recipe=RECIPE, seed=0)
    save(result, tmp_path / "heads")
    artifact = HeadsArtifact.load(tmp_path / "heads")
    report = evaluate(artifact, data, featurizer())
    assert set(report.fields) == {"intent", "sentiment"}
    assert report.fields["intent"].items == 60 and report.fields["sentiment"].items == 30
    assert report.fields["intent"].accuracy >= 0.9
    assert set(report.gates()) == {"intent", "sentiment"}
    with pytest.raises(ConfigurationError, match="trained on fake-model"):
        evaluate(artifact, data, Featurizer("other-model", "r1", hidden=KeywordHidden()))


pytest_plugins = ["tests.engine_fixtures"]


def test_training_on_the_tiny_qwen_engine(tmp_path: Path, tiny_engine) -> None:  # type: ignore[no-untyped-def]
    from ticketfleet.pipeline.heads_training import engine_featurizer

    data = load_labelled(write_jsonl(tmp_path / "train.jsonl", bad=False))
    recipe = FeatureRecipe(hidden=HiddenRecipe(layer=-1, pooling="mean", weight=1.0), lexical=LexicalRecipe())
    result = train_heads(data, engine_featurizer(tiny_engine, batch_size=32), recipe=recipe, seed=0)
    save(result, tmp_path / "heads")
    artifact = HeadsArtifact.load(tmp_path / "heads")
    assert artifact.manifest.model_id == tiny_engine.model_id
    assert artifact.hidden_mean is not None and artifact.hidden_mean.shape == (
        tiny_engine.model.config.hidden_size,
    )
    assert artifact.manifest.fields["intent"].metrics["accuracy"] >= 0.8  # the lexical block alone can do it
    report = evaluate(artifact, data, engine_featurizer(tiny_engine))
    assert report.fields["intent"].items == 60
