"""The model engine: a Hugging Face causal LM that triages tickets and drafts replies.

``TransformersEngine.from_settings`` is the default ``engine_factory`` of the fleet.
"""

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
