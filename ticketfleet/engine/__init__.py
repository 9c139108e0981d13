"""The model engine: a Hugging Face causal LM that triages tickets and drafts replies.

``TransformersEngine.from_settings`` is the default ``engine_factory`` of the fleet.

The package imports lazily (PEP 562): ``import ticketfleet.engine`` or ``from ticketfleet.engine
import resolve_model`` does not import torch; only touching ``TransformersEngine`` or
``CALIBRATED_FIELDS`` loads the engine (and torch). Producers (API, importers, the CLI) never run the
model and must stay light.

Modules, one idea each:

- ``engine``: ``TransformersEngine``, the ``Engine`` protocol on one loaded model.
- ``loading``: finding and loading the model, offline only.
- ``prompts``: the prompt text; ``injection``: screening customer text addressed to the AI.
- ``trimming``: fitting a thread into the input budget.
- ``prefix_cache``: prompt prefixes shared by a batch, run once and kept across calls.
- ``scoring``: constrained label scoring; ``calibration``: label confidences and their calibration.
- ``drafting``: batched greedy generation of reply drafts.
- ``heads``: trained heads (per-field classifiers) and their artifact; ``features``: the hidden-state
  features of a thread they read (``TransformersEngine.thread_features``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ticketfleet.engine.engine import CALIBRATED_FIELDS, TransformersEngine
    from ticketfleet.engine.loading import (
        ModelLoadError,
        ResolvedModel,
        model_available_locally,
        resolve_model,
        smollm2_gguf_path,
    )

__all__ = [
    "CALIBRATED_FIELDS",
    "ModelLoadError",
    "ResolvedModel",
    "TransformersEngine",
    "model_available_locally",
    "resolve_model",
    "smollm2_gguf_path",
]

_HOMES: dict[str, str] = {
    "CALIBRATED_FIELDS": "ticketfleet.engine.engine",
    "TransformersEngine": "ticketfleet.engine.engine",
    "ModelLoadError": "ticketfleet.engine.loading",
    "ResolvedModel": "ticketfleet.engine.loading",
    "model_available_locally": "ticketfleet.engine.loading",
    "resolve_model": "ticketfleet.engine.loading",
    "smollm2_gguf_path": "ticketfleet.engine.loading",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
