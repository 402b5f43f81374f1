"""The task record, its state machine, and compare-and-set writes to KV ``scan_tasks``.

A transition reads the record, checks the move is legal from the state it *read*, and
writes with the revision it read. If another writer got there first the write fails, the
record is read again and the move re-checked, so two writers can never both win.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from scanfleet.common.bus import kv_create, kv_get
from scanfleet.common.contract import TERMINAL as TERMINAL
from scanfleet.common.contract import TaskState as TaskState
from scanfleet.common.messages import Priority, ResultsSummary, ScanRequest, ScanType, SealedCredentials, utcnow

_S = TaskState
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    _S.QUEUED: frozenset({_S.DISPATCHED, _S.FAILED, _S.CANCELLED}),
    # dispatched → queued: an agent hands a scan back before launching it (circuit open, window).
    _S.DISPATCHED: frozenset({_S.QUEUED, _S.RUNNING, _S.FAILED, _S.CANCELLED, _S.TIMEOUT}),
    _S.RUNNING: frozenset({_S.EXPORTING, _S.FAILED, _S.CANCELLED, _S.TIMEOUT}),
    _S.EXPORTING: frozenset({_S.VALIDATING, _S.FAILED, _S.CANCELLED, _S.TIMEOUT}),
    _S.VALIDATING: frozenset({_S.COMPLETED, _S.FAILED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.TIMEOUT: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, task_id: str, current: TaskState, target: TaskState) -> None:
        super().__init__(f"task {task_id}: {current} -> {target} is not allowed")
        self.task_id = task_id
        self.current = current
        self.target = target


class TaskNotFound(LookupError):
    pass


class ExportRef(msgspec.Struct, kw_only=True):
    object_name: str
    size: int
    sha256: str


class FindingsRef(msgspec.Struct, kw_only=True):
    """Where the validator stored the task's findings (object store ``scan_findings``)."""

    findings_object: str
    hosts_object: str
    count: int
    size: int
    sha256: str


class ValidationStamp(msgspec.Struct, kw_only=True):
    """Which validator version judged which export (by SHA-256), and when.

    A redelivered export event for the same pair is a no-op; a rewound validator consumer with a new
    version, or a changed export, re-validates an ended task without changing its state.
    """

    validator_version: str
    export_sha256: str
    validated_at: datetime
    ok: bool
    reason: str | None = None
    revalidated_at: datetime | None = None
    revalidations: int = 0


class TaskRecord(msgspec.Struct, kw_only=True):
    v: int = 1
    task_id: str
    trace_id: str
    state: TaskState = TaskState.QUEUED
    scan_type: ScanType = "untrusted"
    pool: str
    requested_instance: str | None = None
    instance: str | None = None
    targets: list[str]
    name: str
    description: str = ""
    idempotency_key_hash: str | None = None
    created_at: datetime
    updated_at: datetime
    dispatched_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    nessus_scan_id: int | None = None
    nessus_scan_name: str | None = None
    progress: int = 0
    error: str | None = None
    error_reason: str | None = None
    export: ExportRef | None = None
    results: ResultsSummary | None = None
    findings: FindingsRef | None = None
    warnings: list[str] = []
    troubleshooting: dict[str, Any] = {}
    dispatch_attempts: int = 0
    # Scanner agent bookkeeping: who claimed the Nessus side, per-host progress, export start.
    claimed_by: str | None = None
    host_progress: dict[str, int] = {}
    exporting_at: datetime | None = None
    # Operator controls, applied by the agent that holds the task (the gateway only records them).
    cancel_requested: str | None = None
    pause_requested: bool = False
    paused: bool = False
    paused_at: datetime | None = None
    paused_seconds: float = 0.0
    # Operator retries (``TaskStore.requeue``): how many times the task was sent round again.
    retries: int = 0
    # The validator's last judgement of the export (see ``ValidationStamp``).
    validation: ValidationStamp | None = None
    # Access control: the client that submitted the task, and who asked to cancel or pause it.
    submitted_by: str | None = None
    cancelled_by: str | None = None
    paused_by: str | None = None
    # History (issue 15): the credential ref a rescan reuses, where the task came from, and which
    # hosts a stopped or timed-out scan reached, per Nessus, so a rollover scans exactly the rest.
    credential_ref: str | None = None
    schedule_id: str | None = None
    rescan_of: str | None = None
    rollover_of: str | None = None
    auto_rollover: bool = False
    hosts_done: list[str] | None = None
    hosts_left: list[str] | None = None
    # Scheduling: priority asked for (within the client's scope), the client's share weight,
    # and the scan window holding the task (queued: waiting for it; running: paused by it).
    priority: Priority = "normal"
    weight: float = 1.0
    window: str | None = None
    window_until: datetime | None = None
    # Hosts a window stop left unscanned, for a rollover scan.
    unscanned: list[str] = []


