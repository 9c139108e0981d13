"""`ticketfleet heads train|eval`: exit codes, messages, the artifact, with an engine that needs no model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ticketfleet.cli.main import app
from ticketfleet.core.schemas import EngineInput, EngineOutput, Triage
from ticketfleet.core.settings import Settings, get_settings
from ticketfleet.engine.heads import HeadsArtifact

PHRASES = {
    "card_arrival": ["my card has not arrived", "when does my card come", "card still not here"],
    "refund": ["I want a refund", "money back please", "refund my order"],
    "password": ["forgot my password", "reset my password", "cannot log in"],
}
WORDS = ("card", "refund", "money", "password", "log", "arrived")


class KeywordEngine:
    """Enough of ``TransformersEngine`` for training: ``thread_features`` and ``head_texts``."""

    model_id = "keyword-model"
    model_revision = "v1"
    prompt_version = "v2"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def thread_features(self, items: list[EngineInput], *, layer: int, pooling: str = "mean") -> np.ndarray:
        return np.asarray([[float(w in i.text.lower()) for w in WORDS] for i in items], dtype=np.float32)

    @staticmethod
    def head_texts(items: list[EngineInput]) -> list[str]:
        return [item.text for item in items]

    def process(self, items: list[EngineInput]) -> list[EngineOutput]:
        raise NotImplementedError

    def classify(self, items: list[EngineInput]) -> list[Triage]:
        raise NotImplementedError

    def draft_instructions(self, language: str) -> str:
        return ""


def keyword_engine(settings: Settings) -> KeywordEngine:
    return KeywordEngine(settings)


@pytest.fixture(autouse=True)
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TICKETFLEET_ENGINE_FACTORY", f"{__name__}:keyword_engine")
    monkeypatch.delenv("TICKETFLEET_HEADS", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def flat(result: object) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(str(result.output).split())  # type: ignore[attr-defined]


def write_data(path: Path, *, bad: bool) -> Path:
    lines = []
    for intent, phrases in PHRASES.items():
        for i in range(20):
            labels = {"intent": intent, "sentiment": "negative" if intent != "password" else "neutral"}
            lines.append(json.dumps({"text": f"{phrases[i % 3]} #{i}", "labels": labels}))
    if bad:
        lines.insert(1, "{oops")  # line 2
        lines.insert(4, json.dumps({"text": "x", "labels": {"intent": ["a"]}}))  # line 5
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_train_writes_heads_and_exits_1_when_lines_were_rejected(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "heads"
    result = runner.invoke(
        app, ["heads", "train", str(write_data(tmp_path / "d.jsonl", bad=True)), "--out", str(out)]
    )
    assert result.exit_code == 1, result.output
    assert "line 2: malformed JSON" in flat(result)
    assert "line 5: labels.intent" in flat(result)
    assert "2 line(s) rejected" in flat(result)
    assert "intent" in flat(result) and "macro-F1" in flat(result)
    artifact = HeadsArtifact.load(out)
    assert artifact.fields == ["intent", "sentiment"]
    assert artifact.manifest.model_id == "keyword-model"

    clean = runner.invoke(
        app,
        [
            "heads",
            "train",
            str(write_data(tmp_path / "ok.jsonl", bad=False)),
            "--out",
            str(tmp_path / "h2"),
            "--fields",
            "intent",
            "--holdout",
            "0.2",
            "--seed",
            "4",
        ],
    )
    assert clean.exit_code == 0, clean.output
    assert HeadsArtifact.load(tmp_path / "h2").fields == ["intent"]


def test_train_errors_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    data = write_data(tmp_path / "d.jsonl", bad=False)
    unknown = runner.invoke(
        app, ["heads", "train", str(data), "--out", str(tmp_path / "h"), "--fields", "team"]
    )
    assert unknown.exit_code == 2
    assert "error:" in flat(unknown) and "team" in flat(unknown)
    missing = runner.invoke(
        app, ["heads", "train", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "h")]
    )
    assert missing.exit_code == 2 and "cannot read" in flat(missing)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("{bad\n", encoding="utf-8")
    nothing = runner.invoke(app, ["heads", "train", str(empty), "--out", str(tmp_path / "h")])
    assert nothing.exit_code == 2 and "no usable labelled line" in flat(nothing)
    assert not (tmp_path / "h").exists()


def test_eval_prints_metrics_gates_and_json(tmp_path: Path) -> None:
    runner = CliRunner()
    data = write_data(tmp_path / "d.jsonl", bad=False)
    assert runner.invoke(app, ["heads", "train", str(data), "--out", str(tmp_path / "h")]).exit_code == 0
    table = runner.invoke(app, ["heads", "eval", str(data), "--heads", str(tmp_path / "h")])
    assert table.exit_code == 0, table.output
    assert "TICKETFLEET_GATES='" in flat(table) and "per label" in flat(table)
    as_json = runner.invoke(app, ["heads", "eval", str(data), "--heads", str(tmp_path / "h"), "--json"])
    assert as_json.exit_code == 0
    report = json.loads(as_json.stdout)
    assert set(report["fields"]) == {"intent", "sentiment"}
    assert report["fields"]["intent"]["items"] == 60
    assert set(report["gates"]) == {"intent", "sentiment"}
    broken = runner.invoke(app, ["heads", "eval", str(data), "--heads", str(tmp_path / "missing")])
    assert broken.exit_code == 2 and "error:" in flat(broken) and "manifest.json" in flat(broken)
