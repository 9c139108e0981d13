"""Verifying signed webhook deliveries: ticketfleet's own scheme, Zendesk's and Zammad's.

Every check recomputes the HMAC over the raw body bytes exactly as received and compares in constant
time (:func:`hmac.compare_digest`). Each verifier raises :class:`SignatureError` with a reason a
sender's operator can act on ("timestamp … is 912 s old", "signature does not match"), never one that
leaks the expected value.

* ticketfleet: ``X-Ticketfleet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.
  Several ``v1=`` entries are allowed, so a sender can sign with an old and a new secret while rotating.
* Zendesk: ``X-Zendesk-Webhook-Signature`` = base64(HMAC-SHA256(secret, timestamp + body)) with the
  timestamp from ``X-Zendesk-Webhook-Signature-Timestamp`` (ISO 8601, e.g. ``2021-07-25T10:00:00Z``).
  The secret is used as the text Zendesk shows (it looks like base64 but is not decoded).
* Zammad: ``X-Hub-Signature: sha1=<hex HMAC-SHA1(token, body)>`` (the webhook's "HMAC SHA1 Signature
  Token"). Zammad signs no timestamp, so there is no replay window; the receiver only nudges a poll.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable
from datetime import datetime

TICKETFLEET_SIGNATURE_HEADER = "X-Ticketfleet-Signature"
ZENDESK_SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
ZENDESK_TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"
ZAMMAD_SIGNATURE_HEADER = "X-Hub-Signature"


class SignatureError(ValueError):
    """The delivery is not authentic (or not fresh). ``reason`` is safe to show the sender."""

    def __init__(self, reason: str, *, stale: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stale = stale


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def _check_window(age_s: float, tolerance_s: float, stamp: str) -> None:
    if abs(age_s) > tolerance_s:
        when = f"{age_s:.0f} s old" if age_s > 0 else f"{-age_s:.0f} s in the future"
        raise SignatureError(
            f"stale timestamp {stamp}: it is {when}, outside the replay window of {tolerance_s:.0f} s "
            "(re-sign the request now; check the sender's clock)",
            stale=True,
        )


# --- ticketfleet ----------------------------------------------------------------------------------


def sign_ticketfleet(secret: str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """The header value a sender puts in ``X-Ticketfleet-Signature`` (used by the bench and docs)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(_secret_bytes(secret), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def parse_ticketfleet_signature(header: str) -> tuple[int, list[str]]:
    """``t=…,v1=…[,v1=…]`` → (timestamp, signatures). Unknown keys are ignored (future schemes)."""
    stamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed {TICKETFLEET_SIGNATURE_HEADER}: expected t=<unix>,v1=<hex>")
        if key == "t":
            if not value.isdigit():
                raise SignatureError(f"malformed {TICKETFLEET_SIGNATURE_HEADER}: t must be unix seconds")
            stamp = int(value)
        elif key == "v1":
            signatures.append(value.strip().lower())
    if stamp is None or not signatures:
        raise SignatureError(f"malformed {TICKETFLEET_SIGNATURE_HEADER}: needs t=<unix> and v1=<hex>")
    return stamp, signatures


def check_ticketfleet_timestamp(header: str, *, tolerance_s: float, now: float | None = None) -> int:
    """Parse the header and refuse a stale timestamp; cheap, so it runs before the body is read."""
    stamp, _ = parse_ticketfleet_signature(header)
    _check_window((time.time() if now is None else now) - stamp, tolerance_s, str(stamp))
    return stamp


def verify_ticketfleet(
    secrets: Iterable[str | bytes],
    body: bytes,
    header: str,
    *,
    tolerance_s: float,
    now: float | None = None,
) -> None:
    """Accept when any ``v1`` matches the HMAC under any of ``secrets`` and the timestamp is fresh."""
    stamp = check_ticketfleet_timestamp(header, tolerance_s=tolerance_s, now=now)
    _, signatures = parse_ticketfleet_signature(header)
    signed = f"{stamp}.".encode() + body
    matched = False
    for secret in secrets:
        expected = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).hexdigest()
        for candidate in signatures:
            # No early exit: every comparison runs, so timing says nothing about which one matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("signature does not match: sign '<t>.<raw body>' with HMAC-SHA256, hex")


# --- Zendesk --------------------------------------------------------------------------------------


def zendesk_signature(secret: str | bytes, body: bytes, timestamp: str) -> str:
    digest = hmac.new(_secret_bytes(secret), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _parse_iso(stamp: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SignatureError(f"malformed {ZENDESK_TIMESTAMP_HEADER}: {stamp!r} is not ISO 8601") from exc
    if parsed.tzinfo is None:
        raise SignatureError(f"malformed {ZENDESK_TIMESTAMP_HEADER}: {stamp!r} has no time zone")
    return parsed


def verify_zendesk_webhook(
    secret: str | bytes,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    tolerance_s: float | None = 300,
    now: float | None = None,
) -> None:
    """Zendesk: base64(HMAC-SHA256(secret, timestamp + body)); ``tolerance_s=None`` skips the window."""
    if not secret:
        raise SignatureError("no Zendesk signing secret configured: nothing can be verified")
    if not signature or not timestamp:
        raise SignatureError(f"missing {ZENDESK_SIGNATURE_HEADER} or {ZENDESK_TIMESTAMP_HEADER} header")
    if tolerance_s is not None:
        age = (time.time() if now is None else now) - _parse_iso(timestamp).timestamp()
        _check_window(age, tolerance_s, timestamp)
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"malformed {ZENDESK_SIGNATURE_HEADER}: not base64") from exc
    expected = hmac.new(_secret_bytes(secret), timestamp.encode() + body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, given):
        raise SignatureError("Zendesk signature does not match (check the webhook's signing secret)")


# --- Zammad ---------------------------------------------------------------------------------------


def zammad_signature(token: str | bytes, body: bytes) -> str:
    return "sha1=" + hmac.new(_secret_bytes(token), body, hashlib.sha1).hexdigest()


def verify_zammad_webhook(token: str | bytes, body: bytes, signature: str | None) -> None:
    """Zammad: ``X-Hub-Signature: sha1=<hex HMAC-SHA1(token, body)>``."""
    if not token:
        # An empty key is a key anyone can sign with: refuse rather than "verify".
        raise SignatureError("no Zammad HMAC SHA1 token configured: nothing can be verified")
    if not signature:
        raise SignatureError(f"missing {ZAMMAD_SIGNATURE_HEADER} header")
    algorithm, sep, given = signature.strip().partition("=")
    if not sep or algorithm.lower() != "sha1":
        raise SignatureError(f"malformed {ZAMMAD_SIGNATURE_HEADER}: expected sha1=<hex>")
    expected = hmac.new(_secret_bytes(token), body, hashlib.sha1).hexdigest()
    if not hmac.compare_digest(expected, given.lower()):
        raise SignatureError("Zammad signature does not match (check the webhook's HMAC SHA1 token)")
