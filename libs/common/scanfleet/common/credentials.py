"""Target credentials for authenticated scans: their shape, checks, and the agents' own store.

A credential reaches an agent in one of two ways: sealed inline by the gateway (see
``crypto``), or named by ``credential_ref`` and looked up in the agent's store, a YAML file
(``SCANFLEET_CREDENTIAL_STORE``) whose strings may use ``${VAR}`` so the secret itself can
stay in the environment. Nothing here ever puts a secret into a repr or an error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec
import yaml

from scanfleet.common.config import ConfigError, substitute
from scanfleet.common.messages import ScanType

Escalation = Literal["sudo", "su", "su+sudo", "pbrun", "dzdo"]
ESCALATIONS: tuple[Escalation, ...] = ("sudo", "su", "su+sudo", "pbrun", "dzdo")


class CredentialError(ValueError):
    """A credential is missing, malformed or unfit for the scan type; the message holds no secret."""


class TargetCredential(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """SSH login on the scanned hosts, optionally with privilege escalation."""

    username: str
    password: str | None = None
    private_key: str | None = None
    private_key_passphrase: str | None = None
    escalation: Escalation | None = None
    escalation_account: str | None = None
    escalation_password: str | None = None

    def __repr__(self) -> str:
        kind = "key" if self.private_key else "password"
        return f"TargetCredential(username={self.username!r}, auth={kind}, escalation={self.escalation!r})"

    __str__ = __repr__

    def check(self, scan_type: ScanType) -> None:
        if not self.username.strip():
            raise CredentialError("credentials need a username")
        if (self.password is None) == (self.private_key is None):
            raise CredentialError("credentials need exactly one of password and private_key")
        if scan_type == "authenticated_privileged" and self.escalation is None:
            raise CredentialError(f"authenticated_privileged needs an escalation method: one of {list(ESCALATIONS)}")
        if scan_type == "authenticated" and self.escalation is not None:
            raise CredentialError("escalation is only used by authenticated_privileged scans")
        if scan_type == "untrusted":
            raise CredentialError("untrusted scans take no credentials")


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(TargetCredential)


def dump(credential: TargetCredential) -> bytes:
    return _encoder.encode(credential)


def load(data: bytes) -> TargetCredential:
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise CredentialError("credential payload is malformed") from None


def parse(raw: object) -> TargetCredential:
    """From tool or REST arguments; the error names the field, never its value."""
    try:
        return msgspec.convert(raw, TargetCredential, strict=True)
    except msgspec.ValidationError as exc:
        where = str(exc).partition(" - at `$.")[2].rstrip("`") or "credentials"
        raise CredentialError(f"invalid credentials: {where}: {str(exc).partition(' - at')[0]}") from None


class CredentialStore:
    """``credentials: {<name>: {username, password | private_key, escalation…}}`` in a YAML file.

    The file is read on every lookup, so a rotated secret is picked up without a restart.
    """

    def __init__(self, path: str | Path | None, env: Mapping[str, str] | None = None) -> None:
        self.path = Path(path) if path else None
        self.env = env

    def lookup(self, name: str) -> TargetCredential:
        if self.path is None:
            raise CredentialError(f"credential_ref {name!r}: this agent has no credential store configured")
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CredentialError(f"credential store {self.path}: cannot read: {type(exc).__name__}") from None
        entries = data.get("credentials") if isinstance(data, dict) else None
        if not isinstance(entries, dict) or name not in entries:
            raise CredentialError(f"credential_ref {name!r} is not in the agent's credential store")
        try:
            raw = substitute(entries[name], os.environ if self.env is None else self.env, f"credentials.{name}")
        except ConfigError as exc:
            raise CredentialError(f"credential store {self.path}: {exc}") from None
        return parse(raw)
