"""The redactor, per PII type: what must go, and the look-alikes that must stay. Pure: no services."""

from __future__ import annotations

import pytest

from ticketfleet.pii import DetectContext, PiiKind, Span, ThreadRedactor, redact_text, rehydrate_text


@pytest.mark.parametrize(
    ("text", "locale", "value", "placeholder"),
    [
        ("write to jane.doe+shop@example.co.uk please", None, "jane.doe+shop@example.co.uk", "<EMAIL_1>"),
        ("call me at +44 20 7946 0958 today", "en-GB", "7946 0958", "<PHONE_1>"),
        ("Rufen Sie 0151 23456789 an", "de-DE", "0151 23456789", "<PHONE_1>"),
        ("appelez le 06.12.34.56.78 svp", "fr-FR", "06.12.34.56.78", "<PHONE_1>"),
        ("phone 217-977-6317x066 anytime", "en-US", "977-6317", "<PHONE_1>"),
        ("card 4111 1111 1111 1111 was charged", None, "4111 1111 1111 1111", "<CARD_1>"),
        ("Visa 19: 4586834497869073662", None, "4586834497869073662", "<CARD_1>"),
        ("JCB 15 180090736625859 please", None, "180090736625859", "<CARD_1>"),
        ("Mastercard 2-series 2221-0000-0000-0009", None, "2221-0000-0000-0009", "<CARD_1>"),
        ("IBAN DE89 3704 0044 0532 0130 00 bitte", "de-DE", "DE89 3704 0044 0532 0130 00", "<IBAN_1>"),
        ("iban: NL91ABNA0417164300.", "nl-NL", "NL91ABNA0417164300", "<IBAN_1>"),
        ("DNI 55858725M y NIE Z1677726L", "es-ES", "55858725M", "<NATIONAL_ID_1>"),
        ("codice fiscale RSSMRA85T10A562S", "it-IT", "RSSMRA85T10A562S", "<TAX_ID_1>"),
        ("NIR 172023201312126 merci", "fr-FR", "172023201312126", "<NATIONAL_ID_1>"),
        ("my SSN is 138-73-1034", "en-US", "138-73-1034", "<NATIONAL_ID_1>"),
        ("BSN 214035797 graag", "nl-NL", "214035797", "<NATIONAL_ID_1>"),
        ("PESEL 83120241586", "pl-PL", "83120241586", "<NATIONAL_ID_1>"),
        ("CPF 916.727.895-75 obrigado", "pt-BR", "916.727.895-75", "<NATIONAL_ID_1>"),
        ("CURP NAQH900718MZSWKL04", "es-MX", "NAQH900718MZSWKL04", "<NATIONAL_ID_1>"),
        ("hetu 221002A584L", "fi-FI", "221002A584L", "<NATIONAL_ID_1>"),
        ("personnummer 961115-5822", "sv-SE", "961115-5822", "<NATIONAL_ID_1>"),
        ("身份证 360426199101010071", "zh-CN", "360426199101010071", "<NATIONAL_ID_1>"),
        ("USt-IdNr. DE270669072", "de-DE", "DE270669072", "<VAT_1>"),
        ("from 203.0.113.42 and", None, "203.0.113.42", "<IP_1>"),
        ("v6 2001:db8:85a3::8a2e:370:7334 here", None, "2001:db8:85a3::8a2e:370:7334", "<IP_1>"),
        ("see https://shop.example/cb?token=abc123def456 now", None, "abc123def456", "<URL_SECRET_1>"),
        ("ftp://bob:hunter2@files.example/x", None, "hunter2", "<URL_SECRET_1>"),
        ("DSN postgres://admin:s3cr3t@db.internal:5432/prod", None, "s3cr3t", "<URL_SECRET_1>"),
        ("key sk-proj-abcdEFGH1234ijklMNOP5678qrst ok", None, "sk-proj-abcd", "<SECRET_1>"),
        ("aws AKIAIOSFODNN7EXAMPLE", None, "AKIAIOSFODNN7EXAMPLE", "<SECRET_1>"),
        ("slack xoxb-2215-8813-q9KfLpWm3sTx", None, "xoxb-2215", "<SECRET_1>"),
        (
            "token Zq8mX2pL9vR4tY7wK1nB5cH3jD6fG0sA here",
            None,
            "Zq8mX2pL9vR4tY7wK1nB5cH3jD6fG0sA",
            "<SECRET_1>",
        ),
    ],
)
def test_each_type_is_replaced_by_its_placeholder(
    text: str, locale: str | None, value: str, placeholder: str
) -> None:
    out = redact_text(text, locale=locale)
    assert value not in out
    assert placeholder in out


