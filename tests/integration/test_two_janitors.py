"""Two janitors at once (issue 13, several of every service): their sweeps end each stuck task
once, dead-letter it once and free its slot; the same expiry done by both deletes once and
fails neither. Schedule occurrences and rollovers are claimed by CAS (test_rollover_claims,
and end to end test_history's two janitors)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from nats.js.errors import NotFoundError

from scanfleet.common import admin_ops as admin
from scanfleet.common import capacity, contract
from scanfleet.common.bus import put_object_stream
from scanfleet.common.messages import encode, utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskState
from scanfleet.janitor.housekeeping import Housekeeper
from scanfleet.janitor.stale import REQUEST_GRACE, REQUEST_LOST, Sweeper
from tests.helpers import add_task

KEY = contract.instance_key("default", "scanner-1")


async def events_of(rt: Runtime, task_id: str, kind: str) -> int:
    subject = contract.event_subject(task_id, kind)
    info = await rt.js.stream_info(contract.EVENTS_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_two_janitors_sweeping_at_once_end_each_stuck_task_once(runtime: Runtime) -> None:
    rt = runtime
    past = utcnow() - timedelta(seconds=REQUEST_GRACE + 60)
    await capacity.ensure_limit(rt.capacity, KEY, 16)
    stuck = [f"t-stuck-{i}" for i in range(8)]
    for task_id in stuck:
        record = await add_task(rt, task_id, TaskState.RUNNING)
        record.started_at = record.updated_at = past
        await rt.tasks.kv.put(task_id, encode(record))
        assert await capacity.reserve(rt.capacity, KEY, task_id)
    lost = await add_task(rt, "t-request-lost", TaskState.QUEUED)  # no request ever published
    await rt.tasks.update(lost.task_id, lambda r: setattr(r, "created_at", past))

    limits = {TaskState.RUNNING: 60.0, TaskState.QUEUED: 86_400.0}
    first, second = await asyncio.gather(Sweeper(rt, limits).sweep(), Sweeper(rt, limits).sweep())

    ended = [*first.ended, *second.ended]
    assert sorted(ended) == sorted([*stuck, lost.task_id]), "each task ended by exactly one janitor"
    assert {**first.ended, **second.ended}[lost.task_id] == REQUEST_LOST
    letters = await admin.list_letters(rt)
    assert sorted(letter.task_id or "" for letter in letters) == sorted(ended), "one dead letter each"
    for task_id in stuck:
        ended_record = await rt.tasks.get(task_id)
        assert ended_record is not None and ended_record.state is TaskState.TIMEOUT
        assert await events_of(rt, task_id, "timeout") == 1
    assert (await capacity.read_all(rt.capacity))[KEY].tasks == []


async def test_two_janitors_expiring_one_task_delete_it_once(runtime: Runtime) -> None:
    rt = runtime
    done = await add_task(rt, "t-expired", TaskState.COMPLETED)
    name = contract.export_object_name(done.task_id)

    async def one_chunk() -> AsyncIterator[bytes]:
        yield b"<NessusClientData_v2/>"

    await put_object_stream(rt.js, contract.EXPORTS_OBJECTS, name, one_chunk())

    removed = await asyncio.gather(Housekeeper(rt).expire(done.task_id), Housekeeper(rt).expire(done.task_id))

    assert any(removed)
    assert await rt.tasks.get(done.task_id) is None
    store = await rt.js.object_store(contract.EXPORTS_OBJECTS)
    with pytest.raises(NotFoundError):  # deleted (nats-py: ObjectDeletedError) or never there
        await store.get_info(name)
