"""Scan windows and fair shares through the real dispatcher and agent, on the emulator's clock.

The emulator, the dispatcher's plans and the agent's window checks all read one FakeClock, so
a blackout starts and ends when the test moves it, not after a real wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from scanfleet.agent.circuit import CircuitBreaker
from scanfleet.agent.lifecycle import Lifecycle
from scanfleet.agent.nessus import NessusClient
from scanfleet.agent.secrets import CredentialResolver
from scanfleet.common import capacity, contract
from scanfleet.common.clients import ClientDirectory, Role
from scanfleet.common.config import parse_fleet
from scanfleet.common.contract import instance_key
from scanfleet.common.credentials import CredentialStore
from scanfleet.common.messages import Assignment, Heartbeat, ScanRequest, encode, utcnow
from scanfleet.common.registry import sync_registry
from scanfleet.common.runtime import Runtime
from scanfleet.common.scope import Scope
from scanfleet.common.task_ops import enqueue
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.dispatcher.service import Dispatcher
from scanfleet.emulator.app import create_app
from scanfleet.emulator.state import EmulatorState
from scanfleet.gateway.queue import QueueView
from scanfleet.janitor.scheduler import Scheduler
from tests.helpers import ACCESS_KEY, SECRET_KEY, FakeClock, add_client, make_config, until

POOL, INSTANCE = "default", "scanner-1"
KEY = instance_key(POOL, INSTANCE)
# 2026-06-01 11:59 UTC: one minute before the daily blackout of 10.9.0.0/16 (12:00-13:00 UTC).
START = datetime(2026, 6, 1, 11, 59, tzinfo=UTC).timestamp()
IN_WINDOW = ["10.9.0.1", "10.9.0.2"]


def fleet_with_window(on_running: str = "pause", limit: int = 2) -> dict[str, Any]:
    return {
        "pools": {
            POOL: {
                "scanners": [
                    {
                        "id": INSTANCE,
                        "url": "https://scanner-1:8834",
                        "auth": {"access_key": "a", "secret_key": "b"},
                        "max_concurrent_scans": limit,
                    }
                ]
            }
        },
        "windows": [
            {
                "name": "prod-noon",
                "cron": "0 12 * * *",
                "duration_minutes": 60,
                "timezone": "UTC",
                "targets": ["10.9.0.0/16"],
                "on_running": on_running,
            }
        ],
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
async def rt(runtime: Runtime, clock: FakeClock) -> Runtime:
    runtime.settings = msgspec.structs.replace(
        runtime.settings, poll_interval=0.05, progress_interval=0.0, retry_base=0.01, retry_cap=0.05
    )
    runtime.now = lambda: datetime.fromtimestamp(clock.now, UTC)
    return runtime


def record_for(task_id: str, targets: list[str], client: str = "agent-a") -> TaskRecord:
    now = utcnow()
    return TaskRecord(
        task_id=task_id,
        trace_id="0" * 32,
        pool=POOL,
        targets=targets,
        name=f"windows {task_id}",
        created_at=now,
        updated_at=now,
        submitted_by=client,
    )


async def state_of(rt: Runtime, task_id: str) -> TaskState:
    record = await rt.tasks.get(task_id)
    assert record is not None
    return record.state


# The agent: a running scan is paused at the blackout and resumed after it -----------------


@contextlib.asynccontextmanager
async def emulated(clock: FakeClock) -> AsyncIterator[tuple[EmulatorState, NessusClient]]:
    app = create_app(make_config(scan_duration=600.0, pending_duration=1.0, export_delay=1.0), clock=clock)
    client = NessusClient(
        "http://emu", access_key=ACCESS_KEY, secret_key=SECRET_KEY, transport=httpx.ASGITransport(app=app)
    )
    async with client:
        yield app.state.emulator, client


async def dispatched(rt: Runtime, task_id: str) -> Assignment:
    record = record_for(task_id, IN_WINDOW)
    await rt.tasks.create(record)
    assert await capacity.reserve(rt.capacity, KEY, task_id)

    def assign(r: TaskRecord) -> None:
        r.instance = INSTANCE

    await rt.tasks.transition(task_id, TaskState.DISPATCHED, assign)
    request = ScanRequest(
        task_id=task_id, trace_id=record.trace_id, pool=POOL, targets=IN_WINDOW, name=record.name, submitted_at=utcnow()
    )
    return Assignment(
        task_id=task_id, trace_id=record.trace_id, pool=POOL, instance=INSTANCE, request=request, assigned_at=utcnow()
    )


def lifecycle(
    rt: Runtime, client: NessusClient, assignment: Assignment, breaker: CircuitBreaker | None = None
) -> Lifecycle:
    resolver = CredentialResolver(None, CredentialStore(None))
    breaker = breaker or CircuitBreaker()
    return Lifecycle(rt, client, assignment, agent_id="agent-a", credentials=resolver, breaker=breaker)


async def test_a_blackout_pauses_the_running_scan_on_nessus_and_its_end_resumes_it(
    rt: Runtime, clock: FakeClock
) -> None:
    await sync_registry(rt.registry, rt.capacity, parse_fleet(fleet_with_window(), source="test", env={}))
    async with emulated(clock) as (emulator, client):
        assignment = await dispatched(rt, "win-pause")
        run = asyncio.create_task(lifecycle(rt, client, assignment).run())
        await until(lambda: _state_is(rt, "win-pause", TaskState.RUNNING), "the scan to run")
        scan = next(iter(emulator.scans.values()))

        clock.advance(120)  # 12:01: inside the blackout
        record = await until(lambda: _paused(rt, "win-pause", True), "the blackout to pause the scan")
        assert record is not None and record.window == "prod-noon"
        assert record.window_until == datetime(2026, 6, 1, 13, 0, tzinfo=UTC)
        assert emulator.status(scan, clock()) == "paused", "the emulator's own record: nothing runs in the blackout"
        for _ in range(5):
            clock.advance(600)  # up to 12:51: still inside, still paused on Nessus
            assert emulator.status(scan, clock()) == "paused"

        clock.advance(10 * 60)  # 13:01: the blackout is over
        await until(lambda: _paused(rt, "win-pause", False), "the scan to resume")
        assert emulator.status(scan, clock()) in {"running", "resuming"}
        clock.advance(3600)  # the scan runs to its end on the emulator's clock, then exports

        async def tick() -> None:
            while True:
                await asyncio.sleep(0.02)
                clock.advance(1.0)

        ticker = asyncio.create_task(tick())
        try:
            await asyncio.wait_for(run, timeout=30)
        finally:
            ticker.cancel()
        ended = await rt.tasks.get("win-pause")
        assert ended is not None and ended.export is not None and ended.window is None
        assert ended.paused_seconds > 0
        slots, _ = await _slots(rt)
        assert "win-pause" not in slots.tasks, "the slot goes back once the export is stored"


async def test_a_stop_window_stops_the_scan_and_records_its_unscanned_hosts(rt: Runtime, clock: FakeClock) -> None:
    fleet = parse_fleet(fleet_with_window(on_running="stop"), source="test", env={})
    await sync_registry(rt.registry, rt.capacity, fleet)
    async with emulated(clock) as (emulator, client):
        assignment = await dispatched(rt, "win-stop")
        run = asyncio.create_task(lifecycle(rt, client, assignment).run())
        await until(lambda: _state_is(rt, "win-stop", TaskState.RUNNING), "the scan to run")
        clock.advance(120)
        await asyncio.wait_for(run, timeout=30)
        record = await rt.tasks.get("win-stop")
        assert record is not None and record.state is TaskState.TIMEOUT
        assert record.error_reason == "window_stopped"
        assert record.unscanned == IN_WINDOW
        scan = next(iter(emulator.scans.values()))
        assert emulator.status(scan, clock()) in {"stopping", "canceled"}


async def test_a_window_stopped_scan_is_rolled_over_once_and_the_rollover_waits_for_the_window(
    rt: Runtime, clock: FakeClock, tmp_path: Path
) -> None:
    clients = tmp_path / "clients.yaml"
    add_client(clients, "agent-a", Role.AGENT, Scope(targets=["10.9.0.0/16"]))
    janitors = [Scheduler(rt, ClientDirectory(clients), holder=h) for h in ("janitor-1", "janitor-2")]
    async with emulated(clock) as (_, client), dispatching(rt, fleet_with_window(on_running="stop")) as dispatcher:
        assignment = await dispatched(rt, "win-roll")
        run = asyncio.create_task(lifecycle(rt, client, assignment).run())
        await until(lambda: _state_is(rt, "win-roll", TaskState.RUNNING), "the scan to run")
        clock.advance(120)  # 12:01: the window stops the scan
        await asyncio.wait_for(run, timeout=30)
        stopped = await rt.tasks.get("win-roll")
        assert stopped is not None and stopped.error_reason == "window_stopped" and not stopped.auto_rollover

        rolled_id = await janitors[0].rollover(stopped)
        assert rolled_id is not None
        assert await janitors[1].rollover(stopped) is None, "rolled over once, however many janitors look"
        rolled = await rt.tasks.get(rolled_id)
        assert rolled is not None and rolled.rollover_of == "win-roll"
        assert sorted(rolled.targets) == sorted(stopped.unscanned) == IN_WINDOW
        await until(lambda: _holds(dispatcher, rolled_id), "the dispatcher to hold the rollover")
        assert await state_of(rt, rolled_id) is TaskState.QUEUED, "held while the window lasts"
        clock.advance(60 * 60)  # 13:01: the window is over
        await until(lambda: _state_is(rt, rolled_id, TaskState.DISPATCHED), "the rollover to start after the window")


async def test_a_timed_out_scan_not_asking_for_a_rollover_and_not_window_stopped_is_not_rolled_over(
    rt: Runtime, tmp_path: Path
) -> None:
    clients = tmp_path / "clients.yaml"
    add_client(clients, "agent-a", Role.AGENT, Scope(targets=["10.9.0.0/16"]))
    record = record_for("plain-timeout", IN_WINDOW)
    record.state, record.hosts_left, record.error_reason = TaskState.TIMEOUT, IN_WINDOW, "deadline"
    assert await Scheduler(rt, ClientDirectory(clients)).rollover(record) is None


async def test_a_scan_dispatched_just_before_the_blackout_is_handed_back_not_launched(
    rt: Runtime, clock: FakeClock
) -> None:
    await sync_registry(rt.registry, rt.capacity, parse_fleet(fleet_with_window(), source="test", env={}))
    async with emulated(clock) as (emulator, client):
        assignment = await dispatched(rt, "win-late")
        clock.advance(120)  # the blackout began between dispatch and launch
        await lifecycle(rt, client, assignment).run()
        record = await rt.tasks.get("win-late")
        assert record is not None and record.state is TaskState.QUEUED and record.instance is None
        assert not emulator.scans, "nothing was created on the scanner"
        slots, _ = await _slots(rt)
        assert "win-late" not in slots.tasks
        entry = await rt.js.get_last_msg(contract.REQUESTS_STREAM, contract.request_subject(POOL, "win-late"))
        assert msgspec.json.decode(entry.data or b"", type=ScanRequest).task_id == "win-late"


async def test_a_scan_assigned_as_its_scanners_circuit_opens_goes_back_to_the_queue(
    rt: Runtime, clock: FakeClock
) -> None:
    clock.advance(3 * 3600)  # 14:59, no window in force
    await sync_registry(rt.registry, rt.capacity, parse_fleet(fleet_with_window(), source="test", env={}))
    async with emulated(clock) as (emulator, client):
        assignment = await dispatched(rt, "circuit")
        breaker = CircuitBreaker(clock=clock)
        breaker.opened_at = clock()  # opened just as the assignment arrived
        await lifecycle(rt, client, assignment, breaker).run()
        record = await rt.tasks.get("circuit")
        assert record is not None and record.state is TaskState.QUEUED and record.error is None
        assert not emulator.scans
        slots, _ = await _slots(rt)
        assert "circuit" not in slots.tasks


# The dispatcher: held at the window, fair between clients -----------------------------------


@contextlib.asynccontextmanager
async def dispatching(rt: Runtime, fleet: dict[str, Any]) -> AsyncIterator[Dispatcher]:
    await sync_registry(rt.registry, rt.capacity, parse_fleet(fleet, source="test", env={}))

    async def heartbeat() -> None:
        while True:
            beat = Heartbeat(
                pool=POOL, instance=INSTANCE, agent_id="agent-a", at=utcnow(), reachable=True, authenticated=True,
                scan_api=True,
            )  # fmt: skip
            await rt.agents.put(KEY, encode(beat))
            await asyncio.sleep(2.0)

    dispatcher = Dispatcher(rt, rt.settings, lead=False)
    tasks = [asyncio.create_task(heartbeat()), asyncio.create_task(dispatcher.run())]
    try:
        yield dispatcher
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def submit(rt: Runtime, task_id: str, targets: list[str], client: str = "agent-a") -> None:
    record = record_for(task_id, targets, client)
    await rt.tasks.create(record)
    await enqueue(rt, record)


async def test_the_dispatcher_holds_a_request_at_the_window_and_starts_it_after(rt: Runtime, clock: FakeClock) -> None:
    clock.advance(11 * 60)  # 12:10, inside the blackout
    async with dispatching(rt, fleet_with_window()):
        await submit(rt, "held", IN_WINDOW)
        await submit(rt, "outside", ["10.8.0.1"])
        await until(lambda: _state_is(rt, "outside", TaskState.DISPATCHED), "the request outside the window to start")
        assert await state_of(rt, "held") is TaskState.QUEUED, "the dispatcher planned and held it"
        clock.advance(51 * 60)  # 13:01
        await until(lambda: _state_is(rt, "held", TaskState.DISPATCHED), "the held request to start after the window")


async def test_a_flood_from_one_client_does_not_delay_another_beyond_the_next_free_slot(
    rt: Runtime, clock: FakeClock
) -> None:
    async with dispatching(rt, fleet_with_window(limit=2)) as dispatcher:
        for i in range(20):
            await submit(rt, f"flood-{i:02}", ["10.8.0.1"], client="flooder")
        await until(lambda: _state_is(rt, "flood-01", TaskState.DISPATCHED), "the flood to fill the scanner")
        await submit(rt, "small", ["10.8.0.2"], client="other")
        await until(lambda: _holds(dispatcher, "small"), "the dispatcher to hold the other client's request")
        slots, _ = await _slots(rt)
        assert sorted(slots.tasks) == ["flood-00", "flood-01"]
        await capacity.release(rt.capacity, KEY, "flood-00")  # one scan ends: the next free slot
        await until(lambda: _state_is(rt, "small", TaskState.DISPATCHED), "the other client's scan to start")
        assert await state_of(rt, "flood-02") is TaskState.QUEUED


async def test_the_gateway_places_tasks_by_the_order_the_dispatcher_publishes(rt: Runtime, clock: FakeClock) -> None:
    queue = QueueView(rt)
    async with dispatching(rt, fleet_with_window(limit=2)):
        for i in range(10):
            await submit(rt, f"flood-{i:02}", ["10.8.0.1"], client="flooder")
        await until(lambda: _state_is(rt, "flood-01", TaskState.DISPATCHED), "the flood to fill the scanner")
        await submit(rt, "small", ["10.8.0.2"], client="other")

        async def first(task_id: str) -> dict[str, Any] | None:
            placement = await queue.placement(POOL, task_id)
            return placement if placement["queue_position"] == 1 else None

        placement = await until(lambda: first("small"), "the published order to put the other client first")
        assert placement is not None
        assert placement["queue_depth"] == 9, "listed by the dispatcher: the 8 left of the flood and this one"
        assert (await queue.placement(POOL, "flood-02"))["queue_position"] == 2
        assert (await queue.placement(POOL, "flood-09"))["queue_position"] == 9
        # Not seen by the dispatcher yet: placed by replaying its policy over the snapshot.
        newer = record_for("newer", ["10.8.0.3"], client="third")
        estimate = await queue.placement(POOL, "newer", record=newer, just_queued=True)
        assert (estimate["queue_position"], estimate["queue_depth"]) == (2, 10)
        newer.priority = "high"
        assert (await queue.placement(POOL, "newer", record=newer, just_queued=True))["queue_position"] == 1
        flood = record_for("flood-new", ["10.8.0.1"], client="flooder")
        assert (await queue.placement(POOL, "flood-new", record=flood, just_queued=True))["queue_position"] == 10


async def _state_is(rt: Runtime, task_id: str, state: TaskState) -> bool:
    return await state_of(rt, task_id) is state


async def _holds(dispatcher: Dispatcher, task_id: str) -> bool:
    """The request was fetched and accepted (a fetch returns its batch up to a second late)."""
    pool = dispatcher.dispatchers.get(POOL)
    return pool is not None and task_id in pool.waiting


async def _paused(rt: Runtime, task_id: str, paused: bool) -> TaskRecord | None:
    record = await rt.tasks.get(task_id)
    return record if record is not None and record.paused is paused else None


async def _slots(rt: Runtime) -> tuple[capacity.Slots, int]:
    entry = await rt.capacity.get(KEY)
    assert entry.value is not None
    return capacity.decode(entry.value), int(entry.revision or 0)
