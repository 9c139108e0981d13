"""PII redaction: ticketfleet's redactor against Presidio (regex-only), on one generated corpus, in one run.

    python bench/pii.py [--docs 1500] [--decoys 500] [--seed 7] [--no-presidio] [--misses N]

The corpus is generated with Faker across 20 locales. Every PII value is checked by a validator before it
is used as ground truth (phonenumbers for phones, Luhn for cards, mod-97 for IBANs, the python-stdnum
module of the id for national ids / tax / VAT numbers): a Faker value that its own validator rejects is
not personal data a redactor must find, so it is dropped and counted. Values are written in the shapes
people type: as generated, compact (separators removed) and, for cards and IBANs, in groups of four.
Sentences are short support-ticket templates in the locale's language; about half put a label before the
value ("my IBAN", "Tel."), half do not.

Decoy documents are full of look-alike numbers that must survive: order, invoice and tracking numbers
(labelled, as tickets label them), dates, times, prices, versions, ticket ids, card-like numbers with a
broken Luhn digit and IBANs with a broken checksum.

Printed per redactor:
  recall per PII type — the value no longer present in any form: neither as written, nor compact,
      nor (phones) its national digits, searched in the output with separators between characters removed;
  damage — share of non-PII words altered (all documents) and share of decoy items altered (decoys);
  docs/s on one core (the redactor runs single-threaded): wall clock, and per CPU second of this
      process (steadier on a shared machine).

Presidio runs with NoOpNlpEngine (no spaCy model: regex and validator recognizers only), language "en",
all predefined recognizers; DATE_TIME and URL are left out (not personal data here, and they would only
add damage). Faker and Presidio are in the ``dev`` extra.
"""

from __future__ import annotations

import argparse
import random
import re
import string
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import phonenumbers  # noqa: E402
from faker import Faker  # noqa: E402
from stdnum import iban as stdnum_iban  # noqa: E402
from stdnum import luhn  # noqa: E402
from stdnum.br import cnpj, cpf  # noqa: E402
from stdnum.ca import sin  # noqa: E402
from stdnum.cn import ric  # noqa: E402
from stdnum.es import nie  # noqa: E402
from stdnum.es import nif as es_nif  # noqa: E402
from stdnum.eu import vat  # noqa: E402
from stdnum.fi import hetu  # noqa: E402
from stdnum.fr import nir  # noqa: E402
from stdnum.in_ import aadhaar  # noqa: E402
from stdnum.it import codicefiscale  # noqa: E402
from stdnum.mx import curp, rfc  # noqa: E402
from stdnum.nl import bsn  # noqa: E402
from stdnum.no import fodselsnummer  # noqa: E402
from stdnum.pl import nip, pesel  # noqa: E402
from stdnum.se import personnummer  # noqa: E402
from stdnum.us import ein, ssn  # noqa: E402

from ticketfleet.pii import redact_text  # noqa: E402

# locale → (language for templates, country)
LOCALES = {
    "en_US": ("en", "US"), "en_GB": ("en", "GB"), "en_CA": ("en", "CA"), "en_IN": ("en", "IN"),
    "de_DE": ("de", "DE"), "de_AT": ("de", "AT"), "fr_FR": ("fr", "FR"), "es_ES": ("es", "ES"),
    "es_MX": ("es", "MX"), "it_IT": ("it", "IT"), "nl_NL": ("nl", "NL"), "nl_BE": ("nl", "BE"),
    "pl_PL": ("pl", "PL"), "pt_PT": ("pt", "PT"), "pt_BR": ("pt", "BR"), "sv_SE": ("sv", "SE"),
    "da_DK": ("da", "DK"), "fi_FI": ("fi", "FI"), "no_NO": ("no", "NO"), "zh_CN": ("zh", "CN"),
}  # fmt: skip

