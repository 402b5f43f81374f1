"""Sealing target credentials between the gateway and the agents (AES-256-GCM).

Only the gateway and the agents hold the keys (``SCANFLEET_CREDENTIAL_KEYS``); NATS, the
dispatcher, the validator and every stream see ciphertext. Each sealed blob names its key
id, so keys can rotate: the first key in the setting seals, every listed key opens. The
task id is the associated data, so a ciphertext copied onto another task does not open.
"""

from __future__ import annotations

import base64
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from scanfleet.common.contract import NAME_RE
from scanfleet.common.messages import SealedCredentials

NONCE_BYTES = 12
KEY_BYTES = 32


class CredentialKeyError(ValueError):
    """The key setting is malformed, or a sealed blob cannot be opened with the keys held."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode())


def generate_key_spec(key_id: str = "k1") -> str:
    """A fresh ``<key_id>:<base64 key>`` entry for ``SCANFLEET_CREDENTIAL_KEYS``."""
    return f"{key_id}:{_b64(secrets.token_bytes(KEY_BYTES))}"


class Keyring:
    """The AES keys by id; ``primary`` seals, every key opens."""

    def __init__(self, keys: dict[str, bytes], primary: str) -> None:
        if primary not in keys:
            raise CredentialKeyError(f"primary key {primary!r} is not in the keyring")
        self._keys = {kid: AESGCM(key) for kid, key in keys.items()}
        self.primary = primary

    def __repr__(self) -> str:
        return f"Keyring(primary={self.primary!r}, key_ids={sorted(self._keys)})"

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """``kid:base64key[,kid:base64key…]``; the first entry is the sealing key."""
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for i, part in enumerate(p.strip() for p in spec.split(",") if p.strip()):
            kid, sep, encoded = part.partition(":")
            if not sep or not NAME_RE.match(kid):
                raise CredentialKeyError(f"SCANFLEET_CREDENTIAL_KEYS entry {i}: expected <key_id>:<base64 key>")
            try:
                key = _unb64(encoded)
            except ValueError:
                raise CredentialKeyError(f"SCANFLEET_CREDENTIAL_KEYS key {kid!r}: not base64") from None
            if len(key) != KEY_BYTES:
                raise CredentialKeyError(f"SCANFLEET_CREDENTIAL_KEYS key {kid!r}: {len(key)} bytes, need {KEY_BYTES}")
            if kid in keys:
                raise CredentialKeyError(f"SCANFLEET_CREDENTIAL_KEYS: key id {kid!r} appears twice")
            keys[kid] = key
            order.append(kid)
        if not order:
            raise CredentialKeyError("SCANFLEET_CREDENTIAL_KEYS is empty")
        return cls(keys, order[0])

    def seal(self, plaintext: bytes, task_id: str) -> SealedCredentials:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._keys[self.primary].encrypt(nonce, plaintext, task_id.encode())
        return SealedCredentials(key_id=self.primary, nonce=_b64(nonce), ciphertext=_b64(ciphertext))

    def open(self, sealed: SealedCredentials, task_id: str) -> bytes:
        aead = self._keys.get(sealed.key_id)
        if aead is None:
            raise CredentialKeyError(f"credentials sealed with unknown key id {sealed.key_id!r}")
        try:
            return aead.decrypt(_unb64(sealed.nonce), _unb64(sealed.ciphertext), task_id.encode())
        except (InvalidTag, ValueError):
            raise CredentialKeyError("sealed credentials do not open: wrong key, wrong task, or tampered") from None
