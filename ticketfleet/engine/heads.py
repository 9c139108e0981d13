"""Trained heads: per-field classifiers on the engine's hidden states and cheap lexical features.

A heads artifact is a directory written by ``ticketfleet heads train`` and read by the engine when
``TICKETFLEET_HEADS`` names it::

    manifest.json   what it is: format, model id and revision it was trained on, feature recipe,
                    fields with their label sets and metrics, training-data fingerprint, digest
    weights.npz     numbers only (no pickle): per field ``<field>.coef`` (labels × features),
                    ``<field>.intercept``, ``<field>.temperature``; ``hidden.mean`` / ``hidden.scale``
                    (standardisation of the hidden states); ``lexical.idf`` (one weight per hashed
                    feature)

Features of one text are ``[standardised hidden state × hidden_weight | tf-idf of hashed word n-grams |
tf-idf of hashed char n-grams]``; hashing (scikit-learn's ``HashingVectorizer``) needs no stored
vocabulary, so the artifact holds arrays and JSON only. A head's probabilities are
``softmax((x · coefᵀ + intercept) / temperature)``; the temperature is fitted on held-out data, so the
confidences are calibrated.

The digest (sha256 of the manifest without it, and of the weights) is part of every result's identity
(``ticketfleet.core.taxonomy.effective_prompt_version``), so retraining makes older results stale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import sparse

from ticketfleet.core.errors import ConfigurationError

FORMAT = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"


class HeadsError(ConfigurationError):
    """The heads artifact cannot be used: missing, malformed, or trained on another model."""


class HiddenRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layer: int = Field(description="hidden_states index (0 = embeddings, -1 = last layer)")
    pooling: str = Field(default="mean", description="how token states become one vector: mean | last")
    weight: float = Field(default=1.0, gt=0, description="scale of the standardised block")


class LexicalRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    n_features: int = Field(default=1 << 16, ge=16, description="hashed features per block (word, char)")
    lowercase: bool = True


class FeatureRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hidden: HiddenRecipe | None = None
    lexical: LexicalRecipe | None = None


class FieldManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(min_length=2)
    metrics: dict[str, Any] = Field(default_factory=dict)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = FORMAT
    model_id: str
    model_revision: str
    features: FeatureRecipe
    fields: dict[str, FieldManifest]
    data_fingerprint: str
    created_at: str
    digest: str = ""


@dataclass
class FieldHead:
    """One field's classifier: a linear layer and its calibration temperature."""

    labels: list[str]
    coef: np.ndarray  # (labels, features), float32
    intercept: np.ndarray  # (labels,)
    temperature: float = 1.0

    def probabilities(self, features: sparse.csr_matrix | np.ndarray) -> np.ndarray:
        logits = np.asarray(features @ self.coef.T) + self.intercept
        return softmax(logits / self.temperature)


@dataclass
class LexicalFeatures:
    """Hashed word and char n-grams, sub-linear tf × idf, each block L2-normalised."""

    recipe: LexicalRecipe
    idf: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # 2 × n_features

    def counts(self, texts: list[str]) -> sparse.csr_matrix:
        from sklearn.feature_extraction.text import HashingVectorizer

        blocks = []
        for analyzer, ngrams in (("word", self.recipe.word_ngrams), ("char_wb", self.recipe.char_ngrams)):
            vectorizer = HashingVectorizer(
                analyzer=analyzer,
                ngram_range=tuple(ngrams),
                n_features=self.recipe.n_features,
                alternate_sign=False,
                norm=None,
                lowercase=self.recipe.lowercase,
            )
            blocks.append(vectorizer.transform(texts))
        return sparse.hstack(blocks, format="csr", dtype=np.float32)

    def fit_idf(self, texts: list[str]) -> None:
        counts = self.counts(texts)
        document_frequency = np.bincount(counts.indices, minlength=counts.shape[1])
        self.idf = (np.log((1 + len(texts)) / (1 + document_frequency)) + 1).astype(np.float32)

    def transform(self, texts: list[str]) -> sparse.csr_matrix:
        counts = self.counts(texts)
        counts.data = np.log1p(counts.data)
        weighted = counts @ sparse.diags(self.idf)
        half = self.recipe.n_features
        return sparse.hstack(
            [_l2_rows(weighted[:, :half]), _l2_rows(weighted[:, half:])], format="csr", dtype=np.float32
        )


