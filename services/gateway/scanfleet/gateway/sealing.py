"""Checking and sealing the target credentials of authenticated scan submissions.

Inline credentials are encrypted here, bound to the task id, before anything is written to
NATS; the gateway keeps no copy. A ``credential_ref`` is only checked for form: the agent
that runs the scan resolves it from its own store.
"""

from __future__ import annotations

from dataclasses import dataclass

from scanfleet.common import credentials as creds
from scanfleet.common.config import Settings
from scanfleet.common.contract import NAME_RE
from scanfleet.common.credentials import CredentialError, TargetCredential
from scanfleet.common.crypto import Keyring
from scanfleet.common.messages import ScanType, SealedCredentials


@dataclass(frozen=True)
class CredentialSealer:
    keyring: Keyring | None

    @classmethod
    def from_settings(cls, settings: Settings) -> CredentialSealer:
        return cls(Keyring.parse(settings.credential_keys) if settings.credential_keys else None)

    def check(self, scan_type: ScanType, credential: TargetCredential | None, ref: str | None) -> None:
        if scan_type == "untrusted":
            if credential is not None or ref is not None:
                raise CredentialError("untrusted scans take no credentials; use an authenticated scan_type")
            return
        if (credential is None) == (ref is None):
            raise CredentialError(f"a {scan_type} scan needs either credentials or a credential_ref (not both)")
        if ref is not None and not NAME_RE.match(ref):
            raise CredentialError("credential_ref may use only letters, digits, '_' and '-' (at most 64)")
        if credential is not None:
            if self.keyring is None:
                raise CredentialError(
                    "inline credentials are not accepted: the gateway has no SCANFLEET_CREDENTIAL_KEYS; "
                    "use a credential_ref from the agents' store"
                )
            credential.check(scan_type)

    def seal(self, credential: TargetCredential | None, task_id: str) -> SealedCredentials | None:
        if credential is None:
            return None
        assert self.keyring is not None
        return self.keyring.seal(creds.dump(credential), task_id)
