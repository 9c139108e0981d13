"""Trained heads in the engine: thread features, heads replacing prompted label scoring, identity.

The tiny model's weights are random and so are the heads' here: these tests check mechanics (which
prediction wins, exact probabilities, refusals, what runs), never quality.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from ticketfleet.core.errors import ConfigurationError
from ticketfleet.core.schemas import INTENTS, EngineInput, FieldPrediction, ThreadMessage, Triage
from ticketfleet.core.settings import Settings
from ticketfleet.core.taxonomy import effective_prompt_version
from ticketfleet.core.vocabulary import PROMPT_VERSION, Role
from ticketfleet.engine import TransformersEngine, scoring
from ticketfleet.engine import engine as engine_module
from ticketfleet.engine.heads import (
    FeatureRecipe,
    FieldHead,
    FieldManifest,
    HeadsArtifact,
    HeadsError,
    HiddenRecipe,
    LexicalFeatures,
    LexicalRecipe,
    Manifest,
)
from ticketfleet.pipeline.classify import classify_stream, triage_record

pytest_plugins = ["tests.engine_fixtures"]

MakeSettings = Callable[..., Settings]

TEXTS = [
    "My card was charged twice for the same order, please refund one of them.",
    "The app crashes every time I try to log in on Android.",
    "Thanks a lot, the replacement arrived today and works great!",
    "Where is my package? Tracking has not moved for a week.",
]
ITEMS = [
    EngineInput(item_id=i, thread=[ThreadMessage(role=Role.customer, text=text)], want_draft=False)
    for i, text in enumerate(TEXTS)
]
# A BANKING77-style intent set: not the engine's taxonomy, and longer than any of its labels.
BANK_INTENTS = ["card_payment_not_recognised", "transfer_not_received_by_recipient", "lost_or_stolen_card"]
QUEUES = ["tier1", "tier2", "billing_desk"]
RECIPE = HiddenRecipe(layer=-1, pooling="mean")


def build_heads(
    engine: TransformersEngine,
    directory: Path,
    fields: dict[str, list[str]],
    *,
    recipe: HiddenRecipe = RECIPE,
    model_id: str | None = None,
    seed: int = 0,
) -> HeadsArtifact:
    """Random heads over real features (hidden states standardised on ``ITEMS``, hashed n-grams)."""
    rng = np.random.default_rng(seed)
    hidden = engine.thread_features(ITEMS, layer=recipe.layer, pooling=recipe.pooling)
    lexical = LexicalFeatures(LexicalRecipe(n_features=64))
    lexical.fit_idf(engine.head_texts(ITEMS))
    width = hidden.shape[1] + 2 * 64
    heads = {
        name: FieldHead(
            labels=labels,
            coef=rng.normal(size=(len(labels), width)).astype(np.float32),
            intercept=rng.normal(size=len(labels)).astype(np.float32),
            temperature=1.5,
        )
        for name, labels in fields.items()
    }
    artifact = HeadsArtifact(
        manifest=Manifest(
            model_id=model_id or engine.model_id,
            model_revision=engine.model_revision,
            features=FeatureRecipe(hidden=recipe, lexical=lexical.recipe),
            fields={name: FieldManifest(labels=labels) for name, labels in fields.items()},
            data_fingerprint="test",
            created_at=datetime.now(UTC).isoformat(),
        ),
        heads=heads,
        hidden_mean=hidden.mean(axis=0),
        hidden_scale=hidden.std(axis=0) + 1e-3,
        lexical=lexical,
    )
    artifact.save(directory)
    return HeadsArtifact.load(directory)


def expected(
    engine: TransformersEngine, artifact: HeadsArtifact, items: list[EngineInput]
) -> dict[str, list]:
    """Per field, ``(label, probability)`` per item, straight from ``artifact.predict``."""
    recipe = artifact.manifest.features.hidden
    assert recipe is not None
    hidden = engine.thread_features(items, layer=recipe.layer, pooling=recipe.pooling)
    probs = artifact.predict(hidden, engine.head_texts(items))
    return {
        name: [(artifact.heads[name].labels[int(row.argmax())], float(row.max())) for row in p]
        for name, p in probs.items()
    }


# --- thread features ---------------------------------------------------------------------------------


def test_thread_features_shape_determinism_and_rows(tiny_engine: TransformersEngine) -> None:
    features = tiny_engine.thread_features(ITEMS, layer=-1)
    hidden = tiny_engine.model.config.hidden_size
    assert features.shape == (len(ITEMS), hidden)
    assert features.dtype == np.float32
    assert np.isfinite(features).all()
    np.testing.assert_array_equal(features, tiny_engine.thread_features(ITEMS, layer=-1))
    # Different threads, different rows; the batch does not change a row.
    for i in range(len(ITEMS)):
        for j in range(i + 1, len(ITEMS)):
            assert not np.allclose(features[i], features[j])
    one_by_one = np.stack([tiny_engine.thread_features([item], layer=-1)[0] for item in ITEMS])
    np.testing.assert_allclose(features, one_by_one, atol=1e-5)
    # Layers and poolings are different features.
    assert not np.allclose(features, tiny_engine.thread_features(ITEMS, layer=0))
    assert not np.allclose(features, tiny_engine.thread_features(ITEMS, layer=-1, pooling="last"))
    assert tiny_engine.thread_features([], layer=-1).shape == (0, hidden)


def test_thread_features_pool_the_thread_tokens_of_a_full_forward(tiny_engine: TransformersEngine) -> None:
    """Mean over the thread's tokens after the system prompt, as one plain forward pass sees them."""
    import torch

    item = ITEMS[1]
    prepared = tiny_engine._prepare(item)
    system = tiny_engine.tokenizer.apply_chat_template(tiny_engine._system_messages(), tokenize=False)
    start = len(tiny_engine._encode(system))
    assert prepared.thread_ids[:start] == tiny_engine._encode(system)
    with torch.inference_mode():
        out = tiny_engine.model.model(
            input_ids=torch.tensor([prepared.thread_ids]), output_hidden_states=True
        )
    for layer in (0, 1, -1):
        reference = out.hidden_states[layer][0, start:].float().mean(0).numpy()
        np.testing.assert_allclose(tiny_engine.thread_features([item], layer=layer)[0], reference, atol=1e-5)
    last = out.hidden_states[-1][0, -1].float().numpy()
    np.testing.assert_allclose(
        tiny_engine.thread_features([item], layer=-1, pooling="last")[0], last, atol=1e-5
    )


