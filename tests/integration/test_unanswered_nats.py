"""Background loops outlive a NATS request nobody answers (a cluster electing a leader): the
cluster chaos run found them ending whole services. Each is made to meet one here."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.errors import NoRespondersError

from scanfleet.agent.instance import InstanceAgent
from scanfleet.common import contract
from scanfleet.common.config import ScannerAuth, ScannerConfig
from scanfleet.common.messages import Heartbeat, TaskEvent, encode, utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskState
from scanfleet.dispatcher.stats import PoolStats, PoolStatsTracker
from tests.helpers import add_task, until, watch_until

SCANNER = ScannerConfig(id="scanner-1", url="https://s1:8834", auth=ScannerAuth(access_key="a", secret_key="b"))


def unanswered_once(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> asyncio.Event:
    """The first call of ``target.name`` gets no answer; the event says it happened."""
    real, refused = getattr(target, name), asyncio.Event()

    async def first_unanswered(*args: Any, **kwargs: Any) -> Any:
        if not refused.is_set():
            refused.set()
            raise NoRespondersError
        return await real(*args, **kwargs)

    monkeypatch.setattr(target, name, first_unanswered)
    return refused


async def completed(rt: Runtime, task_id: str) -> None:
    event = TaskEvent(
        task_id=task_id,
        trace_id="ab" * 16,
        kind=contract.EventKind.COMPLETED,
        state="completed",
        at=utcnow(),
        service="t",
    )
    await rt.js.publish(contract.event_subject(task_id, contract.EventKind.COMPLETED), encode(event))


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_pool_statistics_skip_a_sample_nats_did_not_answer(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime
    record = await add_task(rt, "t-measured", TaskState.COMPLETED)
    await rt.tasks.update(record.task_id, lambda r: setattr(r, "dispatched_at", r.created_at))
    consumers = (await rt.js.stream_info(contract.EVENTS_STREAM)).state.consumer_count
    tracker = asyncio.create_task(PoolStatsTracker(rt, active=lambda: True).run())
    try:

        async def following() -> bool:
            return (await rt.js.stream_info(contract.EVENTS_STREAM)).state.consumer_count > consumers

        await until(following, "the tracker to follow completions")
        refused = unanswered_once(monkeypatch, rt.tasks, "get")
        await completed(rt, "t-unanswered")
        await completed(rt, record.task_id)
        stats = await watch_until(rt.pool_stats, "default", PoolStats, lambda s: s.samples == 1)
        assert refused.is_set() and stats.avg_duration_s >= 0 and not tracker.done()
    finally:
        await stopped(tracker)


async def test_an_agent_keeps_beating_after_a_heartbeat_nats_did_not_answer(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime
    agent = InstanceAgent(rt, "default", SCANNER, agent_id="agent-a")
    beat = Heartbeat(
        pool="default", instance="scanner-1", agent_id="agent-a", at=utcnow(), reachable=True, authenticated=True,
        scan_api=True,
    )  # fmt: skip

    async def probed() -> Heartbeat:
        return beat

    agent.probe = probed  # type: ignore[method-assign]
    refused = unanswered_once(monkeypatch, rt.agents, "put")
    beating = asyncio.create_task(agent._heartbeat_loop())
    try:
        await asyncio.wait_for(refused.wait(), 10)
        agent.beat_now.set()  # the next beat at once rather than in five seconds
        written = await watch_until(rt.agents, agent.key, Heartbeat, lambda b: b.agent_id == "agent-a")
        assert written.reachable and not beating.done()
    finally:
        await stopped(beating)
