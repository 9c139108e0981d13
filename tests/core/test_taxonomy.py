"""A configurable intent taxonomy: validated, constrains the labels, versions the prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ticketfleet.core.schemas import INTENTS, EngineInput, ThreadMessage
from ticketfleet.core.settings import Settings
from ticketfleet.core.taxonomy import TaxonomyError, effective_prompt_version, load_taxonomy
from ticketfleet.engine import TransformersEngine
from ticketfleet.engine.prompts import PROMPT_VERSION

pytest_plugins = ["tests.engine_fixtures"]


def tiny_settings(model_dir: Path, **overrides: object) -> Settings:
    return Settings(model=str(model_dir), device="cpu", max_new_tokens=4, _env_file=None, **overrides)  # type: ignore[call-arg, arg-type]


def _write(tmp_path: Path, intents: list[dict[str, str]]) -> Path:
    path = tmp_path / "intents.json"
    path.write_text(json.dumps({"intents": intents}))
    return path


def test_the_bundled_taxonomy_is_the_default_label_set() -> None:
    assert load_taxonomy(None).labels == INTENTS


def test_custom_taxonomy_constrains_labels_and_versions_the_prompt(
    tiny_qwen_dir: Path, tmp_path: Path
) -> None:
    path = _write(
        tmp_path,
        [
            {"label": "warranty_claim", "description": "a product broke within its warranty"},
            {"label": "invoice_copy", "description": "asks for a copy of an invoice"},
            {"label": "other"},
        ],
    )
    settings = tiny_settings(tiny_qwen_dir, intent_taxonomy=path)
    engine = TransformersEngine.from_settings(settings)
    assert engine.prompt_version.startswith(f"{PROMPT_VERSION}+intents.")
    assert engine.prompt_version == effective_prompt_version(settings)
    assert effective_prompt_version(tiny_settings(tiny_qwen_dir)) == PROMPT_VERSION
    items = [
        EngineInput(item_id=i, thread=[ThreadMessage(role="customer", text=t)], want_draft=False)
        for i, t in enumerate(["My kettle broke after a month", "Please send the March invoice again"])
    ]
    for triage in engine.classify(items):
        assert triage.intent.value in {"warranty_claim", "invoice_copy", "other"}
    prompt = engine.tokenizer.decode(engine._prepare(items[0]).thread_ids)
    assert "warranty claim (a product broke within its warranty)" in prompt


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"intents": [{"label": "a"}, {"label": "a"}]}', "duplicate intent label 'a'"),
        ('{"intents": [{"label": "Billing Stuff"}, {"label": "other"}]}', "intents.0.label"),
        ('{"intents": [{"label": "other"}]}', "at least 2"),
        ("{not json", "file"),
    ],
)
def test_a_broken_taxonomy_file_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / f"bad-{abs(hash(content))}.json"
    path.write_text(content)
    with pytest.raises(TaxonomyError, match=message) as excinfo:
        load_taxonomy(path)
    assert str(path) in str(excinfo.value)