def new_task_id() -> str:
    """Sortable by submission time, unguessable (128 random bits: it is also the MCP task id), a subject token."""
    return f"{utcnow():%Y%m%dT%H%M%S%f}-{secrets.token_hex(16)}"


def queued_record(
    *,
    task_id: str,
    owner: str,
    weight: float,
    pool: str,
    targets: list[str],
    name: str,
    description: str,
    scan_type: ScanType,
    requested_instance: str | None,
    credential_ref: str | None,
    priority: Priority,
    trace_id: str | None = None,
    idempotency_key_hash: str | None = None,
    schedule_id: str | None = None,
    rescan_of: str | None = None,
    rollover_of: str | None = None,
    auto_rollover: bool = False,
) -> TaskRecord:
    """A new submission's record: the one builder for a client's scan, a schedule's and a rollover.

    Every field that describes the request is a required argument, so a path that submits on
    someone's behalf cannot silently drop one (a rollover once lost its priority that way).
    """
    now = utcnow()
    return TaskRecord(
        task_id=task_id,
        trace_id=trace_id or secrets.token_hex(16),
        scan_type=scan_type,
        pool=pool,
        requested_instance=requested_instance,
        targets=targets,
        name=name,
        description=description,
        idempotency_key_hash=idempotency_key_hash,
        created_at=now,
        updated_at=now,
        submitted_by=owner,
        weight=weight,
        credential_ref=credential_ref,
        priority=priority,
        schedule_id=schedule_id,
        rescan_of=rescan_of,
        rollover_of=rollover_of,
        auto_rollover=auto_rollover,
    )


REQUEUEABLE = frozenset({TaskState.FAILED, TaskState.TIMEOUT})

# What defines the request (and the dispatcher's attempt counter, part of assignment msg ids):
# kept when a task is requeued. Every other field starts over from its default.
RETRY_KEEPS = (
    "v",
    "task_id",
    "trace_id",
    "scan_type",
    "pool",
    "requested_instance",
    "targets",
    "name",
    "description",
    "idempotency_key_hash",
    "created_at",
    "credential_ref",
    "schedule_id",
    "rescan_of",
    "rollover_of",
    "auto_rollover",
    "dispatch_attempts",
    "submitted_by",
    "priority",
    "weight",
)


def reset_for_retry(record: TaskRecord, now: datetime) -> None:
    """The one way out of a terminal state, for an operator's retry of a failed or timed-out task:
    the record becomes a fresh ``queued`` one, so the next attempt cannot trip over the last."""
    if record.state not in REQUEUEABLE:
        raise IllegalTransition(record.task_id, record.state, TaskState.QUEUED)
    kept = {name: getattr(record, name) for name in RETRY_KEEPS}
    fresh = TaskRecord(**kept, updated_at=now, retries=record.retries + 1)
    for name in TaskRecord.__struct_fields__:
        setattr(record, name, getattr(fresh, name))


def check_transition(record: TaskRecord, target: TaskState) -> None:
    if target not in TRANSITIONS[record.state]:
        raise IllegalTransition(record.task_id, record.state, target)