def test_thread_features_respect_the_token_budget(make_settings: MakeSettings) -> None:
    small = TransformersEngine.from_settings(make_settings(batch_max_tokens=64))
    big = TransformersEngine.from_settings(make_settings())
    np.testing.assert_allclose(
        small.thread_features(ITEMS, layer=-1), big.thread_features(ITEMS, layer=-1), atol=1e-5
    )


def test_thread_features_refuse_unknown_layers_and_poolings(tiny_engine: TransformersEngine) -> None:
    layers = tiny_engine.model.config.num_hidden_layers
    with pytest.raises(ValueError, match="out of range"):
        tiny_engine.thread_features(ITEMS, layer=layers + 1)
    with pytest.raises(ValueError, match="pooling"):
        tiny_engine.thread_features(ITEMS, layer=-1, pooling="max")


# --- heads in classify and process -----------------------------------------------------------------


def test_an_intent_head_decides_intent_and_extra_fields_appear(
    tiny_engine: TransformersEngine, make_settings: MakeSettings, tmp_path: Path
) -> None:
    artifact = build_heads(tiny_engine, tmp_path / "heads", {"intent": BANK_INTENTS, "queue": QUEUES})
    engine = TransformersEngine.from_settings(make_settings(heads=tmp_path / "heads"))
    want = expected(engine, artifact, ITEMS)
    plain = tiny_engine.classify(ITEMS)
    triages = engine.classify(ITEMS)
    for i, triage in enumerate(triages):
        assert (triage.intent.value, triage.intent.confidence) == want["intent"][i]
        assert triage.intent.value in BANK_INTENTS
        assert set(triage.extra) == {"queue"}
        assert (triage.extra["queue"].value, triage.extra["queue"].confidence) == want["queue"][i]
        # Fields without a head keep prompted label scoring; language keeps the detector.
        assert triage.sentiment.value == plain[i].sentiment.value
        assert triage.sentiment.confidence == pytest.approx(plain[i].sentiment.confidence, abs=1e-4)
        assert triage.priority.value == plain[i].priority.value
        assert triage.language == plain[i].language
    # The intent head replaces intent's label scoring (and its calibration prior).
    assert set(engine.score_fields(ITEMS[:1])[0]) == {"sentiment", "priority"}
    assert set(engine.label_priors()) == set()
    # process agrees with classify, drafts or not.
    drafted = [item.model_copy(update={"want_draft": i % 2 == 0}) for i, item in enumerate(ITEMS)]
    for output, triage in zip(engine.process(drafted), triages, strict=True):
        assert output.triage.intent == triage.intent
        assert output.triage.extra == triage.extra
        assert output.triage.sentiment.value == triage.sentiment.value


