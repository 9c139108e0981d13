"""The sources file: secrets from the environment, per-kind options, errors naming file/source/field."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.base import ConfigError
from connectors.files import FilesConnector
from connectors.registry import KINDS, build_connector, build_http, options_model
from connectors.sources_file import SourcesFileError, load_sources


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(text)
    return path


def test_loads_sources_resolving_secrets_and_options(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"""
[[sources]]
name = "backlog-files"
kind = "files"
lane = "backlog"
poll_interval_seconds = 30
[sources.options]
path = "{tmp_path}/*.jsonl"
page_size = 7

[[sources]]
name = "support"
kind = "files"
enabled = false
write_back = true
requests_per_minute = 10
base_url = "https://acme.example.com"
token_env = "TF_TEST_TOKEN"
[sources.options]
path = "{tmp_path}/x.jsonl"
""",
    )
    loaded = load_sources(path, environ={"TF_TEST_TOKEN": "s3cret"})
    first, second = loaded.sources
    assert first.lane == "backlog" and first.poll_interval_seconds == 30
    assert first.options["page_size"] == 7
    assert second.secrets["token"].get_secret_value() == "s3cret"
    assert "s3cret" not in repr(second)
    assert [s.name for s in loaded.enabled] == ["backlog-files"]
    connector = build_connector(first)
    assert isinstance(connector, FilesConnector) and connector.page_size == 7
    http = build_http(second)
    assert http is not None and http.budget.requests_per_minute == 10
    assert str(http.client.base_url).startswith("https://acme.example.com")
    http.client.close()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('name = "a"\nkind = "nope"', "source 'a': kind: unknown kind 'nope'"),
        ('name = "a"\nkind = "files"\nlane = "fast"\n[sources.options]\npath = "x"', "source 'a': lane:"),
        (
            'name = "a"\nkind = "files"\n[sources.options]\npath = "x"\npage_sise = 3',
            "source 'a': options.page_sise: unknown field",
        ),
        ('name = "a"\nkind = "files"\n[sources.options]\npage_size = 3', "options.path: field required"),
        ('name = "a"\nkind = "files"\ntoken_env = "TF_UNSET_VAR"', "token_env: environment variable"),
        ('name = "a"\nkind = "files"\npoll_interval_seconds = 0', "poll_interval_seconds:"),
        ('name = "a b"\nkind = "files"', "name: String should match pattern"),
    ],
)
def test_errors_name_file_source_and_field(tmp_path: Path, body: str, expected: str) -> None:
    path = _write(tmp_path, f"[[sources]]\n{body}\n")
    with pytest.raises(SourcesFileError) as caught:
        load_sources(path, environ={})
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_every_problem_is_reported_and_duplicates_are_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[[sources]]\nname = "a"\nkind = "files"\n[sources.options]\npath = "x"\n'
        '[[sources]]\nname = "a"\nkind = "files"\n[sources.options]\npath = "y"\n'
        '[[sources]]\nname = "b"\nkind = "zzz"\n',
    )
    with pytest.raises(SourcesFileError) as caught:
        load_sources(path, environ={})
    message = str(caught.value)
    assert "source 'a': name: duplicate source name" in message
    assert "source 'b': kind: unknown kind 'zzz'" in message


def test_missing_file_means_no_sources_and_bad_toml_is_reported(tmp_path: Path) -> None:
    assert load_sources(tmp_path / "absent.toml").sources == []
    path = _write(tmp_path, "[[sources]\nname=")
    with pytest.raises(SourcesFileError, match="not valid TOML"):
        load_sources(path)


def test_registry_knows_all_eight_kinds_and_reports_missing_modules() -> None:
    assert set(KINDS) == {"files", "zendesk", "freshdesk", "zammad", "jsm", "rt", "imap", "webhook"}
    assert options_model("files").__name__ == "FilesOptions"
    with pytest.raises(ConfigError, match="unknown kind"):
        options_model("nope")


def test_names_and_schedules_load_without_the_secrets(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[[sources]]\nname = "a"\nkind = "files"\ntoken_env = "TF_UNSET"\n[sources.options]\npath = "x"\n',
    )
    (source,) = load_sources(path, environ={}, require_secrets=False).sources
    assert source.name == "a" and source.secrets == {}
