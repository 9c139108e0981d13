"""The per-process engine: loaded once, on worker start-up, from the configured factory.

``engine_factory`` ("module:callable") is the seam for other engines; the default loads a Hugging Face
causal LM. Loading failures propagate: a worker with no model must not start.
"""

from __future__ import annotations

import importlib
import threading

from ticketfleet.core.schemas import Engine
from ticketfleet.core.settings import Settings, get_settings

_engine: Engine | None = None
_lock = threading.Lock()


def import_object(path: str) -> object:
    """Resolve "package.module:attr.sub" to the object it names."""
    module_name, _, attr_path = path.partition(":")
    if not attr_path:
        raise ValueError(f"expected 'module:callable', got {path!r}")
    obj: object = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return obj


def load_engine(settings: Settings) -> Engine:
    factory = import_object(settings.engine_factory)
    if not callable(factory):
        raise TypeError(f"engine_factory {settings.engine_factory!r} is not callable")
    engine = factory(settings)
    if not isinstance(engine, Engine):
        raise TypeError(f"engine_factory {settings.engine_factory!r} returned {type(engine).__name__}")
    return engine


def get_engine(settings: Settings | None = None) -> Engine:
    global _engine
    with _lock:
        if _engine is None:
            _engine = load_engine(settings or get_settings())
        return _engine
