"""The sources file: which ticket systems the fleet polls and writes back to.

A TOML file (``TICKETFLEET_SOURCES_FILE``, default ``sources.toml``) of ``[[sources]]`` tables::

    [[sources]]
    name = "support"
    kind = "zendesk"
    base_url = "https://acme.zendesk.com"
    lane = "live"                 # chat items → chat lane, tickets → tickets lane; or "backlog"
    poll_interval_seconds = 60
    requests_per_minute = 200
    write_back = true
    token_env = "ZENDESK_TOKEN"   # secrets are env var NAMES, resolved here into SecretStr
    [sources.options]             # validated by the kind's <Kind>Options model
    email = "bot@acme.com"

Every error names the file, the source and the field, so a typo is found without reading code.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from ticketfleet.core.errors import ConfigurationError, describe_validation_error

SECRET_SUFFIX = "_env"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class SourcesFileError(ValueError, ConfigurationError):
    """The sources file cannot be used; the message names file, source and field.

    A :class:`ConfigurationError` (the operator fixes the file); still a ``ValueError`` for callers
    written before the application error tree.
    """


class SourceConfig(BaseModel):
    """One configured source, secrets resolved, options validated by the kind's options model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    kind: str
    enabled: bool = True
    poll_interval_seconds: float = Field(default=60.0, gt=0)
    lane: Literal["live", "backlog"] = "live"
    requests_per_minute: float | None = Field(default=None, gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0)
    write_back: bool = False
    base_url: str | None = None
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        from connectors.registry import KINDS

        if value not in KINDS:
            raise ValueError(f"unknown kind {value!r}; known kinds: {', '.join(sorted(KINDS))}")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value


@dataclass(frozen=True)
class SourcesFile:
    path: Path
    sources: list[SourceConfig]

    def get(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise SourcesFileError(f"{self.path}: no source named {name!r} (configured: {known})")

    @property
    def enabled(self) -> list[SourceConfig]:
        return [s for s in self.sources if s.enabled]


def load_sources(
    path: Path, *, environ: dict[str, str] | None = None, require_secrets: bool = True
) -> SourcesFile:
    """Read and validate the whole file; raise :class:`SourcesFileError` listing every problem.

    ``require_secrets=False`` is for callers that only need names and schedules (beat, write-back
    planning on a GPU worker): a secret whose variable is unset there is left out, not an error.
    """
    env = os.environ if environ is None else environ
    if not path.exists():
        return SourcesFile(path, [])
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SourcesFileError(f"{path}: not valid TOML: {exc}") from exc
    unknown_top = set(raw) - {"sources"}
    if unknown_top:
        raise SourcesFileError(
            f"{path}: unknown top-level key(s) {sorted(unknown_top)}; expected [[sources]]"
        )
    entries = raw.get("sources", [])
    if not isinstance(entries, list):
        raise SourcesFileError(f"{path}: 'sources' must be an array of tables ([[sources]])")
    problems: list[str] = []
    sources: list[SourceConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        label = f"{path}: source #{index + 1}"
        if not isinstance(entry, dict):
            problems.append(f"{label}: expected a table")
            continue
        if isinstance(entry.get("name"), str):
            label = f"{path}: source {entry['name']!r}"
        try:
            source = _parse_source(entry, env, require_secrets)
        except SourcesFileError as exc:
            problems.append(f"{label}: {exc}")
            continue
        if source.name in seen:
            problems.append(f"{label}: name: duplicate source name")
            continue
        seen.add(source.name)
        sources.append(source)
    if problems:
        raise SourcesFileError("\n".join(problems))
    return SourcesFile(path, sources)


def _parse_source(entry: dict[str, Any], env: Any, require_secrets: bool) -> SourceConfig:
    fields = dict(entry)
    secrets: dict[str, SecretStr] = {}
    for key in [k for k in fields if k.endswith(SECRET_SUFFIX)]:
        variable = fields.pop(key)
        if not isinstance(variable, str) or not variable:
            raise SourcesFileError(f"{key}: must name an environment variable")
        value = env.get(variable)
        if not value:
            if not require_secrets:
                continue
            raise SourcesFileError(f"{key}: environment variable {variable} is not set")
        secrets[key.removesuffix(SECRET_SUFFIX)] = SecretStr(value)
    if "secrets" in fields:
        raise SourcesFileError('secrets: give secrets as <name>_env = "ENV_VAR", never inline')
    options = fields.pop("options", {})
    if not isinstance(options, dict):
        raise SourcesFileError("options: must be a table ([sources.options])")
    try:
        source = SourceConfig.model_validate({**fields, "secrets": secrets})
    except ValidationError as exc:
        raise SourcesFileError(describe_validation_error(exc)) from exc
    return source.model_copy(update={"options": _validate_options(source.kind, options)})


def _validate_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    from connectors.base import ConfigError
    from connectors.registry import options_model

    try:
        model = options_model(kind)
    except ConfigError:
        # The kind's module is not installed here: keep the raw options; building the connector
        # reports the missing module for this source only, the others keep working.
        return options
    try:
        return model.model_validate(options).model_dump()
    except ValidationError as exc:
        raise SourcesFileError(describe_validation_error(exc, prefix="options.")) from exc


def load_configured_sources(settings: Any, *, require_secrets: bool = True) -> SourcesFile:
    """The sources file named by the settings."""
    return load_sources(Path(settings.sources_file), require_secrets=require_secrets)
