"""Cancelling a queued task against real NATS: the gateway's ScanControl and a live dispatcher.

The cancelled request must leave SCAN_REQUESTS at once (queue depth and positions stop
counting it), and the dispatcher still holding it must drop it without reserving a slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from scanfleet.common import capacity, contract
from scanfleet.common.config import parse_fleet
from scanfleet.common.registry import sync_registry
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.dispatcher.service import Dispatcher, PoolDispatcher
from scanfleet.gateway.control import ScanControl
from scanfleet.gateway.core import Gateway, SubmitScan
from scanfleet.gateway.errors import GatewayError
from scanfleet.gateway.queue import QueueView
from tests.helpers import agent_alive, make_caller, make_gateway, queue_at_once, until, watch_until

POOL, INSTANCE = "dmz", "scanner-3"
CALLER = make_caller()
KEY = contract.instance_key(POOL, INSTANCE)


@pytest.fixture
async def fleet(runtime: Runtime) -> Runtime:
    scanner = {"id": INSTANCE, "url": "https://s3:8834", "auth": {"access_key": "a", "secret_key": "b"}}
    config = parse_fleet({"pools": {POOL: {"scanners": [{**scanner, "max_concurrent_scans": 1}]}}}, source="t", env={})
    await sync_registry(runtime.registry, runtime.capacity, config)
    await agent_alive(runtime, POOL, INSTANCE)
    return runtime


@pytest.fixture
async def dispatcher(fleet: Runtime) -> AsyncIterator[Dispatcher]:
    running = Dispatcher(fleet, fleet.settings, lead=False)
    task = asyncio.create_task(running.run())
    try:
        yield running
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done, "the dispatcher did not stop when cancelled"


async def state_of(rt: Runtime, task_id: str, wanted: TaskState, within: float = 10.0) -> TaskRecord:
    return await watch_until(rt.tasks.kv, task_id, TaskRecord, lambda r: r.state is wanted, within)


async def submit(gateway: Gateway, name: str) -> str:
    answer = await gateway.submit(CALLER, SubmitScan(targets="10.1.0.1", name=name, scanner_pool=POOL), queue_at_once)
    return str(answer["task_id"])


async def holds(pool: PoolDispatcher, task_id: str) -> bool:
    return task_id in pool.waiting


async def not_held(pool: PoolDispatcher, task_id: str) -> bool:
    return task_id not in pool.waiting


async def held_by_dispatcher(rt: Runtime, count: int) -> bool:
    info = await rt.js.consumer_info(contract.REQUESTS_STREAM, contract.dispatch_consumer_name(POOL))
    return bool(info.num_ack_pending == count and info.num_pending == 0)


async def test_cancelled_queued_request_leaves_the_queue_at_once_and_is_never_given_a_slot(
    fleet: Runtime, dispatcher: Dispatcher
) -> None:
    rt = fleet
    gateway = make_gateway(rt)
    control, queue = ScanControl(gateway), QueueView(rt)
    first = await submit(gateway, "holds the only slot")
    await state_of(rt, first, TaskState.DISPATCHED)
    victim = await submit(gateway, "cancelled while waiting")
    pool = dispatcher.dispatchers[POOL]
    await until(lambda: holds(pool, victim), "the dispatcher to hold the waiting request", within=10.0)
    assert await held_by_dispatcher(rt, 1)
    assert (await queue.queue_status(CALLER, POOL))["pools"][0]["queue_depth"] == 1

    slot_history: list[list[str]] = []
    watcher = await rt.capacity.watch(KEY)

    async def record_slots() -> None:
        while True:
            entry = await watcher.updates(timeout=30)  # type: ignore[no-untyped-call]
            if entry is not None and entry.value:
                slot_history.append(capacity.decode(entry.value).tasks)

    recorder = asyncio.create_task(record_slots())
    try:
        answer = await control.cancel(CALLER, victim, "wrong targets")
        assert answer["status"] == "cancelled" and answer["error_message"] == "wrong targets"
        status = await queue.queue_status(CALLER, POOL)
        assert status["pools"][0]["queue_depth"] == 0 and status["pools"][0]["next_tasks"] == []
        assert (await queue.placement(POOL, victim))["queue_position"] is None
        with pytest.raises(NotFoundError):
            await rt.js.get_last_msg(contract.REQUESTS_STREAM, contract.request_subject(POOL, victim))

        # Deleting the message also took it off the consumer's pending acks on the server,
        # and the cancelled event made the dispatcher drop the request it held.
        await until(lambda: held_by_dispatcher(rt, 0), "the server to forget the deleted request", within=10.0)
        await until(lambda: not_held(pool, victim), "the dispatcher to forget the cancelled request", within=10.0)
        later = await submit(gateway, "submitted after the cancel")
        await until(lambda: holds(pool, later), "the dispatcher to hold the next request", within=10.0)
        # The slot frees: it goes to the next request, never to the cancelled one.
        await capacity.release(rt.capacity, KEY, first)
        dispatched = await state_of(rt, later, TaskState.DISPATCHED)
        assert dispatched.instance == INSTANCE
        assert victim not in pool.waiting
    finally:
        recorder.cancel()
        await watcher.stop()  # type: ignore[no-untyped-call]
    assert slot_history, "the capacity watch saw the slot change hands"
    assert all(victim not in tasks for tasks in slot_history), slot_history
    record = await rt.tasks.get(victim)
    assert record is not None and record.state is TaskState.CANCELLED and record.instance is None


async def test_cancel_frees_a_slot_reserved_before_a_dispatcher_crash(fleet: Runtime) -> None:
    """Reserve happened, then the dispatcher died before queued→dispatched: cancel gives it back."""
    rt = fleet
    control = ScanControl(make_gateway(rt))
    task_id = await submit(make_gateway(rt), "orphaned reservation")
    assert await capacity.reserve(rt.capacity, KEY, task_id)
    await control.cancel(CALLER, task_id)
    assert (await capacity.read_all(rt.capacity))[KEY].tasks == []


async def test_cancel_of_a_dispatched_task_is_left_to_its_agent(fleet: Runtime, dispatcher: Dispatcher) -> None:
    rt = fleet
    control = ScanControl(make_gateway(rt))
    task_id = await submit(make_gateway(rt), "dispatched")
    await state_of(rt, task_id, TaskState.DISPATCHED)
    answer: dict[str, Any] = await control.cancel(CALLER, task_id, "stop")
    assert answer["status"] == "dispatched" and answer["cancel_requested"] == "stop"
    assert task_id in (await capacity.read_all(rt.capacity))[KEY].tasks, "the agent frees it once Nessus stopped"
    again = await control.cancel(CALLER, task_id, "second reason")
    assert again["cancel_requested"] == "stop", "the first reason stands"
    with pytest.raises(GatewayError) as refused:
        await control.pause(CALLER, task_id)
    assert refused.value.status == 409 and refused.value.code == "cannot_pause"
    assert "cancel is already under way" in refused.value.message


async def test_unknown_task_is_a_404(fleet: Runtime) -> None:
    control = ScanControl(make_gateway(fleet))
    for action in (control.cancel, control.pause, control.resume):
        with pytest.raises(GatewayError) as missing:
            await action(CALLER, "no-such-task")
        assert missing.value.status == 404