@pytest.mark.parametrize(
    "text",
    [
        "order #100234 and order 4500123456 are both late",
        "Bestellnummer 4500123456, Rechnung 2024-00123 vom 12.03.2024",
        "tracking 1Z999AA10123456784, tracking number 794612345678",
        "USPS tracking 9400 1000 0000 0000 0000 00",
        "paid €1.299,00 on 2024-03-12 at 10:30, then $1,299.99 on 03/12/2024",
        "app version 4.2.1, Windows 10.0.19045.3570, build v10.15.7",
        "ticket TCK-2024-000123, INC0012345, case 48599266, SKU A1234567",
        "card 4111 1111 1111 1112 is a typo (bad Luhn)",
        "IBAN DE88 3704 0044 0532 0130 00 has a wrong check digit",
        "NL86 FEYN 1805 3534 97 is not an IBAN",
        "we shipped 250 items in 3 boxes of 12 kg",
        "placed on 2024-03-12 10:45, total EUR 1234567.89, due 12/03/2024",
        "customer number 123456789, Kundennummer 4711 0815",
        "PyTorchModelHubMixin and TransformersEngineFactory are class names",
    ],
)
def test_look_alikes_survive_untouched(text: str) -> None:
    assert redact_text(text, locale="en-US") == text
    assert redact_text(text, locale="de-DE") == text


def test_validators_decide_not_shapes() -> None:
    # Same shape, one valid and one not: only the valid one goes.
    out = redact_text("cards 4111111111111111 and 4111111111111112", locale="en-US")
    assert out == "cards <CARD_1> and 4111111111111112"
    out = redact_text("IBAN GB82 WEST 1234 5698 7654 32 or GB82 WEST 1234 5698 7654 33", locale="en-GB")
    assert out == "IBAN <IBAN_1> or GB82 WEST 1234 5698 7654 33"


def test_weak_ids_need_a_hint_from_country_keyword_or_shape() -> None:
    # 214035797 passes the Dutch 11-test, like one 9-digit number in eleven.
    assert redact_text("reference 214035797 please", locale="en-US") == "reference 214035797 please"
    assert "<NATIONAL_ID_1>" in redact_text("my number 214035797 please", locale="nl-NL")
    assert "<NATIONAL_ID_1>" in redact_text("my BSN 214035797 please", locale="en-US")


def test_same_value_same_placeholder_across_a_thread_and_forms() -> None:
    thread = ThreadRedactor(context=DetectContext(regions=("DE",)))
    first = thread.redact("Karte 4111 1111 1111 1111, Mail a@b.de").text
    second = thread.redact("nochmal: 4111111111111111 und A@B.DE, neue Karte 5555 5555 5555 4444").text
    assert first == "Karte <CARD_1>, Mail <EMAIL_1>"
    assert second == "nochmal: <CARD_1> und <EMAIL_1>, neue Karte <CARD_2>"
    assert thread.values == {
        "<CARD_1>": "4111 1111 1111 1111",
        "<EMAIL_1>": "a@b.de",
        "<CARD_2>": "5555 5555 5555 4444",
    }


def test_a_thread_continues_from_its_vault_mapping() -> None:
    mapping = {"<CARD_1>": "4111 1111 1111 1111", "<NAME_1>": "Anna Schmidt"}
    thread = ThreadRedactor.from_mapping(
        mapping, DetectContext(known_names=("Anna Schmidt",)), retired=["<EMAIL_3>"]
    )
    out = thread.redact("Anna again: card 4111-1111-1111-1111, mail new@example.org").text
    assert out == "<NAME_1> again: card <CARD_1>, mail <EMAIL_4>"


def test_requester_metadata_is_numbered_first_and_found_in_text() -> None:
    thread = ThreadRedactor(context=DetectContext(known_names=("Anna Schmidt",)))
    assert thread.redact_requester("Anna Schmidt", "anna@example.org") == ("<NAME_1>", "<EMAIL_1>")
    out = thread.redact("Hallo, hier ist Anna Schmidt (anna@example.org). Gruß, Anna").text
    assert out == "Hallo, hier ist <NAME_1> (<EMAIL_1>). Gruß, <NAME_1>"


def test_rehydrate_restores_known_placeholders_and_keeps_unknown_ones() -> None:
    mapping = {"<NAME_1>": "Anna", "<CARD_1>": "4111 1111 1111 1111"}
    assert rehydrate_text("Dear <NAME_1>, card <CARD_1>; <EMAIL_9>", mapping) == (
        "Dear Anna, card 4111 1111 1111 1111; <EMAIL_9>"
    )


def test_a_plugged_in_detector_takes_part() -> None:
    def order_ner(text: str, context: DetectContext) -> list[Span]:
        start = text.find("Berlin")
        return [Span(start, start + 6, PiiKind.NAME, "berlin")] if start >= 0 else []

    from ticketfleet.pii import DEFAULT_DETECTORS

    out = redact_text("I live in Berlin, mail x@y.org", detectors=(*DEFAULT_DETECTORS, order_ner))
    assert out == "I live in <NAME_1>, mail <EMAIL_1>"


def test_a_typed_placeholder_is_neutralised() -> None:
    thread = ThreadRedactor()
    out = thread.redact("my card is <CARD_1>, the real one 4111 1111 1111 1111").text
    assert out == "my card is ‹CARD_1›, the real one <CARD_1>"
