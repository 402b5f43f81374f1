"""An agent whose Nessus restarts under it (the emulator's start-up phase over real HTTP, a real
nats-server): the scanner shows as starting, its failed calls do not open the circuit, no scan is
launched on it while it loads, and it is used again once it reports ready."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import msgspec
import pytest

from scanfleet.agent.instance import InstanceAgent
from scanfleet.common import capacity, contract
from scanfleet.common.config import ScannerAuth, ScannerConfig
from scanfleet.common.messages import Assignment, Heartbeat, ScanRequest, utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.emulator.app import create_app
from tests.helpers import ACCESS_KEY, API_KEYS, SECRET_KEY, long_scan, make_config, serving, task_events, watch_until

POOL, INSTANCE = "default", "scanner-1"
KEY = contract.instance_key(POOL, INSTANCE)
LOADING = 4.0


@dataclass
class Scanner:
    url: str
    agent: InstanceAgent
    beats: list[Heartbeat]

    async def restart_nessus(self, loading: float = LOADING) -> None:
        async with httpx.AsyncClient(base_url=self.url, headers=API_KEYS) as http:
            (await http.post("/_emulator/restart", json={"loading_seconds": loading})).raise_for_status()


async def record_beats(rt: Runtime, beats: list[Heartbeat]) -> None:
    watcher = await rt.agents.watch(KEY)
    try:
        while True:
            entry = await watcher.updates(timeout=60)  # type: ignore[no-untyped-call]
            if entry is not None and entry.value:
                beats.append(msgspec.json.decode(entry.value, type=Heartbeat))
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]


@pytest.fixture
async def scanner(runtime: Runtime) -> AsyncIterator[Scanner]:
    runtime.settings = msgspec.structs.replace(
        runtime.settings,
        poll_interval=0.2,
        progress_interval=0.0,
        retry_base=0.3,
        retry_cap=0.5,
        circuit_threshold=3,
        probe_interval=0.5,
        credential_keys=None,
    )
    await capacity.ensure_limit(runtime.capacity, KEY, 4)
    app = create_app(make_config(scan_duration=0.5, pending_duration=0.1, export_delay=0.1))
    async with serving(app) as url:
        config = ScannerConfig(id=INSTANCE, url=url, auth=ScannerAuth(access_key=ACCESS_KEY, secret_key=SECRET_KEY))
        agent = InstanceAgent(runtime, POOL, config, "agent-a")
        beats: list[Heartbeat] = []
        tasks = [asyncio.create_task(agent.run()), asyncio.create_task(record_beats(runtime, beats))]
        try:
            yield Scanner(url, agent, beats)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def beat(rt: Runtime, check: object, within: float = 15.0) -> Heartbeat:
    return await watch_until(rt.agents, KEY, Heartbeat, check, within)  # type: ignore[arg-type]


def ready(b: Heartbeat) -> bool:
    return b.authenticated and b.scan_api and not b.starting and b.circuit == "closed"


async def dispatched(rt: Runtime, agent: InstanceAgent, description: str = "") -> str:
    """A task dispatched to the scanner, handed to its agent as its consumer would."""
    task_id = f"t{utcnow():%H%M%S%f}"
    now = utcnow()
    record = TaskRecord(
        task_id=task_id,
        trace_id="0" * 32,
        pool=POOL,
        targets=["10.9.0.1"],
        name="startup",
        created_at=now,
        updated_at=now,
    )
    await rt.tasks.create(record)
    assert await capacity.reserve(rt.capacity, KEY, task_id)
    await rt.tasks.transition(task_id, TaskState.DISPATCHED, lambda r: setattr(r, "instance", INSTANCE))
    request = ScanRequest(
        task_id=task_id,
        trace_id=record.trace_id,
        pool=POOL,
        targets=record.targets,
        name=record.name,
        description=description,
        submitted_at=now,
    )
    agent._start(
        Assignment(task_id=task_id, trace_id="0" * 32, pool=POOL, instance=INSTANCE, request=request, assigned_at=now),
        None,
    )
    return task_id


async def test_a_restarting_nessus_is_starting_not_failing_and_is_used_again_once_ready(
    runtime: Runtime, scanner: Scanner
) -> None:
    rt = runtime
    await beat(rt, ready)
    await scanner.restart_nessus()
    during = await beat(rt, lambda b: b.starting)
    assert during.circuit == "closed" and during.startup_progress is not None
    assert during.error is not None and "loading its plugins" in during.error

    # A scan dispatched meanwhile is handed back to the queue, never launched on the loading scanner.
    handed = await dispatched(rt, scanner.agent)
    events = await task_events(rt.js, handed, {"queued"}, within=10)
    assert b"starting up" in (events[-1].data or b"")
    record = await rt.tasks.get(handed)
    assert record is not None and record.state is TaskState.QUEUED and record.nessus_scan_id is None
    assert not (await capacity.read_all(rt.capacity))[KEY].tasks

    after = await beat(rt, ready, within=LOADING + 15)
    assert after.startup_progress is None and after.error is None
    used = await dispatched(rt, scanner.agent)
    exported = await watch_until(rt.tasks.kv, used, TaskRecord, lambda r: r.export is not None, 20)
    assert exported.nessus_scan_id is not None
    assert all(b.circuit == "closed" for b in scanner.beats), [b.circuit for b in scanner.beats]


async def test_polls_of_a_running_scan_during_the_restart_do_not_open_the_circuit(
    runtime: Runtime, scanner: Scanner
) -> None:
    """Nessus aborts the scans under way when it restarts: the task fails for that reason, and the
    many failed polls while it loaded never opened the circuit (its threshold is 3 here)."""
    rt = runtime
    await beat(rt, ready)
    task_id = await dispatched(rt, scanner.agent, long_scan(60))
    await watch_until(rt.tasks.kv, task_id, TaskRecord, lambda r: r.state is TaskState.RUNNING, 10)
    await scanner.restart_nessus()
    await beat(rt, lambda b: b.starting)
    failed = await watch_until(rt.tasks.kv, task_id, TaskRecord, lambda r: r.state.terminal, LOADING + 20)
    assert (failed.state, failed.error_reason) == (TaskState.FAILED, "scan_aborted")
    await beat(rt, ready)
    assert all(b.circuit == "closed" for b in scanner.beats), [b.circuit for b in scanner.beats]
    assert any(b.starting for b in scanner.beats)