# (Faker method, validator) per locale for national ids, tax and VAT numbers.
ID_SOURCES: dict[str, list[tuple[str, Callable[[str], bool]]]] = {
    "en_US": [("ssn", ssn.is_valid), ("ein", ein.is_valid)],
    "en_CA": [("ssn", sin.is_valid)],
    "en_IN": [("aadhaar_id", aadhaar.is_valid)],
    "de_DE": [("vat_id", vat.is_valid)],
    "de_AT": [("vat_id", vat.is_valid)],
    "fr_FR": [("ssn", nir.is_valid), ("vat_id", vat.is_valid)],
    "es_ES": [("nif", es_nif.is_valid), ("nie", nie.is_valid), ("vat_id", vat.is_valid)],
    "es_MX": [("curp", curp.is_valid), ("rfc", rfc.is_valid)],
    "it_IT": [("ssn", codicefiscale.is_valid), ("vat_id", vat.is_valid)],
    "nl_NL": [("ssn", bsn.is_valid), ("vat_id", vat.is_valid)],
    "nl_BE": [("vat_id", vat.is_valid)],
    "pl_PL": [("pesel", pesel.is_valid), ("nip", nip.is_valid), ("vat_id", vat.is_valid)],
    "pt_PT": [("vat_id", vat.is_valid)],
    "pt_BR": [("cpf", cpf.is_valid), ("cnpj", cnpj.is_valid)],
    "sv_SE": [("ssn", personnummer.is_valid), ("vat_id", vat.is_valid)],
    "fi_FI": [("ssn", hetu.is_valid), ("vat_id", vat.is_valid)],
    "no_NO": [("ssn", fodselsnummer.is_valid)],
    "zh_CN": [("ssn", ric.is_valid)],
    "da_DK": [("vat_id", vat.is_valid)],
    "en_GB": [("vat_id", vat.is_valid)],
}

