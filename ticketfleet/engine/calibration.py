"""Label confidences, and contextual calibration of them.

A field's labels are scored by the model (scoring.py) as summed token log-probabilities; a softmax over
those gives the confidences (``FieldScores``), so they sum to 1 over the allowed labels.

Small models favour some labels whatever the text says (SmolLM2-135M answers "refund" for nearly every
ticket). ``label_priors`` and ``FieldScores.calibrated`` implement contextual calibration ("Calibrate
Before Use", Zhao et al. 2021): score the labels once for content-free prompts, and divide each item's
label probabilities by that prior (subtract it in log space) before normalising. Plain arithmetic on
the scores: nothing here runs the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ticketfleet.core.schemas import FieldPrediction
from ticketfleet.engine.prompts import LabelField


@dataclass(frozen=True)
class FieldScores:
    """Scores of every allowed label of one field, for one item."""

    field: LabelField
    logprobs: tuple[float, ...]
    """Sum of the label tokens' log-probabilities, per label (same order as ``field.labels``)."""
    probs: tuple[float, ...]
    """Softmax of ``scores``: the confidence of each label; sums to 1."""
    prior: tuple[float, ...] | None = None
    """Log prior subtracted from ``logprobs`` before the softmax (see ``calibrated``); None: uncalibrated."""

    @property
    def scores(self) -> tuple[float, ...]:
        """What ``probs`` is the softmax of: ``logprobs``, minus ``prior`` when calibrated."""
        if self.prior is None:
            return self.logprobs
        return tuple(lp - p for lp, p in zip(self.logprobs, self.prior, strict=True))

    def calibrated(self, prior: Sequence[float]) -> FieldScores:
        """These scores with a per-label log ``prior`` taken out: ``probs = softmax(logprobs - prior)``.

        ``logprobs`` stay the raw model scores, so a calibrated result still shows what the model said.
        """
        scores = tuple(lp - p for lp, p in zip(self.logprobs, prior, strict=True))
        return FieldScores(self.field, self.logprobs, softmax(scores), tuple(prior))

    @property
    def best_index(self) -> int:
        return max(range(len(self.probs)), key=lambda i: (self.probs[i], -i))

    def prediction(self) -> FieldPrediction:
        best = self.best_index
        return FieldPrediction(value=self.field.labels[best], confidence=min(max(self.probs[best], 0.0), 1.0))

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.field.labels, self.probs, strict=True))


def softmax(scores: Sequence[float]) -> tuple[float, ...]:
    top = max(scores)
    weights = [math.exp(score - top) for score in scores]
    total = math.fsum(weights)
    return tuple(weight / total for weight in weights)


def log_softmax(scores: Sequence[float]) -> tuple[float, ...]:
    top = max(scores)
    log_total = top + math.log(math.fsum(math.exp(score - top) for score in scores))
    return tuple(score - log_total for score in scores)


def _log_mean_exp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(math.fsum(math.exp(value - top) for value in values) / len(values))


def label_priors(content_free: Sequence[dict[str, FieldScores]]) -> dict[str, tuple[float, ...]]:
    """Per field, the log of the label distribution averaged over content-free prompts.

    Probabilities (normalised over the allowed labels) are averaged, as in Zhao et al. 2021; it is done
    in log space so that a label the model all but rules out still gets a finite prior.
    """
    if not content_free:
        raise ValueError("label priors need at least one content-free prompt")
    priors: dict[str, tuple[float, ...]] = {}
    for name in content_free[0]:
        per_prompt = [log_softmax(scores[name].logprobs) for scores in content_free]
        priors[name] = tuple(_log_mean_exp(column) for column in zip(*per_prompt, strict=True))
    return priors
