"""The redactor: typed, numbered placeholders, consistent within a ticket thread.

``ThreadRedactor`` holds the value → placeholder mapping of one thread: the same card number in the
subject and in a follow-up message three days later is ``<CARD_1>`` both times (seed it from the vault
with :meth:`ThreadRedactor.from_mapping`). Pure: no I/O, no logging of values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ticketfleet.pii.detectors import (
    detect_cards,
    detect_emails,
    detect_ibans,
    detect_ips,
    detect_phones,
    detect_secrets,
    detect_url_secrets,
)
from ticketfleet.pii.model import PRIORITY, DetectContext, Detector, PiiKind, Span
from ticketfleet.pii.national import detect_national_ids

DEFAULT_DETECTORS: tuple[Detector, ...] = (
    detect_url_secrets,
    detect_emails,
    detect_secrets,
    detect_ibans,
    detect_cards,
    detect_national_ids,
    detect_ips,
    detect_phones,
)

PLACEHOLDER = re.compile(r"<(?P<kind>[A-Z_]+)_(?P<n>\d+)>")

# A language tag's default country, for phone regions and id validators when only a locale is given.
_LANGUAGE_COUNTRY = {
    "de": "DE", "fr": "FR", "es": "ES", "it": "IT", "nl": "NL", "pl": "PL", "pt": "PT", "sv": "SE",
    "da": "DK", "fi": "FI", "nb": "NO", "nn": "NO", "no": "NO", "cs": "CZ", "sk": "SK", "hu": "HU",
    "ro": "RO", "el": "GR", "ja": "JP", "zh": "CN", "ko": "KR", "ru": "RU", "uk": "UA", "tr": "TR",
    "en": "US", "hi": "IN", "ar": "SA", "he": "IL",
}  # fmt: skip


def regions_for(locale: str | None = None, country: str | None = None) -> tuple[str, ...]:
    """Region hints, most likely first: the explicit country, the locale's region, its language's."""
    regions: list[str] = []
    if country and len(country) == 2:
        regions.append(country.upper())
    if locale:
        parts = re.split(r"[-_]", locale.strip())
        if len(parts) > 1 and len(parts[-1]) == 2 and parts[-1].isalpha():
            regions.append(parts[-1].upper())
        language_country = _LANGUAGE_COUNTRY.get(parts[0].lower())
        if language_country:
            regions.append(language_country)
        if parts[0].lower() == "en":
            regions.append("GB")
    return tuple(dict.fromkeys(regions))


# Look-alikes: IBAN-shaped and card-shaped runs. When the IBAN or card validator rejected one (a typo,
# a broken check digit), no other detector may take a slice out of it: "NL86 FEYN 1805 3534 97" holds
# a "valid" phone number and "4627 3204 0304 0417" an Aadhaar-shaped slice.
_SHELLS = re.compile(
    r"(?<![\w])[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,8}(?:[ -]?[A-Z0-9]{1,4})?(?![\w])"
    r"|(?<![\w.,])\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,4})?(?![\w]|[.,]\d)"
)
_SHELL_SENSITIVE = frozenset({PiiKind.PHONE, PiiKind.NATIONAL_ID, PiiKind.TAX_ID, PiiKind.VAT, PiiKind.CARD})


def _inside_shell(span: Span, shells: list[tuple[int, int]]) -> bool:
    return any(s <= span.start and span.end <= e and (s, e) != (span.start, span.end) for s, e in shells)


def _resolve(spans: Iterable[Span]) -> list[Span]:
    """Non-overlapping spans: by kind priority, then longest, then leftmost."""
    chosen: list[Span] = []
    taken = bytearray()
    for span in sorted(spans, key=lambda s: (PRIORITY[s.kind], s.start - s.end, s.start)):
        if span.end > len(taken):
            taken.extend(b"\0" * (span.end - len(taken)))
        if any(taken[span.start : span.end]):
            continue
        taken[span.start : span.end] = b"\1" * (span.end - span.start)
        chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


def _name_spans(text: str, names: Sequence[str]) -> Iterable[Span]:
    for name in names:
        full = name.strip()
        if len(full) < 2:
            continue
        for m in re.finditer(rf"(?<!\w){re.escape(full)}(?!\w)", text, re.IGNORECASE):
            yield Span(m.start(), m.end(), PiiKind.NAME, full.casefold())
        # Parts on their own ("Hi, Anna here"), case-sensitive so that the word "Rose" in lower case
        # or a surname that is also a common word in lower case stays.
        for part in full.split():
            if len(part) >= 3 and part[0].isupper():
                for m in re.finditer(rf"(?<!\w){re.escape(part)}(?!\w)", text):
                    yield Span(m.start(), m.end(), PiiKind.NAME, full.casefold())


@dataclass
class Redaction:
    text: str
    spans: list[Span]


@dataclass
class ThreadRedactor:
    """Redacts the texts of one thread with one placeholder mapping.

    ``values`` maps each placeholder to the first original text it replaced (what the vault stores).
    """

    context: DetectContext = field(default_factory=DetectContext)
    detectors: Sequence[Detector] = DEFAULT_DETECTORS
    placeholders: dict[tuple[PiiKind, str], str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    counters: dict[PiiKind, int] = field(default_factory=dict)

    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, str],
        context: DetectContext | None = None,
        detectors: Sequence[Detector] = DEFAULT_DETECTORS,
        retired: Iterable[str] = (),
    ) -> ThreadRedactor:
        """Continue a known thread: ``mapping`` is placeholder → original value (from the vault).

        ``retired`` placeholders (originals purged) only reserve their numbers: a new value never
        takes the number of an old one that earlier messages still show.
        """
        redactor = cls(context=context or DetectContext(), detectors=detectors)
        for placeholder in retired:
            m = PLACEHOLDER.fullmatch(placeholder)
            if m is not None and m.group("kind") in PiiKind.__members__:
                kind = PiiKind(m.group("kind"))
                redactor.counters[kind] = max(redactor.counters.get(kind, 0), int(m.group("n")))
        for placeholder, original in mapping.items():
            m = PLACEHOLDER.fullmatch(placeholder)
            if m is None or m.group("kind") not in PiiKind.__members__:
                raise ValueError(f"not a placeholder: {placeholder!r}")
            kind, n = PiiKind(m.group("kind")), int(m.group("n"))
            redactor.values[placeholder] = original
            redactor.counters[kind] = max(redactor.counters.get(kind, 0), n)
            # Re-detect the original to recover its normalised key; fall back to the text itself.
            key = redactor._key_of(original, kind)
            redactor.placeholders.setdefault((kind, key), placeholder)
        return redactor

    def _key_of(self, original: str, kind: PiiKind) -> str:
        if kind is PiiKind.NAME:
            return original.casefold()
        for span in self._detect(original):
            if span.kind is kind and span.start == 0 and span.end == len(original):
                return span.key
        return original.casefold() if kind is PiiKind.EMAIL else original

    def _detect(self, text: str) -> list[Span]:
        spans: list[Span] = []
        for detector in self.detectors:
            spans.extend(detector(text, self.context))
        if self.context.known_names:
            spans.extend(_name_spans(text, self.context.known_names))
        shells = [(m.start(), m.end()) for m in _SHELLS.finditer(text)]
        if shells:
            spans = [s for s in spans if s.kind not in _SHELL_SENSITIVE or not _inside_shell(s, shells)]
        return _resolve(spans)

    def placeholder_for(self, kind: PiiKind, key: str, original: str) -> str:
        placeholder = self.placeholders.get((kind, key))
        if placeholder is None:
            n = self.counters.get(kind, 0) + 1
            self.counters[kind] = n
            placeholder = f"<{kind.value}_{n}>"
            self.placeholders[(kind, key)] = placeholder
            self.values[placeholder] = original
        return placeholder

    def redact(self, text: str) -> Redaction:
        if "<" in text:
            # A placeholder typed by the customer must not rehydrate into someone's data later.
            text = PLACEHOLDER.sub(lambda m: f"‹{m.group()[1:-1]}›", text)
        spans = self._detect(text)
        out: list[str] = []
        last = 0
        for span in spans:
            out.append(text[last : span.start])
            out.append(self.placeholder_for(span.kind, span.key, text[span.start : span.end]))
            last = span.end
        out.append(text[last:])
        return Redaction("".join(out), spans)

    def redact_requester(self, name: str | None, email: str | None) -> tuple[str | None, str | None]:
        """Placeholders for the requester's own metadata; numbered first, so they are ``_1``."""
        name_placeholder = (
            self.placeholder_for(PiiKind.NAME, name.strip().casefold(), name.strip())
            if name and name.strip()
            else None
        )
        email_placeholder = (
            self.placeholder_for(PiiKind.EMAIL, email.strip().lower(), email.strip())
            if email and email.strip()
            else None
        )
        return name_placeholder, email_placeholder


def redact_text(
    text: str,
    *,
    locale: str | None = None,
    country: str | None = None,
    detectors: Sequence[Detector] = DEFAULT_DETECTORS,
) -> str:
    """One text, no thread: what ``ticketfleet redact`` does per line."""
    context = DetectContext(regions=regions_for(locale, country))
    return ThreadRedactor(context=context, detectors=detectors).redact(text).text


def rehydrate_text(text: str, mapping: Mapping[str, str]) -> str:
    """Placeholders back to originals; unknown placeholders (the model invented one) stay as they are."""
    return PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)