# Per language: label words per type (used half the time) and sentence frames.
LABELS = {
    "en": {"EMAIL": "my e-mail is", "PHONE": "call me on", "CARD": "my card", "IBAN": "my IBAN",
           "NATIONAL_ID": "my ID number", "IP": "from IP", "SECRET": "the key"},
    "de": {"EMAIL": "meine E-Mail:", "PHONE": "Tel.", "CARD": "meine Karte", "IBAN": "IBAN",
           "NATIONAL_ID": "Ausweis/USt:", "IP": "IP-Adresse", "SECRET": "Schlüssel"},
    "fr": {"EMAIL": "mon e-mail :", "PHONE": "tél.", "CARD": "ma carte", "IBAN": "mon IBAN",
           "NATIONAL_ID": "mon numéro", "IP": "adresse IP", "SECRET": "la clé"},
    "es": {"EMAIL": "mi correo", "PHONE": "teléfono", "CARD": "mi tarjeta", "IBAN": "IBAN",
           "NATIONAL_ID": "mi número", "IP": "IP", "SECRET": "la clave"},
    "it": {"EMAIL": "la mia email", "PHONE": "telefono", "CARD": "la mia carta", "IBAN": "IBAN",
           "NATIONAL_ID": "codice", "IP": "IP", "SECRET": "la chiave"},
    "nl": {"EMAIL": "mijn e-mail", "PHONE": "telefoon", "CARD": "mijn kaart", "IBAN": "IBAN",
           "NATIONAL_ID": "mijn nummer", "IP": "IP", "SECRET": "de sleutel"},
    "pl": {"EMAIL": "mój e-mail", "PHONE": "tel.", "CARD": "moja karta", "IBAN": "IBAN",
           "NATIONAL_ID": "numer", "IP": "IP", "SECRET": "klucz"},
    "pt": {"EMAIL": "meu e-mail", "PHONE": "telefone", "CARD": "meu cartão", "IBAN": "IBAN",
           "NATIONAL_ID": "meu número", "IP": "IP", "SECRET": "a chave"},
    "sv": {"EMAIL": "min e-post", "PHONE": "tel", "CARD": "mitt kort", "IBAN": "IBAN",
           "NATIONAL_ID": "mitt nummer", "IP": "IP", "SECRET": "nyckeln"},
    "da": {"EMAIL": "min e-mail", "PHONE": "tlf.", "CARD": "mit kort", "IBAN": "IBAN",
           "NATIONAL_ID": "mit nummer", "IP": "IP", "SECRET": "nøglen"},
    "fi": {"EMAIL": "sähköpostini", "PHONE": "puh.", "CARD": "korttini", "IBAN": "IBAN",
           "NATIONAL_ID": "tunnukseni", "IP": "IP", "SECRET": "avain"},
    "no": {"EMAIL": "min e-post", "PHONE": "tlf.", "CARD": "mitt kort", "IBAN": "IBAN",
           "NATIONAL_ID": "mitt nummer", "IP": "IP", "SECRET": "nøkkelen"},
    "zh": {"EMAIL": "邮箱", "PHONE": "电话", "CARD": "银行卡", "IBAN": "IBAN",
           "NATIONAL_ID": "身份证", "IP": "IP", "SECRET": "密钥"},
}  # fmt: skip
FRAMES = {
    "en": ["Hello, I was charged twice last week. {pii} Please help, thanks.",
           "My order has not arrived yet and nobody answers. {pii} Regards"],
    "de": ["Hallo, ich wurde doppelt belastet. {pii} Bitte um schnelle Hilfe.",
           "Meine Lieferung ist nicht angekommen. {pii} Viele Grüße"],
    "fr": ["Bonjour, j'ai été débité deux fois. {pii} Merci de votre aide.",
           "Ma commande n'est pas arrivée. {pii} Cordialement"],
    "es": ["Hola, me cobraron dos veces. {pii} Gracias por la ayuda.",
           "Mi pedido no ha llegado todavía. {pii} Saludos"],
    "it": ["Buongiorno, mi avete addebitato due volte. {pii} Grazie.",
           "Il mio ordine non è arrivato. {pii} Cordiali saluti"],
    "nl": ["Hallo, ik ben twee keer belast. {pii} Alvast bedankt.",
           "Mijn bestelling is niet aangekomen. {pii} Groeten"],
    "pl": ["Dzień dobry, pobrano opłatę dwa razy. {pii} Dziękuję.",
           "Moje zamówienie nie dotarło. {pii} Pozdrawiam"],
    "pt": ["Olá, fui cobrado duas vezes. {pii} Obrigado.",
           "A minha encomenda não chegou. {pii} Cumprimentos"],
    "sv": ["Hej, jag har debiterats två gånger. {pii} Tack på förhand.",
           "Min leverans har inte kommit. {pii} Hälsningar"],
    "da": ["Hej, jeg er blevet trukket to gange. {pii} På forhånd tak.",
           "Min pakke er ikke kommet. {pii} Venlig hilsen"],
    "fi": ["Hei, minulta veloitettiin kahdesti. {pii} Kiitos avusta.",
           "Tilaukseni ei ole saapunut. {pii} Terveisin"],
    "no": ["Hei, jeg ble belastet to ganger. {pii} Takk for hjelpen.",
           "Pakken min har ikke kommet. {pii} Hilsen"],
    "zh": ["您好，我被重复扣款了。 {pii} 谢谢。", "我的订单还没有到。 {pii} 谢谢"],
}  # fmt: skip
TYPES = ("EMAIL", "PHONE", "CARD", "IBAN", "NATIONAL_ID", "IP", "SECRET")
CARD_TYPES = ("visa13", "visa16", "visa19", "mastercard", "amex", "discover", "jcb15", "jcb16", "maestro",
              "diners")  # fmt: skip


@dataclass
class Doc:
    text: str
    locale: str
    pii: list[tuple[str, str]] = field(default_factory=list)  # (type, value as written)
    plain_words: list[str] = field(default_factory=list)
    decoys: list[str] = field(default_factory=list)


def _compact(value: str) -> str:
    return re.sub(r"[^0-9A-Za-z@]", "", value)


def _grouped(value: str, sep: str = " ") -> str:
    c = _compact(value)
    return sep.join(c[i : i + 4] for i in range(0, len(c), 4))


