"""Per-instance slot accounting in KV ``scan_capacity``, one key per scanner.

A slot record lists the tasks that hold a slot, not a bare counter: reserving twice for
the same task or releasing twice is harmless, and a slot held by a crashed writer can be
traced back to its task instead of leaking silently.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from scanfleet.common.bus import kv_create, kv_get, kv_items
from scanfleet.common.messages import utcnow


class Slots(msgspec.Struct, kw_only=True):
    limit: int
    tasks: list[str] = []
    last_assigned_at: datetime | None = None

    @property
    def active(self) -> int:
        return len(self.tasks)

    @property
    def free(self) -> int:
        return max(0, self.limit - len(self.tasks))


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Slots)


def decode(value: bytes) -> Slots:
    return _decoder.decode(value)


async def _read(kv: KeyValue, key: str) -> tuple[Slots, int] | None:
    entry = await kv_get(kv, key)
    if entry is None or entry.value is None:
        return None
    return _decoder.decode(entry.value), int(entry.revision or 0)


async def _modify(
    kv: KeyValue,
    key: str,
    change: Callable[[Slots], bool | None],
    attempts: int = 20,
    known: tuple[Slots, int] | None = None,
) -> bool:
    """Apply ``change`` with CAS. ``change`` returns True to write, False for no-op success,
    None for refusal; the result says whether the wanted state holds. ``known`` (slots and
    revision, e.g. from a mirror) is tried first instead of a read: stale costs one retry."""
    for _ in range(attempts):
        current = (_copy(known[0]), known[1]) if known is not None else await _read(kv, key)
        known = None
        if current is None:
            return False
        slots, revision = current
        verdict = change(slots)
        if verdict is None:
            return False
        if not verdict:
            return True
        try:
            await kv.update(key, _encoder.encode(slots), last=revision)
        except KeyWrongLastSequenceError:
            continue
        return True
    return False


def _copy(slots: Slots) -> Slots:
    return Slots(limit=slots.limit, tasks=list(slots.tasks), last_assigned_at=slots.last_assigned_at)


async def reserve(kv: KeyValue, key: str, task_id: str, *, known: tuple[Slots, int] | None = None) -> bool:
    """Take a slot for ``task_id`` if one is free; True also when the task already holds one."""

    def take(slots: Slots) -> bool | None:
        if task_id in slots.tasks:
            return False
        if slots.free < 1:
            return None
        slots.tasks.append(task_id)
        slots.last_assigned_at = utcnow()
        return True

    return await _modify(kv, key, take, attempts=3, known=known)


async def release(kv: KeyValue, key: str, task_id: str) -> bool:
    """Give back the task's slot; idempotent, so whichever service sees the end first may call it."""

    def drop(slots: Slots) -> bool:
        if task_id not in slots.tasks:
            return False
        slots.tasks.remove(task_id)
        return True

    return await _modify(kv, key, drop)


async def ensure_limit(kv: KeyValue, key: str, limit: int) -> None:
    """Create the slot record, or change its limit while keeping the tasks that hold slots."""
    if await kv_get(kv, key) is None:
        try:
            await kv_create(kv, key, _encoder.encode(Slots(limit=limit)))
            return
        except KeyWrongLastSequenceError:
            pass

    def set_limit(slots: Slots) -> bool:
        changed = slots.limit != limit
        slots.limit = limit
        return changed

    await _modify(kv, key, set_limit)


async def read_all(kv: KeyValue) -> dict[str, Slots]:
    return {key: _decoder.decode(value) for key, value in (await kv_items(kv)).items()}


async def holder_of(kv: KeyValue, task_id: str) -> str | None:
    """The instance key whose slots include ``task_id``, if any (crash recovery)."""
    for key, slots in (await read_all(kv)).items():
        if task_id in slots.tasks:
            return key
    return None
