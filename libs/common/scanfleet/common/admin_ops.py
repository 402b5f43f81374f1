"""Operator actions on dead letters and the fleet, shared by ``scanfleet dlq|stats`` and /v1/admin.

A library, not part of any service: the CLI and the gateway both run these against NATS.

A dead letter is named by its SCAN_DLQ sequence. ``retry`` is the audited way back for a
task that failed or timed out: the record is reset to a fresh ``queued`` one
(``TaskStore.requeue``), its expiry lease is withdrawn, a ``queued`` event records who retried
which letter, and a new request goes out (``task_ops.enqueue``: ``Nats-Msg-Id <task_id>-retry<N>``), so the
dispatcher sees a new message and not a duplicate of the first. The letter is then removed.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec
from nats.js.errors import NotFoundError

from scanfleet.common import contract, expiry
from scanfleet.common.contract import EventKind
from scanfleet.common.messages import DeadLetter, decode
from scanfleet.common.registry import fleet_view
from scanfleet.common.runtime import Runtime
from scanfleet.common.task_ops import EnqueueFailed, enqueue
from scanfleet.common.tasks import REQUEUEABLE, IllegalTransition


class AdminError(Exception):
    """A refusal an operator can act on; ``status`` maps to HTTP."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class StoredLetter(msgspec.Struct, kw_only=True):
    """A dead letter with where it sits in SCAN_DLQ; ``original`` decoded when it is JSON."""

    seq: int
    subject: str
    task_id: str | None
    trace_id: str | None
    stage: str
    reason: str
    error: str
    attempts: int
    failed_at: datetime
    original_subject: str | None = None
    original_stream: str | None = None
    original_seq: int | None = None
    original: Any = None


def _stored(seq: int, subject: str, data: bytes) -> StoredLetter:
    try:
        letter = decode(data, DeadLetter)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        return StoredLetter(
            seq=seq,
            subject=subject,
            task_id=None,
            trace_id=None,
            stage=contract.stage_of_dlq(subject) or "?",
            reason="unreadable_letter",
            error=str(exc),
            attempts=0,
            failed_at=datetime.fromtimestamp(0).astimezone(),
        )
    original: Any = None
    if letter.original is not None:
        try:
            original = json.loads(letter.original)
        except ValueError:
            original = letter.original.decode(errors="replace")
    return StoredLetter(
        seq=seq,
        subject=subject,
        task_id=letter.task_id,
        trace_id=letter.trace_id,
        stage=letter.stage,
        reason=letter.reason,
        error=letter.error,
        attempts=letter.attempts,
        failed_at=letter.failed_at,
        original_subject=letter.original_subject,
        original_stream=letter.original_stream,
        original_seq=letter.original_seq,
        original=original,
    )


def dlq_filter(stage: str | None = None, task_id: str | None = None) -> str:
    for name in (stage, task_id):
        if name is not None and not contract.NAME_RE.match(name):
            raise AdminError(422, "invalid_filter", f"{name!r} is not a valid stage or task id")
    return contract.dlq_filter(stage, task_id)


async def list_letters(
    rt: Runtime, *, stage: str | None = None, task_id: str | None = None, limit: int = 50
) -> list[StoredLetter]:
    """The newest ``limit`` dead letters matching the filter, newest first."""
    subject = dlq_filter(stage, task_id)
    found: list[StoredLetter] = []
    seq = 1
    while True:
        try:
            msg = await rt.js.get_msg(contract.DLQ_STREAM, seq=seq, subject=subject, next=True)
        except NotFoundError:
            break
        found.append(_stored(int(msg.seq or 0), msg.subject or "", msg.data or b""))
        seq = int(msg.seq or 0) + 1
    return list(reversed(found))[: max(0, limit)]


async def inspect(rt: Runtime, seq: int) -> StoredLetter:
    try:
        msg = await rt.js.get_msg(contract.DLQ_STREAM, seq)
    except NotFoundError:
        raise AdminError(404, "letter_not_found", f"SCAN_DLQ has no message {seq}") from None
    return _stored(seq, msg.subject or "", msg.data or b"")


class RetryOutcome(msgspec.Struct, kw_only=True):
    seq: int
    task_id: str
    retries: int
    request_msg_id: str
    request_subject: str


def _credential_ref(original: Any) -> str | None:
    if not isinstance(original, dict):
        return None
    inner = original.get("request")
    request: dict[str, Any] = inner if isinstance(inner, dict) else original
    ref = request.get("credential_ref")
    return str(ref) if ref else None


