"""National ids, tax and VAT numbers of the main locales, decided by python-stdnum validators.

Strong validators (check letters, two check digits, a date plus a checksum, a country prefix) run in
every ticket. Weak ones (one check digit over 9–11 digits, or none at all, e.g. the US SSN) would pass
too many order numbers, so they run only when the ticket's country hints at them, when the number
has the id's own shape ("123-45-6789"), or when a keyword such as "SSN" or "BSN" comes right before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType

from stdnum.at import vnr
from stdnum.be import nn as be_nn
from stdnum.br import cnpj, cpf
from stdnum.ca import sin
from stdnum.ch import ssn as ch_ssn
from stdnum.cn import ric
from stdnum.de import idnr, stnr
from stdnum.dk import cpr
from stdnum.es import dni, nie
from stdnum.es import nif as es_nif
from stdnum.eu import vat
from stdnum.fi import hetu
from stdnum.fr import nif as fr_nif
from stdnum.fr import nir
from stdnum.in_ import aadhaar, pan
from stdnum.it import codicefiscale
from stdnum.mx import curp, rfc
from stdnum.nl import bsn
from stdnum.no import fodselsnummer
from stdnum.pl import nip, pesel
from stdnum.pt import nif as pt_nif
from stdnum.se import personnummer
from stdnum.us import ein, ssn

from ticketfleet.pii.context import preceding_label
from ticketfleet.pii.model import DetectContext, PiiKind, Span


@dataclass(frozen=True)
class IdSpec:
    name: str
    kind: PiiKind
    country: str  # ISO 3166 alpha-2, upper case; "EU" for VAT numbers
    is_valid: Callable[[str], bool]
    compact: re.Pattern[str]  # shape of the compact value (separators removed, upper case)
    strong: bool
    formatted: re.Pattern[str] | None = None  # a written shape distinctive enough to trust anywhere
    keywords: re.Pattern[str] | None = None  # words that announce this id right before it
    by_region: bool = True  # False: no checksum at all, so even the right country is not enough


def _valid(module: ModuleType) -> Callable[[str], bool]:
    return module.is_valid


def _nino_valid(value: str) -> bool:
    # stdnum has no UK NINO module: HMRC's published format rules (no D, F, I, Q, U, V; no O second;
    # BG, GB, KN, NK, NT, TN, ZZ never issued as prefixes).
    if not re.fullmatch(r"[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]", value):
        return False
    return value[:2] not in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def _c(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _kw(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?i)\b(?:{pattern})\b[^\w<]{{0,12}}(?:\w+[^\w<]{{0,3}}){{0,2}}$")


NID, TAX = PiiKind.NATIONAL_ID, PiiKind.TAX_ID
# fmt: off
SPECS: tuple[IdSpec, ...] = (
    IdSpec("es.dni", NID, "ES", _valid(dni), _c(r"\d{8}[A-Z]"), True),
    IdSpec("es.nie", NID, "ES", _valid(nie), _c(r"[XYZ]\d{7}[A-Z]"), True),
    IdSpec("es.nif", TAX, "ES", _valid(es_nif), _c(r"[A-Z]\d{7}[A-Z0-9]"), True),
    IdSpec(
        "it.codicefiscale",
        TAX,
        "IT",
        _valid(codicefiscale),
        _c(r"[A-Z]{6}[0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]"),
        True,
    ),
    IdSpec("fr.nir", NID, "FR", _valid(nir), _c(r"[12]\d{4}(?:\d{2}|2[AB])\d{8}"), True),
    IdSpec("fr.nif", TAX, "FR", _valid(fr_nif), _c(r"[0-3]\d{12}"), True),
    IdSpec("be.nn", NID, "BE", _valid(be_nn), _c(r"\d{11}"), True),
    IdSpec("no.fodselsnummer", NID, "NO", _valid(fodselsnummer), _c(r"\d{11}"), True),
    IdSpec("fi.hetu", NID, "FI", _valid(hetu), _c(r"\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]"), True),
    IdSpec("cn.ric", NID, "CN", _valid(ric), _c(r"\d{17}[\dX]"), True),
    IdSpec("mx.curp", NID, "MX", _valid(curp), _c(r"[A-Z]{4}\d{6}[HM][A-Z]{5}[A-Z\d]\d"), True),
    IdSpec("mx.rfc", TAX, "MX", _valid(rfc), _c(r"[A-Z&Ñ]{3,4}\d{6}[A-Z\d]{3}"), True),
    IdSpec("in.pan", TAX, "IN", _valid(pan), _c(r"[A-Z]{5}\d{4}[A-Z]"), True),
    IdSpec("gb.nino", NID, "GB", _nino_valid, _c(r"[A-Z]{2}\d{6}[A-D]"), True),
    IdSpec("ch.ssn", NID, "CH", _valid(ch_ssn), _c(r"756\d{10}"), True),
    IdSpec(
        "br.cpf", NID, "BR", _valid(cpf), _c(r"\d{11}"), False, _c(r"\d{3}\.\d{3}\.\d{3}-\d{2}"), _kw(r"cpf")
    ),
    IdSpec(
        "br.cnpj",
        TAX,
        "BR",
        _valid(cnpj),
        _c(r"\d{14}"),
        False,
        _c(r"\d{2}\.\d{3}\.\d{3}/\d{4}-\d{2}"),
        _kw(r"cnpj"),
    ),
    IdSpec(
        "se.personnummer",
        NID,
        "SE",
        _valid(personnummer),
        _c(r"(?:\d{2})?\d{6}[-+]?\d{4}"),
        False,
        _c(r"(?:\d{2})?\d{6}[-+]\d{4}"),
        _kw(r"personnummer|personnr"),
    ),
    IdSpec("dk.cpr", NID, "DK", _valid(cpr), _c(r"\d{10}"), False, None, _kw(r"cpr")),
    IdSpec(
        "de.idnr",
        TAX,
        "DE",
        _valid(idnr),
        _c(r"\d{11}"),
        False,
        _c(r"\d{2} \d{3} \d{3} \d{3}"),
        _kw(r"steuer-?id|idnr|identifikationsnummer|steueridentifikationsnummer"),
    ),
    IdSpec(
        "de.stnr",
        TAX,
        "DE",
        _valid(stnr),
        _c(r"\d{10,13}"),
        False,
        None,
        _kw(r"steuernummer|st\.?-?nr"),
        by_region=False,
    ),
    IdSpec(
        "at.vnr",
        NID,
        "AT",
        _valid(vnr),
        _c(r"\d{10}"),
        False,
        _c(r"\d{4} \d{6}"),
        _kw(r"versicherungsnummer|svnr|sv-nummer"),
    ),
    IdSpec(
        "nl.bsn",
        NID,
        "NL",
        _valid(bsn),
        _c(r"\d{9}"),
        False,
        _c(r"\d{4}\.\d{2}\.\d{3}"),
        _kw(r"bsn|burgerservicenummer|sofi"),
    ),
    IdSpec("pl.pesel", NID, "PL", _valid(pesel), _c(r"\d{11}"), False, None, _kw(r"pesel")),
    IdSpec(
        "pl.nip", TAX, "PL", _valid(nip), _c(r"\d{10}"), False, _c(r"\d{3}-\d{3}-\d{2}-\d{2}"), _kw(r"nip")
    ),
    IdSpec("pt.nif", TAX, "PT", _valid(pt_nif), _c(r"[1-35-9]\d{8}"), False, None, _kw(r"nif|contribuinte")),
    IdSpec(
        "us.ssn",
        NID,
        "US",
        _valid(ssn),
        _c(r"\d{9}"),
        False,
        _c(r"\d{3}-\d{2}-\d{4}"),
        _kw(r"ssn|social security"),
    ),
    IdSpec(
        "us.ein", TAX, "US", _valid(ein), _c(r"\d{9}"), False, _c(r"\d{2}-\d{7}"), _kw(r"ein|employer id")
    ),
    IdSpec(
        "ca.sin",
        NID,
        "CA",
        _valid(sin),
        _c(r"\d{9}"),
        False,
        _c(r"\d{3}-\d{3}-\d{3}"),
        _kw(r"sin|social insurance"),
    ),
    IdSpec(
        "in.aadhaar",
        NID,
        "IN",
        _valid(aadhaar),
        _c(r"[2-9]\d{11}"),
        False,
        _c(r"[2-9]\d{3} \d{4} \d{4}"),
        _kw(r"aadhaar|aadhar|uid"),
    ),
)
# fmt: on
_FORMATTED = tuple(spec.formatted for spec in SPECS if spec.formatted is not None)
VAT_SPEC = IdSpec("eu.vat", PiiKind.VAT, "EU", _valid(vat), _c(r"[A-Z]{2}[0-9A-Z+*]{8,13}"), True)

# Id-like groups joined by single separators: "ZZ 91 41 77 T", "916.727.895-75", "FR7W 763170669".
# A group holds a digit or is one or two capitals, so ordinary words end a run.
_ID_GROUP = r"(?:[A-Za-z]*\d[A-Za-z0-9]*|[A-Z]{1,2}(?![A-Za-z0-9]))"
_ID_RUN = re.compile(rf"(?<![\w./-]){_ID_GROUP}(?:[ ./-]{_ID_GROUP})*")
_GROUP = re.compile(r"[A-Za-z0-9]+")
_MAX_GROUPS = 6
_LENGTHS = range(8, 19)


def _candidates(run: str) -> Iterator[tuple[int, int, str]]:
    """Slices of whole groups of the run, longest first from each start, with their compact form."""
    groups = [(g.start(), g.end()) for g in _GROUP.finditer(run)]
    for i in range(len(groups)):
        for j in range(min(len(groups), i + _MAX_GROUPS) - 1, i - 1, -1):
            raw = run[groups[i][0] : groups[j][1]]
            compact = re.sub(r"[ ./-]", "", raw).upper()
            if len(compact) in _LENGTHS and sum(c.isdigit() for c in compact) >= 4:
                yield groups[i][0], groups[j][1], compact


def _match(raw: str, compact: str, before: str, regions: tuple[str, ...], whole_run: bool) -> IdSpec | None:
    if compact[:2].isalpha() and VAT_SPEC.compact.fullmatch(compact) and VAT_SPEC.is_valid(compact):
        return VAT_SPEC
    # Some ids keep a separator as part of the value (Finnish "251090-353T"): try it as written too.
    written = re.sub(r"\s", "", raw).upper()
    for spec in SPECS:
        value = compact if spec.compact.fullmatch(compact) else written
        if not spec.compact.fullmatch(value):
            continue
        # A weak id must stand alone: digits cut out of a longer run ("DE44 4217 1781 8009 …", a broken
        # IBAN) are a part of something else.
        trusted = (
            spec.strong
            # Only the ticket's most likely country: "en-GB" also hints US for phones, not for SSNs.
            or (whole_run and spec.by_region and regions[:1] == (spec.country,))
            or (whole_run and spec.keywords is not None and spec.keywords.search(before) is not None)
            or (spec.formatted is not None and spec.formatted.fullmatch(raw) is not None)
        )
        if trusted and spec.is_valid(value):
            return spec
    return None


def _plausible_cut(run: str, start: int, end: int, compact: str, whole_run: bool) -> bool:
    """Digits-only candidates of several groups must be the whole run, joined by spaces or dashes.

    Otherwise "AT45 5850 0567 7097 6846" (a broken IBAN) or "10.0.19045.3570" (a version) hold an
    11-digit slice that a checksum may accept. Formatted shapes ("916.727.895-75") are checked by
    the spec itself; ids with letters are distinctive enough anywhere.
    """
    raw = run[start:end]
    if not compact.isdigit() or raw.isdigit():
        return True
    if not whole_run:
        return False
    return any(f.fullmatch(raw) for f in _FORMATTED) or re.fullmatch(r"\d+(?:[ -]\d+)*", raw) is not None


def detect_national_ids(text: str, context: DetectContext) -> Iterator[Span]:
    for m in _ID_RUN.finditer(text):
        run = m.group()
        if sum(c.isdigit() for c in run) < 4:
            continue
        taken_until = -1
        for start, end, compact in _candidates(run):
            if start < taken_until:
                continue
            at = m.start() + start
            if preceding_label(text, at) == "neg":
                continue
            whole_run = start == 0 and end == len(run)
            if not _plausible_cut(run, start, end, compact, whole_run):
                continue
            spec = _match(run[start:end], compact, text[max(0, at - 40) : at], context.regions, whole_run)
            if spec is not None:
                taken_until = end
                yield Span(m.start() + start, m.start() + end, spec.kind, compact)
