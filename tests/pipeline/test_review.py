"""Confidence gates and draft checks: pure logic plus what ends up in the store."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ticketfleet.core.schemas import FieldPrediction, Triage
from ticketfleet.core.settings import GatePolicy, Settings
from ticketfleet.engine.prompts import draft_system_prompt
from ticketfleet.pipeline.draft_checks import PASSED, check_draft
from ticketfleet.pipeline.gates import apply_gates, gate_for, needs_review


def _triage(**confidences: float) -> Triage:
    values = {"language": "en", "sentiment": "negative", "intent": "refund", "priority": "high"}
    return Triage(
        **{f: FieldPrediction(value=v, confidence=confidences.get(f, 0.95)) for f, v in values.items()}
    )


def test_gate_boundaries() -> None:
    policy = GatePolicy(review_below=0.4, auto_at=0.8)
    assert [gate_for(c, policy) for c in (0.0, 0.3999, 0.4, 0.7999, 0.8, 1.0)] == [
        "review",
        "review",
        "suggest",
        "suggest",
        "auto",
        "auto",
    ]


def test_gates_come_from_settings_and_are_recorded_with_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKETFLEET_GATES", '{"intent": {"review_below": 0.6, "auto_at": 0.9}}')
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.gates["intent"] == GatePolicy(review_below=0.6, auto_at=0.9)
    assert settings.gates["sentiment"] == GatePolicy()  # unnamed fields keep their defaults
    gates = apply_gates(_triage(intent=0.5, sentiment=0.85), settings.gates)
    assert gates["intent"] == {"gate": "review", "confidence": 0.5, "review_below": 0.6, "auto_at": 0.9}
    assert gates["sentiment"]["gate"] == "auto"
    assert needs_review(gates)
    assert not needs_review(apply_gates(_triage(), settings.gates))


def test_bad_gate_settings_are_rejected_with_a_reason() -> None:
    with pytest.raises(ValidationError, match="must not exceed"):
        GatePolicy(review_below=0.9, auto_at=0.5)
    with pytest.raises(ValidationError, match="unknown field"):
        Settings(gates={"mood": GatePolicy()}, _env_file=None)  # type: ignore[call-arg]


CUSTOMER = "My parcel #A-10234-77 never arrived and the tracking page has not changed for ten days."


def _check(draft: str, language: str = "en") -> str:
    return check_draft(
        draft, language=language, customer_texts=[CUSTOMER], instructions=draft_system_prompt("English")
    )


def test_a_good_reply_passes() -> None:
    assert (
        _check("Sorry about the delay with order #A-10234-77. I have asked the carrier for an update.")
        == PASSED
    )


def test_empty_echo_leak_and_wrong_language_are_caught() -> None:
    assert _check("   \n ") == "empty"
    assert _check(CUSTOMER) == "echo"
    assert _check("Hello! " + CUSTOMER[:60]) == "echo"
    leak = "Never promise refunds, credits, replacements or deadlines you cannot verify"  # prompt v2 wording
    assert _check(leak) == "echo"
    german = "Es tut uns leid, dass Ihr Paket noch nicht angekommen ist. Wir prüfen das sofort."
    assert _check(german, language="en") == "wrong_language:de"
    assert _check(german, language="de") == PASSED