@dataclass
class Generator:
    rng: random.Random
    fakers: dict[str, Faker]
    rejected: Counter[str] = field(default_factory=Counter)

    def value(self, kind: str, locale: str) -> str | None:
        fake = self.fakers[locale]
        country = LOCALES[locale][1]
        if kind == "EMAIL":
            return self.rng.choice([fake.email, fake.free_email, fake.company_email])()
        if kind == "PHONE":
            number = fake.phone_number()
            try:
                valid = phonenumbers.is_valid_number(phonenumbers.parse(number, country))
            except phonenumbers.NumberParseException:
                valid = False
            return number if valid else self._reject(kind)
        if kind == "CARD":
            # Every network of Faker's base provider, whatever the locale's own provider offers.
            number = self.fakers["en_US"].credit_card_number(card_type=self.rng.choice(CARD_TYPES))
            if not luhn.is_valid(number):
                return self._reject(kind)
            return self.rng.choice([number, _grouped(number), _grouped(number, "-")])
        if kind == "IBAN":
            number = fake.iban()
            if not stdnum_iban.is_valid(number):
                return self._reject(kind)
            return self.rng.choice([number, _grouped(number)])
        if kind == "NATIONAL_ID":
            sources = [(m, v) for m, v in ID_SOURCES[locale] if hasattr(fake, m)]
            if not sources:
                return self._reject(f"{kind} ({locale}: no Faker provider)")
            method, valid_fn = self.rng.choice(sources)
            number = str(getattr(fake, method)())
            return number if valid_fn(number) else self._reject(kind)
        if kind == "IP":
            return self.rng.choice([fake.ipv4_public, fake.ipv4, fake.ipv6])()
        if kind == "SECRET":
            alphabet = string.ascii_letters + string.digits
            body = "".join(self.rng.choice(alphabet) for _ in range(32))
            return self.rng.choice(
                [
                    "sk-proj-" + body,
                    "ghp_" + body[:36].ljust(36, "x"),
                    "AKIA"
                    + "".join(self.rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
                    "xoxb-" + body[:12] + "-" + body[12:],
                    f"https://api.{fake.domain_name()}/v1/export?token={body[:24]}",
                    f"https://{fake.user_name()}:{body[:10]}@{fake.domain_name()}/admin",
                    body,  # a bare random token: only the entropy rule can find it
                ]
            )
        raise ValueError(kind)

    def _reject(self, kind: str) -> None:
        self.rejected[kind] += 1
        return None


def _decoy_items(rng: random.Random, fake: Faker) -> list[str]:
    def digits(n: int) -> str:
        return str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))

    def broken_luhn() -> str:
        number = fake.credit_card_number()
        last = (int(number[-1]) + rng.randint(1, 9)) % 10
        return _grouped(number[:-1] + str(last))

    def broken_iban() -> str:
        number = fake.iban()
        check = (int(number[2:4]) + rng.randint(1, 50)) % 97 + 2
        return _grouped(number[:2] + f"{check:02d}" + number[4:])

    makers: list[Callable[[], str]] = [
        lambda: f"order #{digits(rng.randint(6, 10))}",
        lambda: f"Order {digits(rng.randint(8, 12))}",
        lambda: f"Bestellnummer {digits(10)}",
        lambda: f"commande n° {digits(9)}",
        lambda: f"invoice INV-{rng.randint(2019, 2026)}-{digits(5)}",
        lambda: f"tracking 1Z{digits(3)}AA1{digits(10)}",
        lambda: f"tracking number {digits(12)}",
        lambda: f"Sendungsnummer JJD{digits(17)}",
        lambda: f"USPS tracking {_grouped(digits(22))}",
        lambda: fake.date(pattern=rng.choice(["%d.%m.%Y", "%Y-%m-%d", "%m/%d/%Y", "%d/%m/%Y"])),
        lambda: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        lambda: rng.choice(["€", "$", "£"]) + f"{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}",
        lambda: f"{rng.randint(1, 9)}.{rng.randint(100, 999)},{rng.randint(0, 99):02d} €",
        lambda: f"v{rng.randint(1, 20)}.{rng.randint(0, 30)}.{rng.randint(0, 200)}",
        lambda: f"10.0.{rng.randint(10000, 22631)}.{rng.randint(1, 4000)}",
        lambda: f"TCK-{rng.randint(2019, 2026)}-{digits(6)}",
        lambda: f"INC{digits(7)}",
        lambda: f"case {digits(8)}",
        lambda: broken_luhn(),
        lambda: f"card {broken_luhn()}",
        lambda: broken_iban(),
        lambda: f"IBAN {broken_iban()}",
        lambda: f"SKU {rng.choice(string.ascii_uppercase)}{digits(7)}",
        lambda: f"{rng.randint(2, 500)} items",
    ]
    return [rng.choice(makers)() for _ in range(rng.randint(4, 8))]