def _stamp(record: TaskRecord, target: TaskState, now: datetime) -> None:
    record.state = target
    record.updated_at = now
    if target is TaskState.DISPATCHED:
        record.dispatched_at = now
    elif target is TaskState.RUNNING and record.started_at is None:
        record.started_at = now
    elif target is TaskState.EXPORTING:
        record.exporting_at = now
    elif target.terminal:
        record.finished_at = now


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(TaskRecord)

Mutation = Callable[[TaskRecord], None]


class TaskStore:
    """Task records in KV; every write is conditional on the revision that was read."""

    def __init__(self, kv: KeyValue, *, max_conflicts: int = 50) -> None:
        self.kv = kv
        self.max_conflicts = max_conflicts

    async def create(self, record: TaskRecord) -> int:
        """Create-only: ``KeyWrongLastSequenceError`` when the task's record already exists."""
        return await kv_create(self.kv, record.task_id, _encoder.encode(record))

    async def read(self, task_id: str) -> tuple[TaskRecord, int]:
        entry = await kv_get(self.kv, task_id)
        if entry is None or entry.value is None:
            raise TaskNotFound(task_id)
        return _decoder.decode(entry.value), int(entry.revision or 0)

    async def get(self, task_id: str) -> TaskRecord | None:
        try:
            return (await self.read(task_id))[0]
        except TaskNotFound:
            return None

    async def transition(
        self,
        task_id: str,
        target: TaskState,
        mutate: Mutation | None = None,
        *,
        known: tuple[TaskRecord, int] | None = None,
        fallback: TaskState | None = None,
    ) -> TaskRecord:
        """Move the task to ``target``, or to ``fallback`` when the state read forbids ``target``;
        raises IllegalTransition if the current state forbids both."""

        def apply(record: TaskRecord) -> None:
            chosen = target
            if fallback is not None and target not in TRANSITIONS[record.state]:
                chosen = fallback
            check_transition(record, chosen)
            if mutate is not None:
                mutate(record)
            _stamp(record, chosen, utcnow())

        return await self.update(task_id, apply, known=known)

    async def requeue(self, task_id: str) -> TaskRecord:
        """Reset a failed or timed-out task to ``queued`` (see ``reset_for_retry``), with CAS."""
        return await self.update(task_id, lambda record: reset_for_retry(record, utcnow()))

    async def update(
        self, task_id: str, mutate: Mutation, *, known: tuple[TaskRecord, int] | None = None
    ) -> TaskRecord:
        """Read-modify-write with CAS, retried on conflict; ``mutate`` may raise to abort.

        ``known`` is a record and revision the caller has just read (and gives up): the first
        attempt writes against it, saving a read; a stale one only costs the usual retry.
        """
        for _ in range(self.max_conflicts):
            record, revision = known if known is not None else await self.read(task_id)
            known = None
            state_before = record.state
            mutate(record)
            if record.state == state_before:
                record.updated_at = utcnow()
            try:
                await self.kv.update(task_id, _encoder.encode(record), last=revision)
            except KeyWrongLastSequenceError:
                continue
            return record
        raise RuntimeError(f"task {task_id}: gave up after {self.max_conflicts} write conflicts")


def request_of(
    record: TaskRecord, *, credentials: SealedCredentials | None = None, credential_ref: str | None = None
) -> ScanRequest:
    """The task's scan request, built from its record (sealed credentials only when given)."""
    return ScanRequest(
        task_id=record.task_id,
        trace_id=record.trace_id,
        pool=record.pool,
        scanner_instance=record.requested_instance,
        scan_type=record.scan_type,
        targets=record.targets,
        name=record.name,
        description=record.description,
        submitted_at=record.created_at,
        credential_ref=credential_ref,
        credentials=credentials,
        submitted_by=record.submitted_by,
        weight=record.weight,
        priority=record.priority,
    )
