"""Secrets at rest, as the database layer sees them: the `Sealed` column type seals a value with
AES-256-GCM as it is written and opens it as it is read, so no code that reads or writes these
columns handles ciphertext.

A sealed value says which key sealed it: `enc:v1:<key id>:<base64 of nonce + ciphertext>`, the
key id being the first 8 hex digits of the key's SHA-256. A value without the prefix is a row
from before sealing: it is read as it is. The keyring is per process: every key any gateway of
this process was configured with can open (tests run several gateways in one process); where the
keys come from, and resealing, is services.sealing's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Text
from sqlalchemy.types import TypeDecorator

PREFIX = "enc:v1:"


class SealingError(Exception):
    """A key is missing, malformed, or does not open what the database holds."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class Keyring:
    def __init__(self) -> None:
        self.keys: dict[str, AESGCM] = {}
        self.primary: str | None = None

    def add(self, key: bytes, primary: bool = False) -> str:
        if len(key) != 32:
            raise SealingError(f"an encryption key must be 32 bytes (base64 of 32 random bytes); got {len(key)}")
        kid = key_id(key)
        self.keys[kid] = AESGCM(key)
        if primary:
            self.primary = kid
        return kid

    def seal(self, plain: str) -> str:
        if self.primary is None:
            raise SealingError("no encryption key is configured in this process")
        nonce = secrets.token_bytes(12)
        sealed = self.keys[self.primary].encrypt(nonce, plain.encode(), self.primary.encode())
        return f"{PREFIX}{self.primary}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # written before sealing
        kid, _, body = stored[len(PREFIX):].partition(":")
        aead = self.keys.get(kid)
        if aead is None:
            raise SealingError(f"a secret in the database was sealed with key {kid}, which this instance does not "
                               "have: give every instance the same encryption_key (and the old one in "
                               "encryption_keys_previous while rotating)")
        try:
            raw = base64.b64decode(body, validate=True)
            return aead.decrypt(raw[:12], raw[12:], kid.encode()).decode()
        except (binascii.Error, InvalidTag, ValueError):
            raise SealingError(f"a secret sealed with key {kid} does not open: the value is damaged") from None


KEYRING = Keyring()


class Sealed(TypeDecorator):
    """A text column whose values are sealed in the database and plain in Python."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else KEYRING.seal(value)

    def process_result_value(self, value, dialect):
        return None if value is None else KEYRING.open(value)