def build_corpus(n_docs: int, n_decoys: int, seed: int) -> tuple[list[Doc], list[Doc], Counter[str]]:
    rng = random.Random(seed)
    fakers = {locale: Faker(locale) for locale in LOCALES}
    for i, fake in enumerate(fakers.values()):
        fake.seed_instance(seed + i)
    gen = Generator(rng, fakers)
    locales = list(LOCALES)
    docs: list[Doc] = []
    while len(docs) < n_docs:
        locale = locales[len(docs) % len(locales)]
        language = LOCALES[locale][0]
        parts: list[str] = []
        doc = Doc("", locale)
        for kind in rng.sample(TYPES, rng.randint(1, 3)):
            value = gen.value(kind, locale)
            if value is None:
                continue
            label = LABELS[language][kind] + " " if rng.random() < 0.5 else ""
            parts.append(f"{label}{value}")
            doc.pii.append((kind, value))
            doc.plain_words.extend(label.split())
        if not doc.pii:
            continue
        frame = rng.choice(FRAMES[language])
        doc.plain_words.extend(frame.replace("{pii}", " ").split())
        doc.text = frame.format(pii=", ".join(parts))
        docs.append(doc)
    decoys: list[Doc] = []
    for i in range(n_decoys):
        locale = locales[i % len(locales)]
        language = LOCALES[locale][0]
        items = _decoy_items(rng, fakers[locale])
        frame = rng.choice(FRAMES[language])
        text = frame.format(pii=" · ".join(items))
        decoys.append(Doc(text, locale, plain_words=text.split(), decoys=items))
    return docs, decoys, gen.rejected


# --- scoring ---------------------------------------------------------------------------------------

_JOIN = re.compile(r"(?<=[0-9A-Za-z])[ .\-/()+](?=[0-9A-Za-z(+])")


def leaked(kind: str, value: str, output: str, locale: str) -> bool:
    if value in output:
        return True
    joined = _JOIN.sub("", _JOIN.sub("", output))
    compact = _compact(value)
    if len(compact) >= 6 and compact.lower() in joined.lower():
        return True
    if kind == "PHONE":
        number = phonenumbers.parse(value, LOCALES[locale][1])
        national = str(number.national_number)
        return national in re.sub(r"\D", "", joined)
    return False


def _word_damage(doc: Doc, output: str) -> tuple[int, int]:
    expected = Counter(doc.plain_words)
    got = Counter(output.split())
    missing = sum(max(0, n - got[w]) for w, n in expected.items())
    return missing, sum(expected.values())


@dataclass
class Result:
    name: str
    recall: dict[str, tuple[int, int]]
    word_damage: float
    decoy_word_damage: float
    decoy_item_damage: float
    docs_per_s: float
    docs_per_cpu_s: float
    misses: list[tuple[str, str, str]]
    decoy_hits: list[str]


def evaluate(
    name: str, redact: Callable[[str, str], str], docs: Sequence[Doc], decoys: Sequence[Doc]
) -> Result:
    started, cpu_started = time.perf_counter(), time.process_time()
    outputs = [redact(d.text, d.locale) for d in docs]
    decoy_outputs = [redact(d.text, d.locale) for d in decoys]
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    misses = []
    missing = total = 0
    for doc, out in zip(docs, outputs, strict=True):
        for kind, value in doc.pii:
            found[kind][1] += 1
            if leaked(kind, value, out, doc.locale):
                misses.append((doc.locale, kind, value))
            else:
                found[kind][0] += 1
        m, t = _word_damage(doc, out)
        missing += m
        total += t
    d_missing = d_total = item_hits = item_total = 0
    decoy_hits = []
    for doc, out in zip(decoys, decoy_outputs, strict=True):
        m, t = _word_damage(doc, out)
        d_missing += m
        d_total += t
        for item in doc.decoys:
            item_total += 1
            if item not in out:
                item_hits += 1
                decoy_hits.append(f"{doc.locale}: {item}")
    return Result(
        name,
        {k: (v[0], v[1]) for k, v in found.items()},
        (missing + d_missing) / max(1, total + d_total),
        d_missing / max(1, d_total),
        item_hits / max(1, item_total),
        (len(docs) + len(decoys)) / elapsed,
        (len(docs) + len(decoys)) / cpu,
        misses,
        decoy_hits,
    )


