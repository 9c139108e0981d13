"""Confidence gates: which triage values a human must review, which may be written back unattended.

Every stored result records, per field, the gate that applied and the thresholds in force, so a later
change of policy never rewrites what an earlier decision was based on.
"""

from __future__ import annotations

from typing import Any, Literal

from ticketfleet.core.schemas import Triage
from ticketfleet.core.settings import TRIAGE_FIELD_NAMES, GatePolicy

Gate = Literal["review", "suggest", "auto"]


def gate_for(confidence: float, policy: GatePolicy) -> Gate:
    if confidence < policy.review_below:
        return "review"
    if confidence >= policy.auto_at:
        return "auto"
    return "suggest"


def apply_gates(triage: Triage, policies: dict[str, GatePolicy]) -> dict[str, dict[str, Any]]:
    """``{field: {"gate": …, "confidence": …, "review_below": …, "auto_at": …}}`` for every field."""
    out: dict[str, dict[str, Any]] = {}
    for field in TRIAGE_FIELD_NAMES:
        confidence = getattr(triage, field).confidence
        policy = policies[field]
        out[field] = {
            "gate": gate_for(confidence, policy),
            "confidence": round(confidence, 4),
            "review_below": policy.review_below,
            "auto_at": policy.auto_at,
        }
    return out


def needs_review(gates: dict[str, dict[str, Any]]) -> bool:
    return any(g["gate"] == "review" for g in gates.values())
