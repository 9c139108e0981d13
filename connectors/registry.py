"""Kinds of source → the module that builds them. Modules are imported lazily, by path, so a
connector whose module (or optional dependency) is missing breaks only the sources of that kind.

Each module exposes ``from_config(name, options, secrets, http) -> Connector`` and a pydantic
``<Kind>Options`` model (``FilesOptions``, ``ZendeskOptions``, …) validating its ``[sources.options]``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

import httpx
from pydantic import BaseModel, ValidationError

from connectors.base import ConfigError, Connector
from connectors.http import RequestBudget, SourceHttp
from ticketfleet.core.errors import describe_validation_error

if TYPE_CHECKING:
    from connectors.sources_file import SourceConfig

KINDS: dict[str, str] = {
    "files": "connectors.files",
    "zendesk": "connectors.zendesk",
    "freshdesk": "connectors.freshdesk",
    "zammad": "connectors.zammad",
    "jsm": "connectors.jsm",
    "rt": "connectors.rt",
    "imap": "connectors.imap",
    "webhook": "connectors.webhook",
}


def connector_module(kind: str) -> ModuleType:
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    try:
        module = importlib.import_module(KINDS[kind])
    except ImportError as exc:
        raise ConfigError(f"kind {kind!r}: module {KINDS[kind]} is not available ({exc})") from exc
    if not hasattr(module, "from_config"):
        raise ConfigError(f"kind {kind!r}: module {KINDS[kind]} has no from_config()")
    return module


def options_model(kind: str) -> type[BaseModel]:
    module = connector_module(kind)
    wanted = f"{kind}options"
    for attribute in dir(module):
        candidate = getattr(module, attribute)
        if attribute.lower() == wanted and isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    raise ConfigError(f"kind {kind!r}: module {KINDS[kind]} has no {kind.capitalize()}Options model")


def build_http(source: SourceConfig) -> SourceHttp | None:
    """The source's HTTP client: base URL, timeouts, and a budget of ``requests_per_minute``."""
    if source.base_url is None:
        return None
    client = httpx.Client(
        base_url=source.base_url,
        timeout=httpx.Timeout(source.timeout_seconds, connect=min(10.0, source.timeout_seconds)),
        headers={"User-Agent": "ticketfleet"},
    )
    return SourceHttp(
        client,
        source=source.name,
        budget=RequestBudget(requests_per_minute=source.requests_per_minute),
    )


def build_connector(source: SourceConfig) -> Connector:
    module = connector_module(source.kind)
    http = build_http(source)
    try:
        connector: Connector = module.from_config(source.name, dict(source.options), source.secrets, http)
    except ValidationError as exc:
        if http is not None:
            http.client.close()
        raise ConfigError(describe_validation_error(exc, prefix="options."), source=source.name) from exc
    except Exception:
        if http is not None:
            http.client.close()
        raise
    return connector
