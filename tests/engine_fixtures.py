"""Fixtures for the model-engine tests: the tiny Qwen2.5 model and an engine on it (no services needed).

Load them in a test module with ``pytest_plugins = ["tests.engine_fixtures"]``. The model is built
once into the same cache the fleet tests use (``$TICKETFLEET_TEST_CACHE``) and reused across sessions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ticketfleet.core.settings import Settings
from ticketfleet.engine import TransformersEngine
from ticketfleet.testing.tiny_qwen import build_tiny_qwen

REPO_ROOT = Path(__file__).resolve().parent.parent


def tiny_settings(model_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"model": str(model_dir), "device": "cpu", "max_new_tokens": 6}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


@pytest.fixture(scope="session")
def tiny_qwen_dir() -> Path:
    cache = Path(os.environ.get("TICKETFLEET_TEST_CACHE", REPO_ROOT / ".ticketfleet" / "test-cache"))
    return build_tiny_qwen(cache)


@pytest.fixture(scope="session")
def make_settings(tiny_qwen_dir: Path) -> Callable[..., Settings]:
    """``make_settings(**overrides)``: settings for the tiny model, ignoring any ``.env`` file."""

    def make(**overrides: object) -> Settings:
        return tiny_settings(tiny_qwen_dir, **overrides)

    return make


@pytest.fixture(scope="session")
def tiny_engine(tiny_qwen_dir: Path) -> TransformersEngine:
    return TransformersEngine.from_settings(tiny_settings(tiny_qwen_dir))