@dataclass
class HeadsArtifact:
    manifest: Manifest
    heads: dict[str, FieldHead]
    hidden_mean: np.ndarray | None = None
    hidden_scale: np.ndarray | None = None
    lexical: LexicalFeatures | None = None

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def fields(self) -> list[str]:
        return list(self.heads)

    def check_model(self, model_id: str, model_revision: str) -> None:
        """Heads read one model's hidden states: on another model they would be noise."""
        m = self.manifest
        if self.manifest.features.hidden is not None and (m.model_id, m.model_revision) != (
            model_id,
            model_revision,
        ):
            raise HeadsError(
                f"heads were trained on {m.model_id}@{m.model_revision}, the engine runs "
                f"{model_id}@{model_revision}: retrain them (`ticketfleet heads train`) or point "
                "TICKETFLEET_HEADS elsewhere"
            )

    def features(self, hidden: np.ndarray | None, texts: list[str]) -> sparse.csr_matrix:
        """The feature matrix of ``texts`` (redacted) with their hidden states (rows in order)."""
        blocks = []
        recipe = self.manifest.features
        if recipe.hidden is not None:
            if hidden is None or self.hidden_mean is None or self.hidden_scale is None:
                raise HeadsError("these heads need the engine's hidden states")
            scaled = (hidden.astype(np.float32) - self.hidden_mean) / self.hidden_scale
            blocks.append(sparse.csr_matrix(scaled * recipe.hidden.weight))
        if recipe.lexical is not None:
            if self.lexical is None:
                raise HeadsError("lexical features are in the recipe but not in the weights")
            blocks.append(self.lexical.transform(texts))
        return sparse.hstack(blocks, format="csr", dtype=np.float32)

    def predict(self, hidden: np.ndarray | None, texts: list[str]) -> dict[str, np.ndarray]:
        """Per field, calibrated probabilities (rows: texts; columns: the field's labels)."""
        x = self.features(hidden, texts)
        return {name: head.probabilities(x) for name, head in self.heads.items()}

    # --- files ---------------------------------------------------------------------------------------

    def save(self, directory: Path) -> str:
        """Write manifest and weights; returns the digest (also stored in the manifest)."""
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for name, head in self.heads.items():
            arrays[f"{name}.coef"] = head.coef.astype(np.float32)
            arrays[f"{name}.intercept"] = head.intercept.astype(np.float32)
            arrays[f"{name}.temperature"] = np.asarray(head.temperature, dtype=np.float32)
        if self.hidden_mean is not None and self.hidden_scale is not None:
            arrays["hidden.mean"] = self.hidden_mean.astype(np.float32)
            arrays["hidden.scale"] = self.hidden_scale.astype(np.float32)
        if self.lexical is not None:
            arrays["lexical.idf"] = self.lexical.idf.astype(np.float32)
        weights_path = directory / WEIGHTS
        np.savez_compressed(weights_path, **arrays)  # type: ignore[arg-type]
        self.manifest.digest = ""
        self.manifest.digest = _digest(self.manifest, weights_path)
        (directory / MANIFEST).write_text(self.manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return self.manifest.digest

    @classmethod
    def load(cls, directory: Path) -> HeadsArtifact:
        try:
            manifest = Manifest.model_validate_json((directory / MANIFEST).read_bytes())
        except FileNotFoundError as exc:
            raise HeadsError(
                f"heads {directory}: no {MANIFEST} (train with `ticketfleet heads train`)"
            ) from exc
        except ValueError as exc:
            raise HeadsError(f"heads {directory}: {MANIFEST} is not a heads manifest ({exc})") from exc
        if manifest.format != FORMAT:
            raise HeadsError(f"heads {directory}: format {manifest.format}, this version reads {FORMAT}")
        weights_path = directory / WEIGHTS
        if not weights_path.exists():
            raise HeadsError(f"heads {directory}: {WEIGHTS} is missing")
        expected = _digest(manifest.model_copy(update={"digest": ""}), weights_path)
        if manifest.digest != expected:
            raise HeadsError(f"heads {directory}: digest mismatch, the files were changed after training")
        with np.load(weights_path, allow_pickle=False) as weights:
            heads = {
                name: FieldHead(
                    labels=list(spec.labels),
                    coef=weights[f"{name}.coef"],
                    intercept=weights[f"{name}.intercept"],
                    temperature=float(weights[f"{name}.temperature"]),
                )
                for name, spec in manifest.fields.items()
            }
            names = set(weights.files)
            hidden_mean = weights["hidden.mean"] if "hidden.mean" in names else None
            hidden_scale = weights["hidden.scale"] if "hidden.scale" in names else None
            lexical = None
            if manifest.features.lexical is not None:
                lexical = LexicalFeatures(manifest.features.lexical, weights["lexical.idf"])
        return cls(manifest, heads, hidden_mean, hidden_scale, lexical)


def read_digest(directory: Path) -> str:
    """The digest recorded in a heads manifest, read without loading the weights."""
    try:
        return str(json.loads((directory / MANIFEST).read_text(encoding="utf-8"))["digest"])
    except (OSError, ValueError, KeyError) as exc:
        raise HeadsError(f"heads {directory}: cannot read the digest from {MANIFEST} ({exc})") from exc


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _l2_rows(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.diags(1.0 / norms) @ matrix


def _digest(manifest: Manifest, weights_path: Path) -> str:
    sha = hashlib.sha256(manifest.model_dump_json().encode())
    sha.update(weights_path.read_bytes())
    return sha.hexdigest()[:16]