async def retry(rt: Runtime, seq: int, *, actor: str = "operator") -> RetryOutcome:
    letter = await inspect(rt, seq)
    if letter.task_id is None:
        raise AdminError(409, "no_task", f"dead letter {seq} names no task (an unparseable message); purge it")
    record = await rt.tasks.get(letter.task_id)
    if record is None:
        raise AdminError(409, "task_gone", f"task {letter.task_id} no longer exists (expired); resubmit the scan")
    if record.state not in REQUEUEABLE:
        hint = "it is live again (already retried?)" if not record.state.terminal else "only failed or timed-out tasks"
        raise AdminError(409, "not_retryable", f"task {record.task_id} is {record.state}: {hint}")
    credential_ref = _credential_ref(letter.original)
    if record.scan_type != "untrusted" and credential_ref is None:
        raise AdminError(
            409,
            "credentials_unavailable",
            "the scan's inline credentials were removed from the dead letter; resubmit it with credentials",
        )
    await expiry.disarm(rt.js, record.task_id)
    try:
        record = await rt.tasks.requeue(record.task_id)
    except IllegalTransition as exc:
        raise AdminError(409, "not_retryable", f"task {record.task_id} is {exc.current}") from None
    await rt.publish_event(
        record,
        EventKind.QUEUED,
        detail=f"retry {record.retries} by {actor} of dead letter {seq} ({letter.stage}/{letter.reason})",
    )
    try:
        msg_id = await enqueue(rt, record, credential_ref=credential_ref)
    except EnqueueFailed as exc:
        raise AdminError(503, "enqueue_failed", "the retry could not be queued; try again") from exc
    subject = contract.request_subject(record.pool, record.task_id)
    await rt.js.delete_msg(contract.DLQ_STREAM, seq)
    return RetryOutcome(
        seq=seq, task_id=record.task_id, retries=record.retries, request_msg_id=msg_id, request_subject=subject
    )


async def purge(
    rt: Runtime,
    *,
    seqs: list[int] | None = None,
    stage: str | None = None,
    task_id: str | None = None,
    everything: bool = False,
) -> int:
    """Delete the given letters, or every letter matching the filter; returns how many went."""
    if seqs:
        removed = 0
        for seq in seqs:
            try:
                if await rt.js.delete_msg(contract.DLQ_STREAM, seq):
                    removed += 1
            except NotFoundError:
                continue
        return removed
    if not (everything or stage or task_id):
        raise AdminError(422, "nothing_selected", "name letters by sequence, or give a stage, a task id or --all")
    subject = dlq_filter(stage, task_id)
    before = await _count(rt, subject)
    await rt.js.purge_stream(contract.DLQ_STREAM, subject=subject)
    return before


async def _count(rt: Runtime, subject: str) -> int:
    info = await rt.js.stream_info(contract.DLQ_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


class PoolStats(msgspec.Struct, kw_only=True):
    pool: str
    queued: int
    scanners: int
    usable: int
    running: int
    capacity: int


class ScannerStats(msgspec.Struct, kw_only=True):
    pool: str
    instance: str
    running: int
    limit: int
    agent_alive: bool
    usable: bool
    tasks: list[str]


class Stats(msgspec.Struct, kw_only=True):
    pools: list[PoolStats]
    scanners: list[ScannerStats]
    dlq_depth: int
    dlq_by_stage: dict[str, int]


async def stats(rt: Runtime) -> Stats:
    views = await fleet_view(rt.registry, rt.capacity, rt.agents)
    scanners = [
        ScannerStats(
            pool=v.entry.pool,
            instance=v.entry.instance,
            running=v.slots.active,
            limit=v.slots.limit,
            agent_alive=v.alive,
            usable=v.usable,
            tasks=list(v.slots.tasks),
        )
        for v in views
    ]
    requests = await rt.js.stream_info(contract.REQUESTS_STREAM, subjects_filter=contract.REQUESTS_FILTER)
    queued: dict[str, int] = {}
    for subject, count in (requests.state.subjects or {}).items():
        pool = contract.pool_of_request(subject) or "?"
        queued[pool] = queued.get(pool, 0) + count
    pools = []
    for pool in sorted({s.pool for s in scanners} | set(queued)):
        mine = [s for s in scanners if s.pool == pool]
        pools.append(
            PoolStats(
                pool=pool,
                queued=queued.get(pool, 0),
                scanners=len(mine),
                usable=sum(s.usable for s in mine),
                running=sum(s.running for s in mine),
                capacity=sum(s.limit for s in mine),
            )
        )
    dlq = await rt.js.stream_info(contract.DLQ_STREAM, subjects_filter=contract.DLQ_FILTER)
    by_stage: dict[str, int] = {}
    for subject, count in (dlq.state.subjects or {}).items():
        stage = contract.stage_of_dlq(subject) or "?"
        by_stage[stage] = by_stage.get(stage, 0) + count
    return Stats(
        pools=pools,
        scanners=scanners,
        dlq_depth=dlq.state.messages,
        dlq_by_stage=dict(sorted(by_stage.items())),
    )
