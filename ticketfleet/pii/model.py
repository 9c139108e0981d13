"""The redactor's vocabulary: kinds of personal data, detected spans, and the detector hook.

A detector is any callable ``(text, context) -> Iterable[Span]``; an NER model plugs in the same way as
the validator-based detectors here (see :class:`Detector`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol


class PiiKind(enum.StrEnum):
    EMAIL = "EMAIL"
    PHONE = "PHONE"
    CARD = "CARD"
    IBAN = "IBAN"
    NATIONAL_ID = "NATIONAL_ID"
    TAX_ID = "TAX_ID"
    VAT = "VAT"
    IP = "IP"
    URL_SECRET = "URL_SECRET"
    SECRET = "SECRET"
    NAME = "NAME"


# When spans overlap, the kind listed first wins (then the longer span): a URL with a token beats the
# e-mail inside it, an IBAN beats the card-like digits inside it, any validated id beats a phone guess.
PRIORITY: dict[PiiKind, int] = {
    kind: rank
    for rank, kind in enumerate(
        [
            PiiKind.URL_SECRET,
            PiiKind.EMAIL,
            PiiKind.SECRET,
            PiiKind.NAME,
            PiiKind.IBAN,
            PiiKind.CARD,
            PiiKind.IP,
            PiiKind.VAT,
            PiiKind.NATIONAL_ID,
            PiiKind.TAX_ID,
            PiiKind.PHONE,
        ]
    )
}


@dataclass(frozen=True, slots=True)
class Span:
    """``text[start:end]`` is personal data of ``kind``; ``key`` is its normalised value.

    Equal keys get the same placeholder within a thread, so "4111 1111 1111 1111" and
    "4111111111111111" are one ``<CARD_n>``.
    """

    start: int
    end: int
    kind: PiiKind
    key: str


@dataclass(frozen=True)
class DetectContext:
    """What a detector may know about the ticket besides the text.

    ``regions`` are ISO 3166 codes (upper case) hinted by the ticket's country and locale, most likely
    first; ``known_names`` / ``known_emails`` come from the ticket's requester metadata.
    """

    regions: tuple[str, ...] = ()
    known_names: tuple[str, ...] = ()
    known_emails: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)


class Detector(Protocol):
    """The plug-in seam: an NER model, a customer-specific pattern list… Must not mutate the text."""

    def __call__(self, text: str, context: DetectContext) -> Iterable[Span]: ...
