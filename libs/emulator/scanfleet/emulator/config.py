"""Configuration of one emulated Nessus scanner."""

from __future__ import annotations

import msgspec


class EmulatorConfig(msgspec.Struct, kw_only=True, frozen=True):
    """Everything that distinguishes one emulated scanner from another.

    Secrets have no defaults on purpose: the runner generates random ones when none are given,
    so nothing that looks like a credential is ever committed.
    """

    name: str
    access_key: str
    secret_key: str
    username: str
    password: str
    scan_api: bool = True
    scan_duration: float = 5.0
    pending_duration: float = 0.3
    stopping_duration: float = 0.3
    export_delay: float = 0.2
    ssh_accounts: dict[str, str] = msgspec.field(default_factory=dict)
    seed: int = 0
    max_hosts: int = 4096
    version: str = "10.8.3"
    scanner_ip: str = "127.0.0.1"
    # Seconds Nessus spends loading its plugins after a (re)start, answering 503 "loading" meanwhile.
    startup_duration: float = 0.0

    def __repr__(self) -> str:
        return f"EmulatorConfig(name={self.name!r}, scan_api={self.scan_api}, version={self.version!r})"

    @property
    def nessus_type(self) -> str:
        """Nessus Professional is the edition whose licence withholds the scan API."""
        return "Nessus Manager" if self.scan_api else "Nessus Professional"
