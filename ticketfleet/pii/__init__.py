"""PII redaction: detectors, validators and thread-consistent placeholders. See docs/privacy.md."""

from ticketfleet.pii.model import DetectContext, Detector, PiiKind, Span
from ticketfleet.pii.redactor import (
    DEFAULT_DETECTORS,
    Redaction,
    ThreadRedactor,
    redact_text,
    regions_for,
    rehydrate_text,
)

__all__ = [
    "DEFAULT_DETECTORS",
    "DetectContext",
    "Detector",
    "PiiKind",
    "Redaction",
    "Span",
    "ThreadRedactor",
    "redact_text",
    "regions_for",
    "rehydrate_text",
]
