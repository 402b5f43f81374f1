"""Turning a request's credentials (sealed inline, or named) into what Nessus needs, in memory only."""

from __future__ import annotations

from scanfleet.agent.nessus import SSHCredential
from scanfleet.common.credentials import CredentialError, CredentialStore, TargetCredential, load
from scanfleet.common.crypto import CredentialKeyError, Keyring
from scanfleet.common.messages import ScanRequest


class CredentialResolver:
    def __init__(self, keyring: Keyring | None, store: CredentialStore) -> None:
        self.keyring = keyring
        self.store = store

    def resolve(self, request: ScanRequest) -> TargetCredential | None:
        """The plaintext credential of an authenticated request; raises CredentialError (no secret in it)."""
        if request.scan_type == "untrusted":
            return None
        if request.credentials is not None:
            if self.keyring is None:
                raise CredentialError("inline credentials arrived but this agent has no SCANFLEET_CREDENTIAL_KEYS")
            try:
                credential = load(self.keyring.open(request.credentials, request.task_id))
            except CredentialKeyError as exc:
                raise CredentialError(str(exc)) from None
        elif request.credential_ref is not None:
            credential = self.store.lookup(request.credential_ref)
        else:
            raise CredentialError(f"a {request.scan_type} scan needs credentials or a credential_ref")
        credential.check(request.scan_type)
        return credential


def to_nessus(credential: TargetCredential) -> SSHCredential:
    return SSHCredential(
        username=credential.username,
        password=credential.password,
        private_key=credential.private_key,
        private_key_passphrase=credential.private_key_passphrase,
        elevate_privileges_with=credential.escalation or "Nothing",
        escalation_account=credential.escalation_account,
        escalation_password=credential.escalation_password,
    )
