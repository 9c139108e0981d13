"""The command line, in-process through Typer's runner, against the real test database and Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ticketfleet.cli.main import app
from ticketfleet.core.schemas import INTENTS, PRIORITIES, SENTIMENTS
from ticketfleet.core.settings import Settings, get_settings

runner = CliRunner()


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, clean_db: str, flushed_redis: str, settings: Settings
) -> Iterator[None]:
    monkeypatch.setenv("TICKETFLEET_DATABASE_URL", clean_db)
    monkeypatch.setenv("TICKETFLEET_REDIS_URL", flushed_redis)
    monkeypatch.setenv("TICKETFLEET_MODEL", settings.model)
    monkeypatch.setenv("TICKETFLEET_MAX_NEW_TOKENS", "4")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_import_reports_bad_lines_and_keeps_good_ones(cli_env: None, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"external_id": "a", "text": "hello"}\n{"external_id": "b"\n{"external_id": "c", "text": "hi"}\n'
    )
    report = tmp_path / "errors.jsonl"
    result = runner.invoke(app, ["import", str(path), "--errors", str(report)])
    assert result.exit_code == 1
    assert "2 records ok" in result.output
    assert [json.loads(line)["line"] for line in report.read_text().splitlines()] == [2]
    again = runner.invoke(app, ["import", str(path)])
    assert "0 new messages" in again.output


def test_backlog_queues_unprocessed_items_and_status_shows_them(cli_env: None, tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text(
        "".join(json.dumps({"external_id": str(i), "text": f"order {i} late"}) + "\n" for i in range(5))
    )
    assert runner.invoke(app, ["import", str(path)]).exit_code == 0
    result = runner.invoke(app, ["backlog", "--no-wait"])
    assert result.exit_code == 0, result.output
    assert "5 item(s) queued on the backlog lane" in result.output
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    backlog_row = next(line for line in status.output.splitlines() if "backlog" in line)
    assert backlog_row.split("│")[3].strip() == "5"  # pending, queued, …
    assert backlog_row.split("│")[-2].strip() == "1"  # one wake-up message (batch of ids) in Redis


def test_classify_answers_every_good_line_inside_the_label_sets(cli_env: None) -> None:
    lines = [
        {"id": 1, "text": "I was charged twice, refund me now!"},
        {"id": "x-2", "text": "Danke, alles bestens!"},
        "not json",
        {"id": 3, "text": ""},
        {"id": 4, "text": "L'application plante au démarrage."},
    ]
    stdin = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    result = runner.invoke(app, ["classify"], input=stdin)
    assert result.exit_code == 1  # two bad lines were reported
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["id"] for r in records] == [1, "x-2", 4]
    for r in records:
        assert r["sentiment"] in SENTIMENTS and r["intent"] in INTENTS and r["priority"] in PRIORITIES
        for field in ("language", "sentiment", "intent", "priority"):
            assert 0.0 <= r[f"{field}_confidence"] <= 1.0
            assert r[f"{field}_gate"] in ("review", "suggest", "auto")
        fields = ("language", "sentiment", "intent", "priority")
        assert r["needs_review"] == any(r[f"{f}_gate"] == "review" for f in fields)
    assert "line 3: malformed JSON" in result.stderr
    assert "line 4:" in result.stderr


def test_worker_with_a_missing_model_is_a_clear_startup_error(
    cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKETFLEET_MODEL", "/nonexistent/model-dir")
    get_settings.cache_clear()
    result = runner.invoke(app, ["worker", "--lanes", "chat"])
    assert result.exit_code == 2
    assert "/nonexistent/model-dir" in result.output


def test_gpu_option_parsing() -> None:
    import typer

    from ticketfleet.cli.main import _gpu_ids

    assert _gpu_ids("none") == []
    assert _gpu_ids("0, 1,3") == ["0", "1", "3"]
    with pytest.raises(typer.BadParameter):
        _gpu_ids("first")


def test_each_gpu_child_pins_its_own_device() -> None:
    from ticketfleet.cli.main import gpu_child_command

    cmd = gpu_child_command("3", "tickets,backlog", "INFO", beat=False)
    assert "--gpus=3" in cmd and "--name=tickets-backlog-gpu3@%h" in cmd and "--beat" not in cmd
    assert "--beat" in gpu_child_command("0", "chat", "INFO", beat=True)


def test_backlog_stale_requeues_results_of_an_older_prompt_version(
    cli_env: None, settings: Settings, engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from ticketfleet.pipeline.processing import process_lane_batch

    path = tmp_path / "s.jsonl"
    path.write_text(
        "".join(json.dumps({"external_id": str(i), "text": f"refund order {i}"}) + "\n" for i in range(3))
    )
    assert runner.invoke(app, ["import", str(path), "--lane", "backlog"]).exit_code == 0
    report = process_lane_batch(
        "backlog",
        [],
        engine=engine,
        settings=settings,
        database_url=settings.database_url_value() or "",
        worker="t",
    )
    assert report.done == 3
    assert "0 item(s) queued" in runner.invoke(app, ["backlog", "--no-wait", "--stale"]).output
    # A new intent taxonomy changes the prompt, hence the prompt version: every result is now stale.
    taxonomy = tmp_path / "intents.json"
    taxonomy.write_text(json.dumps({"intents": [{"label": "refund"}, {"label": "other"}]}))
    monkeypatch.setenv("TICKETFLEET_INTENT_TAXONOMY", str(taxonomy))
    get_settings.cache_clear()
    assert "0 item(s) queued" in runner.invoke(app, ["backlog", "--no-wait"]).output
    assert "3 item(s) queued" in runner.invoke(app, ["backlog", "--no-wait", "--stale"]).output
