"""Expiry leases of ended tasks in KV ``scan_expiry``: one key per task, a per-message TTL.

When a task ends, the janitor writes ``<task_id>`` with ``Nats-TTL`` = what is left of the
state's retention. When the TTL runs out the server drops the value and leaves a MaxAge delete
marker on the key; the janitor consumes that marker and deletes the task and its stored results.
Reading results writes the lease again with a full TTL. Every write is conditional on the
subject's last sequence, so a lease is never resurrected over an expiry that already happened,
and a marker that is no longer the key's last message is known to be stale.

The bucket keeps ``history=1``: with more history the server clamps any shorter TTL up to the
marker TTL (nats-jetstream-facts §4). Leases are written raw, because nats-py's ``update`` takes
no TTL and its ``get`` mistakes markers for values.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import APIError, NotFoundError

from scanfleet.common import contract
from scanfleet.common.config import Settings
from scanfleet.common.messages import utcnow
from scanfleet.common.tasks import TaskRecord, TaskState

log = logging.getLogger("scanfleet.expiry")

HDR_TTL = "Nats-TTL"
HDR_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
HDR_MARKER_REASON = "Nats-Marker-Reason"
HDR_KV_OPERATION = "KV-Operation"


class ExpiryLease(msgspec.Struct, kw_only=True):
    task_id: str
    state: str
    expires_at: datetime
    last_accessed_at: datetime | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ExpiryLease)


def decode_lease(data: bytes) -> ExpiryLease:
    return _decoder.decode(data)


def retention(state: TaskState, settings: Settings) -> float | None:
    """How long a task in ``state`` is kept; None for states that never expire (not ended)."""
    if state is TaskState.COMPLETED:
        return settings.completed_ttl
    if state.terminal:
        return settings.failed_ttl
    return None


def remaining(record: TaskRecord, settings: Settings, now: datetime) -> float | None:
    """Seconds left of the record's retention, counted from when it ended (at least 1)."""
    keep = retention(record.state, settings)
    if keep is None:
        return None
    ended = record.finished_at or record.updated_at
    return max(1.0, (ended + timedelta(seconds=keep) - now).total_seconds())


def ttl_header(seconds: float) -> str:
    """Whole seconds, rounded up: the server refuses fractions and nats-py would truncate to 0."""
    return str(max(1, math.ceil(seconds)))


def lease_subject(task_id: str) -> str:
    return contract.kv_subject(contract.EXPIRY_BUCKET, task_id)


@dataclass(frozen=True)
class KeyState:
    """The last message on a task's lease key, classified."""

    seq: int
    live: bool
    expired: bool


def classify(msg: RawStreamMsg) -> KeyState:
    headers = msg.headers or {}
    expired = headers.get(HDR_MARKER_REASON) is not None
    deleted = headers.get(HDR_KV_OPERATION) in ("DEL", "PURGE")
    live = not expired and not deleted and bool(msg.data)
    return KeyState(seq=int(msg.seq or 0), live=live, expired=expired)


def is_expiry_marker(headers: dict[str, str] | None) -> bool:
    return (headers or {}).get(HDR_MARKER_REASON) == "MaxAge"


async def key_state(js: JetStreamContext, task_id: str) -> KeyState | None:
    try:
        msg = await js.get_last_msg(contract.EXPIRY_STREAM, lease_subject(task_id))
    except NotFoundError:
        return None
    return classify(msg)


async def _write(js: JetStreamContext, record: TaskRecord, ttl: float, after: int, accessed: bool) -> bool:
    now = utcnow()
    lease = ExpiryLease(
        task_id=record.task_id,
        state=str(record.state),
        expires_at=now + timedelta(seconds=math.ceil(ttl)),
        last_accessed_at=now if accessed else None,
    )
    headers = {HDR_TTL: ttl_header(ttl), HDR_EXPECTED_LAST_SUBJECT_SEQ: str(after)}
    try:
        await js.publish(lease_subject(record.task_id), _encoder.encode(lease), headers=headers)
    except APIError as exc:
        if exc.err_code == 10071:  # wrong last sequence: someone else wrote the key first
            return False
        raise
    return True


async def arm(js: JetStreamContext, record: TaskRecord, settings: Settings) -> bool:
    """Start the expiry clock of an ended task, unless it already runs; True if written."""
    ttl = remaining(record, settings, utcnow())
    if ttl is None:
        return False
    current = await key_state(js, record.task_id)
    if current is not None and current.live:
        return False
    # Over a marker too: if that expiry is still unprocessed, this write makes it stale and the
    # new lease (at least 1 s) expires in its place; if it was skipped, the task still expires.
    return await _write(js, record, ttl, current.seq if current else 0, accessed=False)


async def touch(js: JetStreamContext, record: TaskRecord, settings: Settings) -> bool:
    """Restart the full retention of an ended task whose results were just read."""
    keep = retention(record.state, settings)
    if keep is None:
        return False
    current = await key_state(js, record.task_id)
    if current is not None and current.expired:
        return False
    return await _write(js, record, keep, current.seq if current else 0, accessed=True)


async def disarm(js: JetStreamContext, task_id: str) -> None:
    """Stop the clock of a task that runs again (a retry); a later end arms it anew."""
    current = await key_state(js, task_id)
    if current is None or not current.live:
        return
    await js.publish(lease_subject(task_id), b"", headers={HDR_KV_OPERATION: "DEL"})


async def note_access(js: JetStreamContext, record: TaskRecord, settings: Settings) -> None:
    """``touch`` for read paths: a failure to extend must never fail the read itself."""
    try:
        await touch(js, record, settings)
    except Exception as exc:
        log.warning("could not extend the retention of task %s: %s", record.task_id, exc)
