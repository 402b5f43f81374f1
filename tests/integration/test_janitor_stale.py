"""Stale work and slot recovery against a real nats-server."""

from __future__ import annotations

from datetime import timedelta

from scanfleet.common import admin_ops as admin
from scanfleet.common import capacity, contract, expiry
from scanfleet.common.messages import encode, utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskState
from scanfleet.janitor.stale import Sweeper
from tests.helpers import add_task, agent_alive


async def age(rt: Runtime, task_id: str, seconds: float) -> None:
    past = utcnow() - timedelta(seconds=seconds)

    def back(record):  # type: ignore[no-untyped-def]
        record.updated_at = record.dispatched_at = past
        if record.started_at is not None:
            record.started_at = past

    await rt.tasks.kv.put(task_id, encode(await _mutated(rt, task_id, back)))


async def _mutated(rt: Runtime, task_id: str, change):  # type: ignore[no-untyped-def]
    record = await rt.tasks.get(task_id)
    change(record)
    return record


async def test_stuck_tasks_are_ended_with_a_reason_and_dead_lettered(runtime: Runtime) -> None:
    rt = runtime
    stuck = await add_task(rt, "t-stuck", TaskState.RUNNING)
    fresh = await add_task(rt, "t-fresh", TaskState.RUNNING)
    queued = await add_task(rt, "t-queued-old", TaskState.QUEUED)
    paused = await add_task(rt, "t-paused", TaskState.RUNNING)
    await age(rt, stuck.task_id, 120)
    await age(rt, queued.task_id, 120)
    await age(rt, paused.task_id, 120)
    await rt.tasks.update(paused.task_id, lambda r: setattr(r, "paused", True))
    await capacity.ensure_limit(rt.capacity, "default.scanner-1", 2)
    assert await capacity.reserve(rt.capacity, "default.scanner-1", stuck.task_id)

    sweeper = Sweeper(rt, {TaskState.QUEUED: 60, TaskState.RUNNING: 60})
    report = await sweeper.sweep()

    assert report.ended == {stuck.task_id: "stale_running", queued.task_id: "stale_queued"}
    ended = await rt.tasks.get(stuck.task_id)
    assert ended is not None and ended.state is TaskState.TIMEOUT and ended.error_reason == "stale_running"
    assert "stuck in running" in (ended.error or "")
    assert (await rt.tasks.get(queued.task_id)).state is TaskState.FAILED  # type: ignore[union-attr]
    assert (await rt.tasks.get(fresh.task_id)).state is TaskState.RUNNING  # type: ignore[union-attr]
    assert (await rt.tasks.get(paused.task_id)).state is TaskState.RUNNING  # type: ignore[union-attr]
    assert stuck.task_id not in (await capacity.read_all(rt.capacity))["default.scanner-1"].tasks
    [letter] = await admin.list_letters(rt, task_id=stuck.task_id)
    assert (letter.stage, letter.reason) == ("janitor", "stale_running")
    assert letter.original["targets"] == stuck.targets and letter.trace_id == stuck.trace_id
    # A second sweep finds nothing more to do, but arms the ended tasks' expiry.
    again = await sweeper.sweep()
    assert again.ended == {} and again.released == {}
    state = await expiry.key_state(rt.js, stuck.task_id)
    assert state is not None and state.live


async def test_slots_of_a_dead_agent_come_back_only_once_accounted_for(runtime: Runtime) -> None:
    rt = runtime
    dead, live = "default.scanner-1", "default.scanner-2"
    for key in (dead, live):
        await capacity.ensure_limit(rt.capacity, key, 4)
    await agent_alive(rt, "default", "scanner-2")
    done = await add_task(rt, "t-done", TaskState.COMPLETED)
    running = await add_task(rt, "t-running-dead", TaskState.RUNNING)
    requeued = await add_task(rt, "t-requeued", TaskState.QUEUED)
    waiting = await add_task(rt, "t-reserved-live", TaskState.QUEUED)
    for task_id in (done.task_id, running.task_id, requeued.task_id, "t-vanished"):
        assert await capacity.reserve(rt.capacity, dead, task_id)
    assert await capacity.reserve(rt.capacity, live, waiting.task_id)
    assert await capacity.reserve(rt.capacity, live, done.task_id)

    report = await Sweeper(rt).sweep()

    slots = await capacity.read_all(rt.capacity)
    assert slots[dead].tasks == [running.task_id]  # still running there: kept until it ends
    assert slots[live].tasks == [waiting.task_id]  # a live agent's reservation is the dispatcher's
    assert sorted(report.released[dead]) == sorted([done.task_id, requeued.task_id, "t-vanished"])
    assert report.released[live] == [done.task_id]
    assert contract.instance_key("default", "scanner-1") == dead
