"""The task state machine, and compare-and-set writes racing on a real JetStream KV."""

from __future__ import annotations

import asyncio
import itertools

import nats
import pytest
from nats.js.errors import KeyWrongLastSequenceError

from scanfleet.common.messages import utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import (
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    TaskNotFound,
    TaskRecord,
    TaskState,
    TaskStore,
)

LEGAL = {
    ("queued", "dispatched"),
    ("queued", "failed"),
    ("queued", "cancelled"),
    ("dispatched", "queued"),  # handed back by the agent before launch
    ("dispatched", "running"),
    ("dispatched", "failed"),
    ("dispatched", "cancelled"),
    ("dispatched", "timeout"),
    ("running", "exporting"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "timeout"),
    ("exporting", "validating"),
    ("exporting", "failed"),
    ("exporting", "cancelled"),
    ("exporting", "timeout"),
    ("validating", "completed"),
    ("validating", "failed"),
}


def record(task_id: str = "t1") -> TaskRecord:
    now = utcnow()
    return TaskRecord(task_id=task_id, trace_id="0" * 32, pool="default", targets=["10.0.0.1"], name="n",
                      created_at=now, updated_at=now)  # fmt: skip


def test_transition_table_matches_the_documented_lifecycle() -> None:
    table = {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == LEGAL
    assert {s.value for s in TERMINAL} == {"completed", "failed", "cancelled", "timeout"}
    assert all(not TRANSITIONS[s] for s in TERMINAL)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(TaskState, TaskState)))
async def test_every_transition_is_allowed_or_refused_as_documented(
    runtime: Runtime, current: TaskState, target: TaskState
) -> None:
    rec = record()
    rec.state = current
    await runtime.tasks.create(rec)
    if (current.value, target.value) in LEGAL:
        after = await runtime.tasks.transition("t1", target)
        assert after.state is target
        assert (await runtime.tasks.read("t1"))[0].state is target
    else:
        with pytest.raises(IllegalTransition):
            await runtime.tasks.transition("t1", target)
        assert (await runtime.tasks.read("t1"))[0].state is current


async def test_timestamps_follow_the_lifecycle(runtime: Runtime) -> None:
    await runtime.tasks.create(record())
    dispatched = await runtime.tasks.transition("t1", TaskState.DISPATCHED)
    assert dispatched.dispatched_at is not None and dispatched.started_at is None
    running = await runtime.tasks.transition("t1", TaskState.RUNNING)
    assert running.started_at is not None and running.finished_at is None
    done = await runtime.tasks.transition("t1", TaskState.CANCELLED)
    assert done.finished_at is not None and done.finished_at >= running.started_at


async def test_racing_writers_cannot_both_win(runtime: Runtime) -> None:
    """Twenty writers on four connections race to move the same running task.

    Every move is checked against the state its writer read, and written only if nobody
    wrote in between: so exactly one terminal state wins, and the only other success
    possible is the one legal step before it (running -> exporting).
    """
    rec = record()
    rec.state = TaskState.RUNNING
    await runtime.tasks.create(rec)
    targets = [TaskState.CANCELLED, TaskState.TIMEOUT, TaskState.FAILED, TaskState.EXPORTING] * 5
    url = runtime.settings.nats_url
    conns = [await nats.connect(url) for _ in range(4)]
    try:
        stores = [TaskStore(await c.jetstream().key_value("scan_tasks")) for c in conns]
        results = await asyncio.gather(
            *(stores[i % 4].transition("t1", t) for i, t in enumerate(targets)), return_exceptions=True
        )
    finally:
        for c in conns:
            await c.close()
    winners = [r for r in results if isinstance(r, TaskRecord)]
    assert all(isinstance(r, (TaskRecord, IllegalTransition)) for r in results)
    final = (await runtime.tasks.read("t1"))[0]
    terminal_wins = [w for w in winners if w.state.terminal]
    assert len(terminal_wins) <= 1
    assert len(winners) - len(terminal_wins) <= 1
    assert final.state is (terminal_wins[0].state if terminal_wins else TaskState.EXPORTING)
    history = await runtime.tasks.kv.history("t1")
    assert len(history) == 1 + len(winners)


async def test_stale_revision_is_refused(runtime: Runtime) -> None:
    await runtime.tasks.create(record())
    _, revision = await runtime.tasks.read("t1")
    await runtime.tasks.transition("t1", TaskState.DISPATCHED)
    with pytest.raises(KeyWrongLastSequenceError):
        await runtime.tasks.kv.update("t1", b"{}", last=revision)


async def test_create_refuses_a_second_record_with_the_same_id(runtime: Runtime) -> None:
    await runtime.tasks.create(record())
    with pytest.raises(KeyWrongLastSequenceError):
        await runtime.tasks.create(record())


async def test_missing_task(runtime: Runtime) -> None:
    with pytest.raises(TaskNotFound):
        await runtime.tasks.read("nope")
    assert await runtime.tasks.get("nope") is None
