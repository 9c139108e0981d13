"""The intent taxonomy: which intents the triage may answer, from a JSON file.

The default (``ticketfleet/data/intents.json``) is a general support taxonomy. A team with its own
categories points ``TICKETFLEET_INTENT_TAXONOMY`` at a file of the same shape::

    {"intents": [{"label": "billing", "description": "charges, invoices, payment methods"}, …]}

Labels are what gets stored and written back; descriptions, when given, are shown to the model. A
custom taxonomy changes the prompt, so it becomes part of the prompt version recorded with every
result (``v2+intents.<hash>``), and ``ticketfleet backlog --stale`` reprocesses older results.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ticketfleet.core.errors import ConfigurationError, describe_validation_error
from ticketfleet.core.settings import Settings

DEFAULT_TAXONOMY = Path(__file__).parent.parent / "data" / "intents.json"


class TaxonomyError(ValueError, ConfigurationError):
    """The taxonomy file cannot be used; the message names the file and what is wrong.

    A :class:`ConfigurationError`; still a ``ValueError`` for callers that catch that.
    """


class IntentLabel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="snake_case, stored as is")
    description: str = Field(default="", max_length=200)


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    intents: tuple[IntentLabel, ...] = Field(min_length=2, max_length=64)

    @field_validator("intents")
    @classmethod
    def _unique(cls, intents: tuple[IntentLabel, ...]) -> tuple[IntentLabel, ...]:
        seen: set[str] = set()
        for intent in intents:
            if intent.label in seen:
                raise ValueError(f"duplicate intent label {intent.label!r}")
            seen.add(intent.label)
        return intents

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(i.label for i in self.intents)

    @property
    def descriptions(self) -> dict[str, str]:
        return {i.label: i.description for i in self.intents if i.description}

    def fingerprint(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]


@lru_cache(maxsize=8)
def load_taxonomy(path: Path | None = None) -> Taxonomy:
    source = path or DEFAULT_TAXONOMY
    try:
        return Taxonomy.model_validate_json(source.read_bytes())
    except OSError as exc:
        raise TaxonomyError(f"intent taxonomy {source}: cannot read it ({exc.strerror})") from exc
    except ValidationError as exc:
        problems = describe_validation_error(exc, whole="file")
        raise TaxonomyError(f"intent taxonomy {source}: {problems}") from exc


def effective_prompt_version(settings: Settings) -> str:
    """The prompt version results are recorded under: the base version, plus the taxonomy's
    fingerprint when it is not the bundled default, plus the trained heads' digest when
    ``settings.heads`` is set, so retraining makes older results stale. The digest is read from the
    heads' ``manifest.json`` (ticketfleet/engine/heads.py writes it) with plain JSON: the core does not
    load the engine."""
    taxonomy = load_taxonomy(settings.intent_taxonomy)
    version = settings.prompt_version
    if taxonomy != load_taxonomy(None):
        version = f"{version}+intents.{taxonomy.fingerprint()}"
    if settings.heads is not None:
        manifest = settings.heads / "manifest.json"
        try:
            digest = json.loads(manifest.read_text(encoding="utf-8"))["digest"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"heads {manifest}: cannot read the digest ({exc!r}); point TICKETFLEET_HEADS at a "
                "directory written by `ticketfleet heads train`"
            ) from exc
        if not isinstance(digest, str) or not digest:
            raise ConfigurationError(f"heads {manifest}: the manifest has no digest")
        version = f"{version}+heads.{digest}"
    return version
