"""Encryption of redacted originals: AES-256-GCM under a per-ticket key derived from one master key.

The master key (``TICKETFLEET_PII_KEY``, base64 of 32 bytes) never touches the database. Each ticket
gets its own key, HKDF-SHA256(master, info="ticketfleet pii ticket <id>"), so one leaked per-ticket key
opens one ticket. The associated data binds a ciphertext to its ticket and placeholder: a row copied
to another ticket or placeholder does not decrypt. ``key_id`` (a keyed hash of the master key, not
the key) is stored with each row so a wrong key is reported as such, not as corrupt data.

Key policy when ``pii_key`` is unset: ingest refuses (:class:`PiiKeyMissing`), unless
``pii_dev_key`` is on (the demo and local development), which creates ``<data_dir>/pii.key`` (mode
0600) once and reuses it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ticketfleet.core.errors import ConfigurationError
from ticketfleet.core.settings import Settings

KEY_BYTES = 32
NONCE_BYTES = 12
DEV_KEY_FILE = "pii.key"


class PiiKeyError(RuntimeError, ConfigurationError):
    """The vault key is missing, malformed, or not the one the data was written with.

    A :class:`ConfigurationError`; still a ``RuntimeError`` for callers that catch that.
    """


class PiiKeyMissing(PiiKeyError):
    pass


def generate_key() -> str:
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def parse_key(encoded: str) -> bytes:
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PiiKeyError("TICKETFLEET_PII_KEY is not valid base64") from exc
    if len(raw) != KEY_BYTES:
        raise PiiKeyError(f"TICKETFLEET_PII_KEY must decode to {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def _dev_key(data_dir: Path) -> str:
    path = data_dir / DEV_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once must not each write a different key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(generate_key() + "\n")
    return path.read_text().strip()


@dataclass(frozen=True)
class VaultCipher:
    master: bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> VaultCipher:
        encoded = settings.pii_key_value()
        if not encoded:  # unset, or set to "" (docker compose passes an unset variable as empty)
            if not settings.pii_dev_key:
                raise PiiKeyMissing(
                    "TICKETFLEET_PII_KEY is not set: tickets are not ingested without the PII vault key. "
                    "Create one with `ticketfleet pii keygen` and keep it in your secret store; for a "
                    "local try-out set TICKETFLEET_PII_DEV_KEY=1 to keep a key file in the data dir."
                )
            encoded = _dev_key(settings.data_dir)
        return cls(parse_key(encoded))

    @property
    def key_id(self) -> str:
        return hmac.new(self.master, b"ticketfleet pii key id", hashlib.sha256).hexdigest()[:16]

    def _ticket_key(self, ticket_id: int) -> AESGCM:
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=KEY_BYTES,
            salt=None,
            info=f"ticketfleet pii ticket {ticket_id}".encode(),
        )
        return AESGCM(hkdf.derive(self.master))

    @staticmethod
    def _aad(ticket_id: int, placeholder: str) -> bytes:
        return f"{ticket_id}\x00{placeholder}".encode()

    def encrypt(self, ticket_id: int, placeholder: str, value: str) -> tuple[bytes, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        aead = self._ticket_key(ticket_id)
        return nonce, aead.encrypt(nonce, value.encode("utf-8"), self._aad(ticket_id, placeholder))

    def decrypt(self, ticket_id: int, placeholder: str, nonce: bytes, ciphertext: bytes, key_id: str) -> str:
        if key_id != self.key_id:
            raise PiiKeyError(
                f"the PII vault of ticket {ticket_id} was written with key id {key_id}; "
                f"TICKETFLEET_PII_KEY has key id {self.key_id} (wrong or rotated key)"
            )
        try:
            plain = self._ticket_key(ticket_id).decrypt(nonce, ciphertext, self._aad(ticket_id, placeholder))
        except InvalidTag as exc:
            raise PiiKeyError(f"vault entry {placeholder} of ticket {ticket_id} does not decrypt") from exc
        return plain.decode("utf-8")