def ticketfleet_redactor(text: str, locale: str) -> str:
    return redact_text(text, locale=locale.replace("_", "-"))


PRESIDIO_SKIP = {"DATE_TIME", "URL", "PERSON", "LOCATION", "NRP", "ORGANIZATION"}


def presidio_redactor() -> Callable[[str, str], str] | str:
    try:
        import tldextract.tldextract
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        from presidio_anonymizer import AnonymizerEngine
    except ImportError as exc:
        return f"presidio not installed ({exc}); pip install -e '.[dev]'"
    # Presidio's e-mail check asks tldextract, which would try to download the public suffix list on
    # first use (no network here): use the snapshot tldextract ships instead.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    nlp_engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "noop"}])
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
    entities = sorted(set(analyzer.get_supported_entities("en")) - PRESIDIO_SKIP)
    anonymizer = AnonymizerEngine()

    def redact(text: str, locale: str) -> str:
        results = analyzer.analyze(text=text, language="en", entities=entities)
        return anonymizer.anonymize(text=text, analyzer_results=results).text  # type: ignore[arg-type]

    return redact


def report(result: Result, show_misses: int) -> None:
    print(f"\n== {result.name}")
    for kind in TYPES:
        hit, n = result.recall.get(kind, (0, 0))
        print(f"  recall {kind:<12} {hit / max(1, n):6.3f}  ({hit}/{n})")
    print(f"  damage, non-PII words, all docs   {result.word_damage:6.2%}")
    print(f"  damage, words of decoy docs       {result.decoy_word_damage:6.2%}")
    print(f"  damage, decoy items altered       {result.decoy_item_damage:6.2%}")
    # Wall clock depends on what else runs on the machine; CPU seconds of this process do much less.
    print(f"  docs/s, wall clock, one thread    {result.docs_per_s:8.0f}")
    print(f"  docs per CPU second (one core)    {result.docs_per_cpu_s:8.0f}")
    for locale, kind, value in result.misses[:show_misses]:
        print(f"    missed {kind} [{locale}]: {value}")
    for hit in result.decoy_hits[:show_misses]:
        print(f"    altered decoy {hit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1500)
    parser.add_argument("--decoys", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-presidio", action="store_true")
    parser.add_argument("--misses", type=int, default=0, help="print up to N misses and altered decoys")
    args = parser.parse_args()

    docs, decoys, rejected = build_corpus(args.docs, args.decoys, args.seed)
    counts = Counter(kind for d in docs for kind, _ in d.pii)
    print(
        f"corpus: {len(docs)} PII docs ({dict(counts)}), {len(decoys)} decoy docs "
        f"({sum(len(d.decoys) for d in decoys)} decoy items), {len(LOCALES)} locales"
    )
    print(f"Faker values rejected by their validator (not used): {dict(rejected)}")
    redact_text("warm-up 4111 1111 1111 1111", locale="en-US")
    report(evaluate("ticketfleet", ticketfleet_redactor, docs, decoys), args.misses)
    if not args.no_presidio:
        presidio = presidio_redactor()
        if isinstance(presidio, str):
            print(f"\n== presidio: {presidio}")
        else:
            presidio("warm-up a@example.com 4111 1111 1111 1111", "en_US")
            report(evaluate("presidio (regex-only, NoOpNlpEngine)", presidio, docs, decoys), args.misses)


if __name__ == "__main__":
    main()
