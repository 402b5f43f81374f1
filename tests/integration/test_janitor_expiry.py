"""TTL housekeeping against a real nats-server: leases, markers, deletion, last access."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY

from scanfleet.common import contract, expiry
from scanfleet.common.bus import put_object_stream
from scanfleet.common.contract import EventKind
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskState
from scanfleet.janitor.housekeeping import Housekeeper
from tests.helpers import add_task, until, watch_gone


async def store_results(rt: Runtime, task_id: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"<NessusClientData_v2/>"

    for store, name in contract.task_objects(task_id):
        await put_object_stream(rt.js, store, name, chunks())


async def object_exists(rt: Runtime, store: str, name: str) -> bool:
    try:
        await (await rt.js.object_store(store)).get_info(name)
    except NotFoundError:
        return False
    return True


def deletions(state: str) -> float:
    return REGISTRY.get_sample_value("nessus_ttl_deletions_total", {"state": state}) or 0.0


async def test_ended_task_and_results_expire_running_task_untouched(janitor: Runtime) -> None:
    rt = janitor
    done = await add_task(rt, "t-done", TaskState.COMPLETED)
    running = await add_task(rt, "t-running", TaskState.RUNNING)
    await store_results(rt, done.task_id)
    await store_results(rt, running.task_id)
    before = deletions("completed")

    await rt.publish_event(done, EventKind.COMPLETED)
    await rt.publish_event(running, EventKind.COMPLETED)  # a bogus event must not arm a live task

    await watch_gone(rt.tasks.kv, done.task_id)
    for store, name in contract.task_objects(done.task_id):
        assert not await object_exists(rt, store, name), name
    assert deletions("completed") == before + 1
    assert (await rt.tasks.get(running.task_id)) == running
    for store, name in contract.task_objects(running.task_id):
        assert await object_exists(rt, store, name), name
    assert await expiry.key_state(rt.js, running.task_id) is None


async def test_failed_task_keeps_its_longer_retention(janitor: Runtime) -> None:
    rt = janitor
    failed = await add_task(rt, "t-failed", TaskState.FAILED)
    armed_at = time.monotonic()
    await rt.publish_event(failed, EventKind.FAILED)

    await watch_gone(rt.tasks.kv, failed.task_id)
    assert time.monotonic() - armed_at >= 2.5  # failed_ttl is 3 s, completed_ttl only 2 s


async def test_reading_results_restarts_the_clock(janitor: Runtime) -> None:
    rt = janitor
    done = await add_task(rt, "t-read", TaskState.COMPLETED)
    await rt.publish_event(done, EventKind.COMPLETED)

    async def armed() -> bool:
        state = await expiry.key_state(rt.js, done.task_id)
        return state is not None and state.live

    await until(armed, "the expiry lease to be armed", within=15.0)
    await asyncio.sleep(1.2)  # the scenario: a second passes before the results are read
    assert await expiry.touch(rt.js, done, rt.settings)
    touched_at = time.monotonic()
    lease = await rt.js.get_last_msg(contract.EXPIRY_STREAM, expiry.lease_subject(done.task_id))
    assert expiry.decode_lease(lease.data or b"").last_accessed_at is not None

    await watch_gone(rt.tasks.kv, done.task_id)
    assert time.monotonic() - touched_at >= 1.8  # a full 2 s from the read, not from the end


async def test_a_task_that_runs_again_is_never_expired(runtime: Runtime) -> None:
    rt = runtime
    record = await add_task(rt, "t-again", TaskState.FAILED)
    assert await expiry.arm(rt.js, record, rt.settings)
    await expiry.disarm(rt.js, record.task_id)
    state = await expiry.key_state(rt.js, record.task_id)
    assert state is not None and not state.live
    await rt.tasks.requeue(record.task_id)
    assert not await Housekeeper(rt).expire(record.task_id)
    assert (await rt.tasks.get(record.task_id)) is not None


async def test_touch_never_resurrects_an_expired_lease(runtime: Runtime) -> None:
    rt = runtime
    rt.settings = msgspec.structs.replace(rt.settings, completed_ttl=1.0)
    record = await add_task(rt, "t-late", TaskState.COMPLETED)
    assert await expiry.arm(rt.js, record, rt.settings)
    assert not await expiry.arm(rt.js, record, rt.settings)  # already armed

    async def expired() -> bool:
        state = await expiry.key_state(rt.js, record.task_id)
        return state is not None and state.expired

    await until(expired, "the expiry lease to expire", within=15.0)
    assert not await expiry.touch(rt.js, record, rt.settings)
