"""An automatic rollover is claimed like a schedule occurrence: a janitor that crashed between its
claim and the queue leaves the claim and the task id it chose; another janitor takes the claim
over once it is stale and queues that same task, exactly once, however many janitors look."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from scanfleet.common import client_tasks, contract
from scanfleet.common.clients import ClientDirectory, Role
from scanfleet.common.config import parse_fleet
from scanfleet.common.messages import Priority, utcnow
from scanfleet.common.registry import sync_registry
from scanfleet.common.runtime import Runtime
from scanfleet.common.schedules import CLAIM_TIMEOUT, Claim, ScheduleStore
from scanfleet.common.scope import Scope
from scanfleet.common.tasks import TaskRecord, TaskState, new_task_id
from scanfleet.janitor.scheduler import ClaimHeld, Scheduler
from tests.helpers import add_client

OWNER = "nightly"
LEFT = ["10.0.0.3", "10.0.0.4"]


@pytest.fixture
async def directory(runtime: Runtime, tmp_path: Path) -> ClientDirectory:
    scanner = {"id": "scanner-1", "url": "https://s1:8834", "auth": {"access_key": "a", "secret_key": "b"}}
    fleet = parse_fleet({"pools": {"default": {"scanners": [scanner]}}}, source="t", env={})
    await sync_registry(runtime.registry, runtime.capacity, fleet)
    clients = tmp_path / "clients.yaml"
    add_client(clients, OWNER, Role.AGENT, Scope(targets=["10.0.0.0/24"]))
    return ClientDirectory(clients)


async def timed_out(rt: Runtime) -> TaskRecord:
    now = utcnow()
    record = TaskRecord(
        task_id=new_task_id(),
        trace_id=secrets.token_hex(16),
        state=TaskState.TIMEOUT,
        pool="default",
        targets=["10.0.0.1", "10.0.0.2", *LEFT],
        name="nightly",
        created_at=now,
        updated_at=now,
        submitted_by=OWNER,
        auto_rollover=True,
        hosts_left=LEFT,
    )
    await rt.tasks.create(record)
    return record


async def requests_for(rt: Runtime, task_id: str) -> int:
    subject = contract.request_subject("default", task_id)
    info = await rt.js.stream_info(contract.REQUESTS_STREAM, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def test_a_rollover_claim_left_by_a_crash_is_taken_over_and_queued_once(
    runtime: Runtime, directory: ClientDirectory
) -> None:
    original = await timed_out(runtime)
    key = contract.rollover_claim_key(original.task_id)
    store = ScheduleStore(runtime.schedules, runtime.schedule_runs)
    crashed_at = utcnow()
    # What a janitor killed after its claim and after creating the task, but before queueing it, leaves.
    chosen = new_task_id()
    left_behind = Claim(
        schedule_id="rollover", occurrence=crashed_at, task_id=chosen, claimed_by="crashed", claimed_at=crashed_at
    )
    assert await store.claim(key, left_behind) is None
    half_done = msgspec.structs.replace(original, task_id=chosen, state=TaskState.QUEUED, targets=LEFT)
    half_done.rollover_of, half_done.hosts_left, half_done.auto_rollover = original.task_id, None, False
    await runtime.tasks.create(half_done)

    first, second = (Scheduler(runtime, directory, holder=h) for h in ("janitor-1", "janitor-2"))
    with pytest.raises(ClaimHeld):
        await first.rollover(original, crashed_at + CLAIM_TIMEOUT / 2)  # the holder may still be at it
    assert await requests_for(runtime, chosen) == 0

    later = crashed_at + CLAIM_TIMEOUT + timedelta(seconds=1)
    assert await first.rollover(original, later) == chosen
    assert await second.rollover(original, later) is None
    assert await first.rollover(original, later + CLAIM_TIMEOUT * 2) is None

    assert await requests_for(runtime, chosen) == 1
    assert await client_tasks.submitted(runtime.client_tasks, OWNER) == [chosen]
    rolled = await runtime.tasks.get(chosen)
    assert rolled is not None and sorted(rolled.targets) == LEFT and rolled.rollover_of == original.task_id
    settled = await store.runs.get(key)
    claim = msgspec.json.decode(settled.value or b"", type=Claim)
    assert (claim.outcome, claim.task_id, claim.claimed_by) == ("fired", chosen, "janitor-1")


async def test_two_janitors_racing_for_a_fresh_rollover_queue_it_once(
    runtime: Runtime, directory: ClientDirectory
) -> None:
    original = await timed_out(runtime)
    first, second = (Scheduler(runtime, directory, holder=h) for h in ("janitor-1", "janitor-2"))
    now = utcnow()
    task_id = await first.rollover(original, now)
    assert task_id is not None
    assert await second.rollover(original, now) is None
    assert await second.rollover(original, now + CLAIM_TIMEOUT * 2) is None
    assert await requests_for(runtime, task_id) == 1
    assert await client_tasks.submitted(runtime.client_tasks, OWNER) == [task_id]


@pytest.mark.parametrize(
    ("asked", "allowed", "rolled_at"),
    [("high", "high", "high"), ("high", "normal", "normal"), ("low", "high", "low")],
)
async def test_a_rollover_keeps_its_priority_lowered_to_what_the_owner_may_use_now(
    runtime: Runtime, tmp_path: Path, asked: Priority, allowed: Priority, rolled_at: Priority
) -> None:
    scanner = {"id": "scanner-1", "url": "https://s1:8834", "auth": {"access_key": "a", "secret_key": "b"}}
    fleet = parse_fleet({"pools": {"default": {"scanners": [scanner]}}}, source="t", env={})
    await sync_registry(runtime.registry, runtime.capacity, fleet)
    clients = tmp_path / "clients.yaml"
    add_client(clients, OWNER, Role.AGENT, Scope(targets=["10.0.0.0/24"], max_priority=allowed, weight=3.0))
    original = await timed_out(runtime)
    await runtime.tasks.update(original.task_id, lambda r: setattr(r, "priority", asked))
    original.priority = asked

    task_id = await Scheduler(runtime, ClientDirectory(clients), holder="janitor-1").rollover(original, utcnow())

    assert task_id is not None
    rolled = await runtime.tasks.get(task_id)
    assert rolled is not None
    assert (rolled.priority, rolled.weight, rolled.rollover_of) == (rolled_at, 3.0, original.task_id)
