"""Signature checks against independently computed values and the vendors' documented examples."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from connectors.base import ConfigError, WriteBack
from connectors.webhook import WebhookConnector, from_config
from connectors.webhook_signatures import (
    SignatureError,
    parse_ticketfleet_signature,
    sign_ticketfleet,
    verify_ticketfleet,
    verify_zammad_webhook,
    verify_zendesk_webhook,
    zammad_signature,
    zendesk_signature,
)

NOW = 1_764_460_800.0  # 2025-11-30T00:00:00Z


def _hex(secret: bytes, message: bytes, algorithm: str = "sha256") -> str:
    return hmac.new(secret, message, algorithm).hexdigest()


# --- ticketfleet ----------------------------------------------------------------------------------


def test_ticketfleet_signature_is_hmac_of_timestamp_dot_body() -> None:
    body = b'{"conversation_id":"c","message_id":"m","text":"hi"}'
    header = sign_ticketfleet("k", body, timestamp=int(NOW))
    assert header == f"t={int(NOW)},v1={_hex(b'k', f'{int(NOW)}.'.encode() + body)}"
    verify_ticketfleet(["k"], body, header, tolerance_s=300, now=NOW + 299)


def test_ticketfleet_rotation_accepts_any_listed_signature() -> None:
    body = b"{}"
    old = _hex(b"old", f"{int(NOW)}.{{}}".encode())
    header = f"t={int(NOW)},v1={'0' * 64},v1={old}"
    verify_ticketfleet(["new", "old"], body, header, tolerance_s=300, now=NOW)
    with pytest.raises(SignatureError, match="does not match"):
        verify_ticketfleet(["new"], body, header, tolerance_s=300, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301])
def test_ticketfleet_timestamps_outside_the_window_are_stale(skew: int) -> None:
    header = sign_ticketfleet("k", b"{}", timestamp=int(NOW))
    with pytest.raises(SignatureError, match="stale timestamp") as caught:
        verify_ticketfleet(["k"], b"{}", header, tolerance_s=300, now=NOW + skew)
    assert caught.value.stale is True
    assert ("in the future" in caught.value.reason) == (skew < 0)


@pytest.mark.parametrize("header", ["", "v1=abc", "t=now,v1=abc", "t=1", "garbage"])
def test_malformed_ticketfleet_headers_are_named(header: str) -> None:
    with pytest.raises(SignatureError, match="malformed X-Ticketfleet-Signature"):
        parse_ticketfleet_signature(header)


# --- Zendesk --------------------------------------------------------------------------------------

# developer.zendesk.com "Verifying webhook authenticity": the secret Zendesk uses for test requests
# sent from the admin UI, and the formula base64(HMACSHA256(TIMESTAMP + BODY)).
ZENDESK_TEST_SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="


def test_zendesk_signature_is_base64_hmac_of_timestamp_plus_body() -> None:
    body, stamp = b'{"say": "hello"}', "2025-11-30T00:00:00Z"
    expected = base64.b64encode(
        hmac.new(ZENDESK_TEST_SECRET.encode(), stamp.encode() + body, hashlib.sha256).digest()
    ).decode()
    assert zendesk_signature(ZENDESK_TEST_SECRET, body, stamp) == expected
    verify_zendesk_webhook(ZENDESK_TEST_SECRET, body, expected, stamp, now=NOW + 10)


def test_zendesk_rejects_forged_stale_and_missing() -> None:
    body, stamp = b'{"say": "hello"}', "2025-11-30T00:00:00Z"
    good = zendesk_signature(ZENDESK_TEST_SECRET, body, stamp)
    with pytest.raises(SignatureError, match="does not match"):
        verify_zendesk_webhook(ZENDESK_TEST_SECRET, body + b" ", good, stamp, now=NOW)
    with pytest.raises(SignatureError, match="stale timestamp"):
        verify_zendesk_webhook(ZENDESK_TEST_SECRET, body, good, stamp, now=NOW + 3600)
    with pytest.raises(SignatureError, match="missing"):
        verify_zendesk_webhook(ZENDESK_TEST_SECRET, body, None, stamp, now=NOW)
    with pytest.raises(SignatureError, match="not base64"):
        verify_zendesk_webhook(ZENDESK_TEST_SECRET, body, "%%%", stamp, now=NOW)
    with pytest.raises(SignatureError, match="ISO 8601"):
        verify_zendesk_webhook(ZENDESK_TEST_SECRET, body, good, "yesterday", now=NOW)
    with pytest.raises(SignatureError, match="does not match"):
        verify_zendesk_webhook("another secret", body, good, stamp, now=NOW)
    with pytest.raises(SignatureError, match="no Zendesk signing secret"):
        verify_zendesk_webhook("", body, good, stamp, now=NOW)


def test_zendesk_secret_may_be_bytes() -> None:
    body, stamp = b'{"ticket": {"id": 5}}', "2025-11-30T00:00:00Z"
    good = zendesk_signature(ZENDESK_TEST_SECRET, body, stamp)
    verify_zendesk_webhook(ZENDESK_TEST_SECRET.encode(), body, good, stamp, now=NOW)


def test_zendesk_legacy_doc_example_used_body_then_timestamp() -> None:
    """The older event-connectors page's worked example (secret, body, timestamp, signature) only
    reproduces as HMAC(BODY + TIMESTAMP), contradicting its own text and the current page. We follow
    the current documentation (timestamp first) and record the discrepancy here so nobody "fixes"
    the order to match that example."""
    secret = b"HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA="
    body, stamp = b'{"say": "hello"}', "2021-07-25T10:00:00Z"
    documented = "tRDSF7URY8BLCDlaBcQ7FHu051Zk+aAB0NKMP53teMw="
    assert (
        base64.b64encode(hmac.new(secret, body + stamp.encode(), hashlib.sha256).digest()).decode()
        == documented
    )
    with pytest.raises(SignatureError, match="does not match"):
        verify_zendesk_webhook(secret, body, documented, stamp, tolerance_s=None)


# --- Zammad ---------------------------------------------------------------------------------------


def test_zammad_hub_signature_is_hex_hmac_sha1_of_body() -> None:
    body = b'{"ticket": {"id": 1}}'
    expected = "sha1=" + _hex(b"token", body, "sha1")
    assert zammad_signature("token", body) == expected
    verify_zammad_webhook("token", body, expected)
    verify_zammad_webhook("token", body, expected.upper().replace("SHA1=", "sha1="))
    verify_zammad_webhook(b"token", body, expected.upper())  # bytes token, upper-case algorithm too
    with pytest.raises(SignatureError, match="does not match"):
        verify_zammad_webhook("other", body, expected)
    with pytest.raises(SignatureError, match="does not match"):
        verify_zammad_webhook("token", body + b" ", expected)
    with pytest.raises(SignatureError, match="no Zammad HMAC SHA1 token"):
        verify_zammad_webhook("", body, "sha1=" + _hex(b"", body, "sha1"))
    with pytest.raises(SignatureError, match="sha1=<hex>"):
        verify_zammad_webhook("token", body, "sha256=" + _hex(b"token", body))
    with pytest.raises(SignatureError, match="missing X-Hub-Signature"):
        verify_zammad_webhook("token", body, None)


# --- the webhook connector ----------------------------------------------------------------------


def test_webhook_connector_is_push_only_and_honest_about_it() -> None:
    connector = from_config("shop-chat", {}, {}, None)
    assert isinstance(connector, WebhookConnector) and connector.kind == "webhook"
    page = connector.pull("cursor-7")
    assert page.items == [] and page.cursor == "cursor-7" and page.has_more is False
    with pytest.raises(ConfigError, match="GET /v1/tickets/shop-chat/C-1"):
        connector.push(WriteBack(ticket_external_id="C-1", note="draft", idempotency_key="k"))
    assert "push-only" in connector.check()
    with pytest.raises(ConfigError, match="url"):
        from_config("shop-chat", {"url": "http://x"}, {}, None)
