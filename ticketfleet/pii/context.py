"""Words around a number that say what it is. Validators decide; these only break ties.

A number right after "order", "tracking", "invoice"… is that thing, not a phone or an id, even when a
checksum happens to pass (a random 9-digit number passes the Dutch BSN 11-test one time in eleven).
A number right after "IBAN", "card", "SSN"… is allowed through a weak validator in any locale.
"""

from __future__ import annotations

import re

_NEGATIVE = (
    r"order|orders|ordernr|bestellung|bestellnummer|auftrag|commande|pedido|ordine|bestelling|zamówienie|"
    r"encomenda|beställning|ordre|tilaus|tracking|track|sendung|sendungsnummer|suivi|seguimiento|"
    r"spedizione|paket|parcel|colis|invoice|rechnung|facture|factura|fattura|factuur|faktura|lasku|"
    r"ticket|case|ref|reference|referenz|référence|referencia|riferimento|ticketnummer|article|artikel|"
    r"sku|part|serial|seriennummer|version|build|release|kundennummer|customer\s+no|contract|"
    r"vertrag|contrat|contrato|policy|police|booking|buchung|réservation|reserva|prenotazione|flight|"
    r"customer|kunde|kunden|client|cliente|klant|kund|asiakas|member|membership|mitglied|loyalty|"
    r"item|produkt|product|model|modell|modèle|modelo|licen[cs]e|lizenz|rma|awb|shipment"
)
_POSITIVE = (
    r"phone|tel|telefon|téléphone|telefono|teléfono|telefoon|mobile|mobil|handy|cell|portable|móvil|"
    r"cellulare|gsm|whatsapp|fax|call|ring|anrufen|appel|llam|chiam|bel|ssn|social\s+security|bsn|"
    r"pesel|nip|nif|nie|dni|nir|insee|sécurité\s+sociale|steuer|steuernummer|steuer-?id|idnr|"
    r"identifikationsnummer|personnummer|cpr|hetu|henkilötunnus|fødselsnummer|fodselsnummer|"
    r"personal\s+id|national\s+id|id\s+number|codice\s+fiscale|cpf|cnpj|curp|rfc|pan|aadhaar|sin|"
    r"nino|national\s+insurance|ein|tax|vat|ust|tva|iva|btw|moms|alv|mva|card|karte|carte|tarjeta|"
    r"carta|kaart|karta|cartão|kort|kortti|visa|mastercard|amex|iban|konto|account|compte|cuenta|"
    r"conto|rekening|rachunek|conta|ahv|avs|vnr|sozialversicherung|rijksregister|registre\s+national"
)
# Negative words must be whole words (optionally "…nummer", "…no"): "v" must not swallow "vat".
_LAST_WORDS = re.compile(
    rf"(?i)\b(?:(?P<neg>(?:{_NEGATIVE})(?:s|es|nr|no|nummer|number|id)?\b)|(?P<pos>(?:{_POSITIVE})\w*))"
)

WINDOW = 48
WORDS = 3
# Where a clause ends: a number after "Ma commande n'est pas arrivée. " is not labelled by "commande".
# A period only ends a clause after a word of 4+ letters, so "Tel. 0151…" and "n° 12" keep their label.
_CLAUSE_END = re.compile(r"(?:[!?;,\n]|(?<=[^\W\d_]{4})\.)\s")
_WORD = re.compile(r"[^\s]+")


def preceding_label(text: str, start: int) -> str | None:
    """ "neg", "pos" or None: the label of the keyword nearest before ``start``.

    Only the last few words of the same clause count, and only the nearest keyword, so
    "order paid with card 4111…" is labelled by "card".
    """
    window = text[max(0, start - WINDOW) : start]
    ends = list(_CLAUSE_END.finditer(window))
    if ends:
        window = window[ends[-1].end() :]
    # A '#' or '№' right before the number ("#100234") marks a reference.
    if window.rstrip().endswith(("#", "№")):
        return "neg"
    words = _WORD.findall(window)[-WORDS:]
    last: str | None = None
    for match in _LAST_WORDS.finditer(" ".join(words)):
        last = "neg" if match.group("neg") else "pos"
    return last