def test_heads_for_every_prompted_field_skip_label_scoring(
    tiny_engine: TransformersEngine,
    make_settings: MakeSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fields = {
        "sentiment": ["negative", "neutral", "positive"],
        "intent": BANK_INTENTS,
        "priority": ["low", "high"],
    }
    artifact = build_heads(
        tiny_engine, tmp_path / "heads", fields, recipe=HiddenRecipe(layer=1, pooling="last")
    )
    engine = TransformersEngine.from_settings(make_settings(heads=tmp_path / "heads"))
    want = expected(engine, artifact, ITEMS)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("label scoring ran although every field has a head")

    for module in (engine_module, scoring):
        monkeypatch.setattr(module, "score_fields_and_continue", refuse)
        monkeypatch.setattr(module, "score_fields", refuse)
    monkeypatch.setattr(scoring, "score_options_and_continue", refuse)
    triages = engine.classify(ITEMS)
    for i, triage in enumerate(triages):
        for name in fields:
            prediction = getattr(triage, name)
            assert (prediction.value, prediction.confidence) == want[name][i]
        assert triage.extra == {}
    # process too: drafts prefill their own prompts.
    outputs = engine.process([item.model_copy(update={"want_draft": True}) for item in ITEMS])
    assert [o.triage for o in outputs] == triages
    assert all(o.draft is not None for o in outputs)


def test_heads_trained_on_another_model_are_refused(
    tiny_engine: TransformersEngine, make_settings: MakeSettings, tmp_path: Path
) -> None:
    build_heads(tiny_engine, tmp_path / "heads", {"intent": BANK_INTENTS}, model_id="other/model")
    with pytest.raises(HeadsError, match="trained on other/model@") as caught:
        TransformersEngine.from_settings(make_settings(heads=tmp_path / "heads"))
    assert isinstance(caught.value, ConfigurationError)
    assert "retrain them" in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"language": ["en", "de"]}, "may not be named 'language'"),
        ({"queue_confidence": QUEUES}, "may not be named"),
        ({"priority": ["low", "x" * 17]}, "longer than the 16 characters"),
    ],
)
def test_heads_the_engine_cannot_use_are_refused(
    tiny_engine: TransformersEngine,
    make_settings: MakeSettings,
    tmp_path: Path,
    fields: dict[str, list[str]],
    message: str,
) -> None:
    build_heads(tiny_engine, tmp_path / "heads", fields)
    with pytest.raises(HeadsError, match=message):
        TransformersEngine.from_settings(make_settings(heads=tmp_path / "heads"))


def test_prompt_version_carries_the_heads_digest(
    tiny_engine: TransformersEngine, make_settings: MakeSettings, tmp_path: Path
) -> None:
    artifact = build_heads(tiny_engine, tmp_path / "heads", {"intent": BANK_INTENTS})
    settings = make_settings(heads=tmp_path / "heads")
    assert effective_prompt_version(settings) == f"{PROMPT_VERSION}+heads.{artifact.digest}"
    assert (
        TransformersEngine.from_settings(settings).prompt_version
        == f"{PROMPT_VERSION}+heads.{artifact.digest}"
    )
    # Retraining changes the digest, so older results become stale.
    retrained = build_heads(tiny_engine, tmp_path / "heads", {"intent": BANK_INTENTS}, seed=1)
    assert retrained.digest != artifact.digest
    assert effective_prompt_version(settings) == f"{PROMPT_VERSION}+heads.{retrained.digest}"
    assert effective_prompt_version(make_settings()) == PROMPT_VERSION


def test_missing_heads_manifest_is_a_configuration_error(make_settings: MakeSettings, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=str(tmp_path / "nowhere" / "manifest.json")):
        effective_prompt_version(make_settings(heads=tmp_path / "nowhere"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="broken"):
        effective_prompt_version(make_settings(heads=tmp_path / "broken"))


# --- ticketfleet classify ------------------------------------------------------------------------------


def test_classify_prints_extra_fields(
    tiny_engine: TransformersEngine, make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings()
    triage = Triage(
        language=FieldPrediction(value="en", confidence=0.9),
        sentiment=FieldPrediction(value="neutral", confidence=0.5),
        intent=FieldPrediction(value="lost_or_stolen_card", confidence=0.7),
        priority=FieldPrediction(value="high", confidence=0.6),
        extra={"queue": FieldPrediction(value="tier2", confidence=0.81234)},
    )
    record = triage_record(7, triage, settings.gates)
    assert record["intent"] == "lost_or_stolen_card"
    assert record["queue"] == "tier2"
    assert record["queue_confidence"] == 0.8123
    assert "queue_gate" not in record

    build_heads(tiny_engine, tmp_path / "heads", {"queue": QUEUES})
    engine = TransformersEngine.from_settings(make_settings(heads=tmp_path / "heads"))
    lines = "".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(TEXTS))
    out = io.StringIO()
    classify_stream(io.BytesIO(lines.encode()), out, engine, batch_size=8, policies=settings.gates)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["id"] for r in records] == list(range(len(TEXTS)))
    for r in records:
        assert r["queue"] in QUEUES
        assert 0 < r["queue_confidence"] <= 1
        assert r["intent"] in INTENTS
