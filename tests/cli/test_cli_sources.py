"""`ticketfleet sources list|check|poll`, the sources section of `status`, and the beat schedule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.fakes.zendesk import FakeZendesk
from ticketfleet.cli.main import app
from ticketfleet.core.settings import Settings, get_settings

runner = CliRunner()


@pytest.fixture
def sources_env(
    monkeypatch: pytest.MonkeyPatch,
    clean_db: str,
    flushed_redis: str,
    tmp_path: Path,
    zendesk: tuple[FakeZendesk, str],
) -> Iterator[Path]:
    api, base_url = zendesk
    (tmp_path / "in.jsonl").write_text('{"external_id": "f1", "text": "hello"}\n')
    sources = tmp_path / "sources.toml"
    sources.write_text(
        f'[[sources]]\nname = "zd"\nkind = "zendesk"\nbase_url = "{base_url}"\n'
        f'token_env = "TF_TEST_ZD_TOKEN"\npoll_interval_seconds = 45\n'
        f'[sources.options]\nemail = "{api.email}"\n\n'
        f'[[sources]]\nname = "drop"\nkind = "files"\nlane = "backlog"\nenabled = false\n'
        f'[sources.options]\npath = "{tmp_path}/*.jsonl"\n'
    )
    monkeypatch.setenv("TICKETFLEET_DATABASE_URL", clean_db)
    monkeypatch.setenv("TICKETFLEET_REDIS_URL", flushed_redis)
    monkeypatch.setenv("TICKETFLEET_SOURCES_FILE", str(sources))
    monkeypatch.setenv("TF_TEST_ZD_TOKEN", api.token)
    monkeypatch.setenv("COLUMNS", "300")
    get_settings.cache_clear()
    yield sources
    get_settings.cache_clear()


def test_list_check_and_poll(sources_env: Path, zendesk: tuple[FakeZendesk, str]) -> None:
    api, _ = zendesk
    listed = runner.invoke(app, ["sources", "list"])
    assert listed.exit_code == 0, listed.output
    zd_row = next(line for line in listed.output.splitlines() if "│ zd" in line)
    assert "zendesk" in zd_row and "45 s" in zd_row and "never polled" in zd_row

    checked = runner.invoke(app, ["sources", "check", "zd"])
    assert checked.exit_code == 0, checked.output
    assert f"signed in as {api.email}" in checked.output

    api.create_ticket(subject="Hi", text="where is my order")
    api.advance(61)
    polled = runner.invoke(app, ["sources", "poll", "zd", "--once"])
    assert polled.exit_code == 0, polled.output
    assert "'items': 1" in polled.output
    listed = runner.invoke(app, ["sources", "list"])
    zd_row = next(line for line in listed.output.splitlines() if "│ zd" in line)
    assert "ok (last success" in zd_row and "none" not in zd_row.split("│")[6]

    files = runner.invoke(app, ["sources", "poll", "drop", "--once"])
    assert files.exit_code == 0 and "'items': 1" in files.output


def test_check_and_poll_report_errors_and_status_shows_the_failing_source(
    sources_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_TEST_ZD_TOKEN", "wrong-token")
    checked = runner.invoke(app, ["sources", "check", "zd"])
    assert checked.exit_code == 1
    assert "AuthError" in checked.output and "wrong-token" not in checked.output
    polled = runner.invoke(app, ["sources", "poll", "zd", "--once"])
    assert polled.exit_code == 1 and "AuthError" in polled.output
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    zd_row = next(line for line in status.output.splitlines() if "│ zd" in line)
    assert "FAILING: 1 failure(s)" in zd_row and "AuthError" in zd_row
    skipped = runner.invoke(app, ["sources", "poll", "zd", "--once"])
    assert "backing off" in skipped.output, "a failing source is not polled in a hot loop"


def test_unknown_source_and_broken_file_are_clear_errors(sources_env: Path) -> None:
    missing = runner.invoke(app, ["sources", "check", "nope"])
    assert missing.exit_code == 2 and "no source named 'nope'" in missing.output
    sources_env.write_text(sources_env.read_text().replace('kind = "files"', 'kind = "filez"'))
    broken = runner.invoke(app, ["sources", "list"])
    assert broken.exit_code == 2 and "source 'drop': kind: unknown kind 'filez'" in broken.output


def test_beat_schedules_one_poll_per_enabled_source(sources_env: Path) -> None:
    from ticketfleet.broker import SOURCE_POLL_TASK
    from ticketfleet.pipeline.polling import source_poll_schedule

    schedule = source_poll_schedule(Settings(sources_file=sources_env, _env_file=None))  # type: ignore[call-arg]
    assert schedule == {
        "poll-source-zd": {
            "task": SOURCE_POLL_TASK,
            "schedule": 45.0,
            "kwargs": {"source": "zd"},
            "options": {"expires": 45.0},
        }
    }


def test_source_tasks_run_and_are_routed_to_the_sources_queue(sources_env: Path) -> None:
    from ticketfleet.broker import SOURCE_POLL_TASK, SOURCE_WRITE_BACK_TASK
    from workers.app import app
    from workers.sources import poll

    for task in (SOURCE_POLL_TASK, SOURCE_WRITE_BACK_TASK):
        assert app.amqp.router.route({}, task)["queue"].name == "sources"
    result = poll.run(source="drop")
    assert result["items"] == 1 and result["error"] is None and result["write_backs_resent"] == 0
