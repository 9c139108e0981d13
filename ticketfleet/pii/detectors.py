"""Pattern + validator detectors: e-mail, URL secrets, API keys, IPs, IBANs, payment cards, phones.

Each regex only proposes candidates; a validator (Luhn, mod-97, ``ipaddress``, ``phonenumbers``)
decides. That is what keeps order numbers, tracking numbers, dates and prices out.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn

from ticketfleet.pii.context import preceding_label
from ticketfleet.pii.model import DetectContext, PiiKind, Span

# --- e-mail ----------------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})*\.[^\W\d_]{2,24}\b")


def detect_emails(text: str, context: DetectContext) -> Iterator[Span]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        yield Span(m.start(), m.end(), PiiKind.EMAIL, m.group().lower())


# --- URLs with credentials or tokens ---------------------------------------------------------------

# Any scheme: connection strings (postgres://user:pass@host, amqp://, redis://) carry credentials too.
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,19}://[^\s<>\"'`]+")
_SECRET_PARAMS = re.compile(
    r"(?i)^(?:.*token|.*secret|.*password|passwd|pwd|pass|.*key|sig|signature|x-amz-signature|"
    r"x-amz-credential|x-amz-security-token|auth|authorization|code|session|sessionid|sid|jwt|otp|"
    r"credential|credentials)$"
)


def detect_url_secrets(text: str, context: DetectContext) -> Iterator[Span]:
    if "://" not in text:
        return
    for m in _URL.finditer(text):
        url = m.group().rstrip(".,;:!?)]}")
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        has_credentials = "@" in parts.netloc and ":" in parts.netloc.split("@", 1)[0]
        query = parse_qsl(parts.query, keep_blank_values=False) + parse_qsl(parts.fragment)
        has_token = any(_SECRET_PARAMS.match(name) and len(value) >= 4 for name, value in query)
        if has_credentials or has_token:
            yield Span(m.start(), m.start() + len(url), PiiKind.URL_SECRET, url)


# --- API keys and other secrets --------------------------------------------------------------------

_KNOWN_KEYS = re.compile(
    r"(?<![\w-])(?:"
    r"sk-(?:proj-|ant-|live-)?[A-Za-z0-9_-]{20,}|[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}|"
    r"gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}|glpat-[A-Za-z0-9_-]{20,}|"
    r"(?:AKIA|ASIA)[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,}|"
    r"AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z0-9]{30,}|npm_[A-Za-z0-9]{36}|SG\.[\w-]{16,}\.[\w-]{16,}|"
    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r")"
)
_TOKEN = re.compile(r"(?<![\w/+=-])[A-Za-z0-9_+/=-]{24,}(?![\w/+=-])")
ENTROPY_BITS_PER_CHAR = 4.0


def shannon_entropy(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def looks_random(token: str) -> bool:
    """Long, mixed-case letters and digits, high entropy: a key, not a word, id or tracking number."""
    if not (any(c.islower() for c in token) and any(c.isupper() for c in token)):
        return False
    if sum(c.isdigit() for c in token) < 2:
        # Random base62 has no digit one time in 300 at 32 characters: then many capitals and many
        # small letters, which CamelCase words do not have.
        upper = sum(c.isupper() for c in token)
        if len(token) < 24 or not 0.3 <= upper / len(token) <= 0.7:
            return False
    return shannon_entropy(token) >= ENTROPY_BITS_PER_CHAR


def detect_secrets(text: str, context: DetectContext) -> Iterator[Span]:
    for m in _KNOWN_KEYS.finditer(text):
        yield Span(m.start(), m.end(), PiiKind.SECRET, m.group())
    for m in _TOKEN.finditer(text):
        if looks_random(m.group()):
            yield Span(m.start(), m.end(), PiiKind.SECRET, m.group())


# --- IP addresses ----------------------------------------------------------------------------------

_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)"
)
_IPV6 = re.compile(r"(?<![\w:])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f:]{2,39}(?![\w:])")


def detect_ips(text: str, context: DetectContext) -> Iterator[Span]:
    if "." in text:
        for m in _IPV4.finditer(text):
            yield Span(m.start(), m.end(), PiiKind.IP, m.group())
    if ":" in text:
        for m in _IPV6.finditer(text):
            candidate = m.group()
            if candidate.count(":") < 2 or not any(c.isalpha() or c.isdigit() for c in candidate):
                continue
            try:
                address = ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            # "::" alone or a clock time are not addresses worth hiding.
            if candidate.replace(":", "").isdigit() and len(candidate) <= 8:
                continue
            yield Span(m.start(), m.end(), PiiKind.IP, address.compressed)


# --- IBAN ------------------------------------------------------------------------------------------

_IBAN = re.compile(r"(?i)(?<![\w])[a-z]{2}\d{2}(?:[ -]?[a-z0-9]){11,32}")


def detect_ibans(text: str, context: DetectContext) -> Iterator[Span]:
    for m in _IBAN.finditer(text):
        candidate = m.group()
        # The greedy match may run into the next word; try the longest prefix that ends on a boundary.
        for end in range(len(candidate), 14, -1):
            if end < len(candidate) and candidate[end].isalnum() and candidate[end - 1].isalnum():
                continue
            compact = re.sub(r"[ -]", "", candidate[:end]).upper()
            if 15 <= len(compact) <= 34 and stdnum_iban.is_valid(compact):
                stop = m.start() + len(candidate[:end].rstrip(" -"))
                yield Span(m.start(), stop, PiiKind.IBAN, compact)
                break


# --- payment cards ---------------------------------------------------------------------------------

# Digit groups joined by single spaces or dashes ("4111 1111 1111 1111", "4111-1111-1111-1111").
_DIGITS = re.compile(r"\d+")
_DIGIT_RUN = re.compile(r"(?<![\w.,/])\d+(?:[ -]\d+)*(?![\w]|[.,/]\d)")
# Issuer prefixes: UATP/JCB-15 (1, 2131), Mastercard 2-series, Amex/Diners/JCB (3), Visa (4),
# Mastercard/Maestro (5), Discover/UnionPay/Maestro (6). 7, 8, 9 and 0 are not card networks.
# 0604 is a Maestro range.
_CARD_FIRST_DIGITS = frozenset("123456")


def _is_card(digits: str) -> bool:
    if not 12 <= len(digits) <= 19 or not (digits[0] in _CARD_FIRST_DIGITS or digits.startswith("0604")):
        return False
    return luhn.is_valid(digits)


def detect_cards(text: str, context: DetectContext) -> Iterator[Span]:
    # Whole groups only, longest first: "JCB 15 180090736625859" holds a card after the "15". A
    # Luhn-valid slice of a card-shaped run ("4191 5104 0939 9647" with a typo) is dropped later by
    # the redactor's look-alike rule.
    for m in _DIGIT_RUN.finditer(text):
        run = m.group()
        if sum(c.isdigit() for c in run) < 12:
            continue
        groups = [(g.start(), g.end()) for g in _DIGITS.finditer(run)]
        i = 0
        while i < len(groups):
            found = None
            for j in range(len(groups) - 1, i - 1, -1):
                digits = re.sub(r"\D", "", run[groups[i][0] : groups[j][1]])
                if len(digits) < 12:
                    break
                if len(digits) <= 19 and _is_card(digits):
                    found = (j, digits)
                    break
            if found is None:
                i += 1
                continue
            j, digits = found
            start = m.start() + groups[i][0]
            if preceding_label(text, start) != "neg":
                yield Span(start, m.start() + groups[j][1], PiiKind.CARD, digits)
            i = j + 1


# --- phone numbers ---------------------------------------------------------------------------------

# A phone-shaped run: optional +/00, digits with spaces, dots, dashes, slashes or parentheses, and an
# optional extension. phonenumbers decides whether (part of) it is a valid number.
_PHONE_RUN = re.compile(
    r"(?<![\w+/.-])(?<!\w[.-])(?:\+|\(\+?)?\d[\d \t().\-/]{5,24}\d"
    r"(?:\s?(?:x|ext\.?|extension|#)\s?\d{1,6})?(?![\w]|[.,/:-]\d)"
)
_DATE_OR_TIME = re.compile(
    r"^(?:\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|\d{1,2}:\d{2}(?::\d{2})?"
    r"|\d{4}[./-]\d{1,2}[./-]\d{1,2}[ T]\d{1,2}:\d{2})$"
)
# A date anywhere in the run ("2024-03-12 10" before ":45"), or an amount ("1234567.89").
_HAS_DATE = re.compile(
    r"(?:19|20)\d{2}[./-]\d{1,2}[./-]\d{1,2}(?![\d.])|(?<![\d.])\d{1,2}[./]\d{1,2}[./](?:19|20)\d{2}(?![\d.])"
)
_AMOUNT = re.compile(r"^\d+[.,]\d{2}$")
_EXTENSION = re.compile(r"\s?(?:x|ext\.?|extension|#)\s?\d{1,6}$")
# "10.0.19045.3570": dotted groups with a one-digit group is a version, not "06.04.39.15.00".
_VERSION = re.compile(r"^(?=.*(?:^|\.)\d(?:\.|$))\d+(?:\.\d+){2,}$")
_CARD_SHAPE = re.compile(r"^\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?$")
FALLBACK_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "MX", "PL", "SE")
_MIN_PHONE_DIGITS = 7
_LENIENCY = phonenumbers.Leniency.VALID


def _phone_matches(run: str, region: str) -> list[tuple[int, int]]:
    # Fast path: the whole run is one valid number (most are). Else the matcher looks for numbers
    # inside it ("+44 20 7946 0958 / 0151 23456789"), which costs ten times more.
    try:
        if phonenumbers.is_valid_number(phonenumbers.parse(run, region)):
            return [(0, len(run))]
    except phonenumbers.NumberParseException:
        pass
    return [(pm.start, pm.end) for pm in phonenumbers.PhoneNumberMatcher(run, region, leniency=_LENIENCY)]


def _covers_all_digits(run: str, spans: list[tuple[int, int]]) -> bool:
    covered = bytearray(len(run))
    for s, e in spans:
        covered[s:e] = b"\1" * (e - s)
    return all(covered[i] or not ch.isdigit() for i, ch in enumerate(run))


def detect_phones(text: str, context: DetectContext) -> Iterator[Span]:
    for m in _PHONE_RUN.finditer(text):
        run = m.group().rstrip(" \t(-./")
        international = run.startswith(("+", "(+", "00"))
        digits = sum(c.isdigit() for c in _EXTENSION.sub("", run))
        # E.164 allows 15 digits with the country code; a national number is shorter. Longer runs are
        # card numbers, tracking numbers or several numbers in a row.
        if not _MIN_PHONE_DIGITS <= digits <= (17 if international else 13):
            continue
        if _DATE_OR_TIME.match(run) or _VERSION.match(run) or _CARD_SHAPE.match(run) or _AMOUNT.match(run):
            continue
        if _HAS_DATE.search(run):
            continue
        label = preceding_label(text, m.start())
        if label == "neg":
            continue
        formatted = any(c in run for c in " ()-./")
        # Hinted regions first. Other regions only for numbers that look like phones (formatted, or
        # introduced by "phone", "tel"…): a bare 10-digit number is valid somewhere in the world.
        regions: tuple[str, ...] = context.regions or ("US",)
        if not international and (formatted or label == "pos"):
            regions = regions + tuple(r for r in FALLBACK_REGIONS if r not in regions)
        elif international:
            regions = regions[:1]
        for region in regions:
            spans = _phone_matches(run, region)
            if spans and _covers_all_digits(run, spans):
                for s, e in spans:
                    number = phonenumbers.parse(run[s:e], region)
                    key = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                    yield Span(m.start() + s, m.start() + e, PiiKind.PHONE, key)
                break
