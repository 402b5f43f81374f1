"""Submission against real NATS with a crash injected after every step of the intake.

A gateway that dies anywhere between claiming the idempotency key and publishing the request
must leave nothing a retry (on another gateway) cannot finish: the retry completes the same
task, with exactly one request in SCAN_REQUESTS and one entry in the client's active tasks.
A new submission's queue position comes from the dispatch consumer's counts, not a listing.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import msgspec
import pytest

from scanfleet.common import client_tasks, contract
from scanfleet.common.config import parse_fleet
from scanfleet.common.messages import Heartbeat, encode, utcnow
from scanfleet.common.registry import sync_registry
from scanfleet.common.runtime import Runtime
from scanfleet.common.task_ops import enqueue
from scanfleet.common.tasks import TaskState
from scanfleet.gateway.core import Gateway, SubmitScan, idempotency_key_hash
from scanfleet.gateway.errors import GatewayError
from scanfleet.gateway.intake import STEPS, Crash, Step
from scanfleet.janitor.stale import REQUEST_GRACE, REQUEST_LOST, Sweeper
from tests.helpers import make_caller, make_gateway, queue_at_once

POOL, INSTANCE = "dmz", "scanner-3"
CALLER = make_caller()


@pytest.fixture
async def fleet(runtime: Runtime) -> Runtime:
    """One scanner whose agent is alive, and no dispatcher: every request stays queued."""
    scanner = {"id": INSTANCE, "url": "https://s3:8834", "auth": {"access_key": "a", "secret_key": "b"}}
    config = parse_fleet({"pools": {POOL: {"scanners": [{**scanner, "max_concurrent_scans": 1}]}}}, source="t", env={})
    await sync_registry(runtime.registry, runtime.capacity, config)
    beat = Heartbeat(
        pool=POOL, instance=INSTANCE, agent_id="a", at=utcnow(), reachable=True, authenticated=True, scan_api=True
    )
    await runtime.agents.put(contract.instance_key(POOL, INSTANCE), encode(beat))
    return runtime


def crashing_at(rt: Runtime, step: Step) -> Gateway:
    gateway = make_gateway(rt)

    def crash(at: Step) -> None:
        if at == step:
            raise Crash(at)

    gateway.intake.crash = crash
    return gateway


def scan(key: str | None) -> SubmitScan:
    return SubmitScan(targets="10.1.0.1", name="crash", scanner_pool=POOL, idempotency_key=key)


async def requests_of(rt: Runtime, task_id: str) -> int:
    info = await rt.js.stream_info(contract.REQUESTS_STREAM, subjects_filter=contract.request_subject(POOL, task_id))
    return sum((info.state.subjects or {}).values())


@pytest.mark.parametrize("step", STEPS)
async def test_a_retry_after_a_crash_at_any_step_completes_the_same_task_once(fleet: Runtime, step: Step) -> None:
    rt = fleet
    key = f"crash-{step}"
    with pytest.raises(Crash):
        await crashing_at(rt, step).submit(CALLER, scan(key), queue_at_once)
    claimed = await rt.idempotency.get(idempotency_key_hash(CALLER.id, key))
    assert claimed.value is not None

    other = make_gateway(rt)
    first = await other.submit(CALLER, scan(key), queue_at_once)
    again = await other.submit(CALLER, scan(key), queue_at_once)
    task_id = first["task_id"]
    assert again["task_id"] == task_id and again["idempotent"] is True
    assert task_id in claimed.value.decode()  # the task the crashed gateway started
    record = await rt.tasks.get(task_id)
    assert record is not None and record.state is TaskState.QUEUED
    assert await requests_of(rt, task_id) == 1
    assert (await client_tasks.active_tasks(rt.client_tasks, CALLER.id)).count(task_id) == 1
    assert task_id in await client_tasks.submitted(rt.client_tasks, CALLER.id)
    event = await rt.js.get_last_msg(contract.EVENTS_STREAM, contract.event_subject(task_id, contract.EventKind.QUEUED))
    assert event.data


async def test_a_crash_before_the_record_leaves_no_request_behind(fleet: Runtime) -> None:
    """Without a record no request may exist: the dispatcher would dead-letter it as unknown."""
    rt = fleet
    for step in ("claimed", "admitted", "audited"):
        with pytest.raises(Crash):
            await crashing_at(rt, step).submit(CALLER, scan(f"early-{step}"), queue_at_once)
    info = await rt.js.stream_info(contract.REQUESTS_STREAM)
    assert info.state.messages == 0


async def test_new_submissions_are_placed_without_listing_the_queue(fleet: Runtime) -> None:
    rt = fleet
    gateway = make_gateway(rt)

    async def no_listing(pool: str) -> list[str]:
        raise AssertionError("a submission listed the queue")

    listed = gateway.queue.waiting
    gateway.queue.waiting = no_listing  # type: ignore[method-assign]
    answers = [await gateway.submit(CALLER, scan(None), queue_at_once) for _ in range(5)]
    assert [a["queue_position"] for a in answers] == [1, 2, 3, 4, 5]
    assert [a["queue_depth"] for a in answers] == [1, 2, 3, 4, 5]
    gateway.queue.waiting = listed  # type: ignore[method-assign]
    third = await gateway.queue.placement(POOL, answers[2]["task_id"])
    assert third["queue_position"] == 3 and third["queue_depth"] == 5


async def test_a_repaired_request_is_not_published_twice(fleet: Runtime) -> None:
    """The repair adds no request while one waits, even one the duplicate window no longer covers."""
    rt = fleet
    answer = await make_gateway(rt).submit(CALLER, scan("twice"), queue_at_once)
    record = await rt.tasks.get(answer["task_id"])
    assert record is not None
    other_id = msgspec.structs.replace(record, retries=1)  # another message id: deduplication cannot hide it
    await enqueue(rt, other_id, if_absent=True)
    assert await requests_of(rt, record.task_id) == 1
    await rt.js.purge_stream(contract.REQUESTS_STREAM, subject=contract.request_subject(POOL, record.task_id))
    await enqueue(rt, other_id, if_absent=True)
    assert await requests_of(rt, record.task_id) == 1


async def test_a_record_left_without_its_request_and_no_retry_is_failed_by_the_janitor(fleet: Runtime) -> None:
    rt = fleet
    with pytest.raises(Crash):
        await crashing_at(rt, "announced").submit(CALLER, scan(None), queue_at_once)
    [orphan] = await client_tasks.active_tasks(rt.client_tasks, CALLER.id)
    queued = (await make_gateway(rt).submit(CALLER, scan(None), queue_at_once))["task_id"]
    past = utcnow() - timedelta(seconds=REQUEST_GRACE + 30)
    for task_id in (orphan, queued):
        await rt.tasks.update(task_id, lambda r: setattr(r, "created_at", past))

    report = await Sweeper(rt).sweep()

    assert report.ended == {orphan: REQUEST_LOST}
    ended = await rt.tasks.get(orphan)
    assert ended is not None and ended.state is TaskState.FAILED and ended.error_reason == REQUEST_LOST
    assert await client_tasks.active_tasks(rt.client_tasks, CALLER.id) == [queued]
    still = await rt.tasks.get(queued)
    assert still is not None and still.state is TaskState.QUEUED


@pytest.mark.parametrize("key", ["failover", None])
async def test_a_request_that_could_not_be_published_is_queued_by_the_keyed_retry(
    fleet: Runtime, key: str | None
) -> None:
    """NATS failing over between the record and the request (the publish finds no stream): a
    503 either way. With a key the task stays queued and the retry queues it, once; the
    failed task of old answered that retry as a repeat, and the scan was lost. Without a key
    nothing could finish the task, so it is failed."""
    rt = fleet
    info = await rt.js.stream_info(contract.REQUESTS_STREAM)
    await rt.js.update_stream(dataclasses.replace(info.config, subjects=["scanfleet.test.nowhere"]))
    with pytest.raises(GatewayError) as refused:
        await make_gateway(rt).submit(CALLER, scan(key), queue_at_once)
    assert (refused.value.status, refused.value.code) == (503, "enqueue_failed")
    await rt.js.update_stream(info.config)
    [task_id] = await client_tasks.submitted(rt.client_tasks, CALLER.id)
    record = await rt.tasks.get(task_id)
    assert record is not None
    if key is None:
        assert (record.state, record.error_reason) == (TaskState.FAILED, "enqueue_failed")
        return
    assert record.state is TaskState.QUEUED
    again = await make_gateway(rt).submit(CALLER, scan(key), queue_at_once)
    assert (again["task_id"], again["status"], again["idempotent"]) == (task_id, "queued", True)
    assert await requests_of(rt, task_id) == 1
