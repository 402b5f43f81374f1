"""Message types that travel over NATS, encoded as JSON with msgspec.

Every message carries ``v`` (its schema version). Decoders ignore unknown fields, so a
producer may add an optional field without breaking older consumers; a breaking change
bumps ``v`` and consumers refuse versions they do not know.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, TypeVar

import msgspec

from scanfleet.common.contract import EventKind

ScanType = Literal["untrusted", "authenticated", "authenticated_privileged"]
SCAN_TYPES: tuple[ScanType, ...] = ("untrusted", "authenticated", "authenticated_privileged")
Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITY_NAMES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")
AuthVerdict = Literal["success", "failed", "partial", "not_attempted", "not_evaluable"]
ScanAuth = Literal["not_applicable", "success", "partial", "failed"]
Priority = Literal["high", "normal", "low"]
# Highest first: a priority's index is its class (0 = high), the order aging climbs.
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(msgspec.Struct, kw_only=True, omit_defaults=False):
    v: int = 1


class SealedCredentials(msgspec.Struct, kw_only=True):
    """Target credentials encrypted by the gateway for the agents only (AES-GCM)."""

    key_id: str
    nonce: str
    ciphertext: str


class ScanRequest(Message, kw_only=True):
    task_id: str
    trace_id: str
    pool: str
    scanner_instance: str | None = None
    scan_type: ScanType = "untrusted"
    targets: list[str]
    name: str
    description: str = ""
    credential_ref: str | None = None
    credentials: SealedCredentials | None = None
    submitted_at: datetime
    # Fair share and priority: the submitting client, its share weight (from its scope at
    # submission) and the priority it asked for (capped by its scope).
    submitted_by: str | None = None
    weight: float = 1.0
    priority: Priority = "normal"


class Assignment(Message, kw_only=True):
    task_id: str
    trace_id: str
    pool: str
    instance: str
    request: ScanRequest
    assigned_at: datetime


class ExportEvent(Message, kw_only=True):
    task_id: str
    trace_id: str
    pool: str
    instance: str
    scan_type: ScanType
    expected_hosts: int
    object_name: str
    size: int
    sha256: str
    nessus_scan_id: int
    exported_at: datetime


class SeverityCounts(msgspec.Struct, kw_only=True):
    critical: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    info: int = 0

    @property
    def vulnerabilities(self) -> int:
        """Findings that are not informational."""
        return self.critical + self.high + self.medium + self.low


class HostResult(msgspec.Struct, kw_only=True):
    name: str
    ip: str | None = None
    fqdn: str | None = None
    os: str | None = None
    severity_counts: SeverityCounts
    auth: AuthVerdict
    auth_evidence: list[str] = []
    credentialed_checks: str | None = None


class ResultsSummary(msgspec.Struct, kw_only=True):
    report_name: str | None = None
    hosts_scanned: int
    total_items: int
    total_vulnerabilities: int
    severity_counts: SeverityCounts
    auth_status: ScanAuth
    auth_counts: dict[str, int] = {}
    export_size: int = 0
    hosts: list[HostResult] = []


class TaskEvent(Message, kw_only=True):
    """One lifecycle step of a task, as published to ``scan.event.<task>.<kind>``."""

    task_id: str
    trace_id: str
    kind: EventKind
    state: str
    at: datetime
    service: str
    detail: str | None = None
    instance: str | None = None


class DeadLetter(Message, kw_only=True):
    task_id: str | None
    trace_id: str | None = None
    stage: str
    reason: str
    error: str
    attempts: int = 1
    failed_at: datetime
    original_subject: str | None = None
    original: bytes | None = None
    original_stream: str | None = None
    original_seq: int | None = None


class ContainerStatus(msgspec.Struct, kw_only=True):
    """A container-managed scanner's container as its engine reports it, and scanfleet's last
    restart of it. ``state`` is the engine's (created, running, restarting, paused, exited, dead)
    or ``unknown`` when the engine could not be asked (``error`` says why)."""

    name: str
    engine: str
    state: str = "unknown"
    health: str | None = None
    started_at: datetime | None = None
    restart_count: int = 0
    error: str | None = None
    restarted_at: datetime | None = None
    restarted_by: str | None = None


class Heartbeat(Message, kw_only=True):
    """An agent's lease on one scanner instance, with what its last probe found.

    ``starting``: the scanner is starting up (Nessus loading its plugins after a restart, or its
    container just started): no new work, and its failed calls do not count on the circuit.
    """

    pool: str
    instance: str
    agent_id: str
    at: datetime
    reachable: bool
    authenticated: bool
    scan_api: bool
    version: str | None = None
    error: str | None = None
    circuit: Literal["closed", "open", "half_open"] = "closed"
    circuit_failures: int = 0
    circuit_opened_at: datetime | None = None
    starting: bool = False
    startup_progress: int | None = None
    container: ContainerStatus | None = None


RestartOutcome = Literal["restarted", "refused", "failed"]
# Why an agent did not restart a scanner's container; the gateway's refusal codes.
RestartRefusal = Literal[
    "not_container_managed",
    "restart_in_progress",
    "scanner_busy",
    "engine_unreachable",
    "container_not_found",
    "restart_failed",
]


class RestartRequest(Message, kw_only=True):
    """An operator's (or the system's) request to restart one scanner's container, answered by
    the agent serving it (core NATS request-reply on ``contract.scanner_restart_subject``)."""

    pool: str
    instance: str
    requested_by: str
    reason: str = ""
    force: bool = False
    at: datetime


class RestartResult(Message, kw_only=True):
    pool: str
    instance: str
    outcome: RestartOutcome
    code: RestartRefusal | None = None
    message: str
    tasks: list[str] = []
    container: ContainerStatus | None = None
    at: datetime


M = TypeVar("M", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


class UnknownSchemaVersion(ValueError):
    pass


def decode(data: bytes, kind: type[M]) -> M:
    """Decode and check the schema version; raises ``msgspec.ValidationError`` on bad input."""
    message = msgspec.json.decode(data, type=kind)
    version = getattr(message, "v", 1)
    if version != 1:
        raise UnknownSchemaVersion(f"{kind.__name__} schema v{version} is not supported (expected v1)")
    return message


SECRET_FIELDS = frozenset({"credentials", "password", "escalation_password", "private_key", "passphrase"})


def scrub_credentials(original: bytes) -> bytes:
    """The message with every secret-bearing field removed; non-JSON input is dropped whole."""
    try:
        data = msgspec.json.decode(original)
    except msgspec.DecodeError:
        return b'"<unparseable message withheld>"'

    def clean(value: object) -> object:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in SECRET_FIELDS}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return msgspec.json.encode(clean(data))
