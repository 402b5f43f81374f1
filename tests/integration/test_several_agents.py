"""Several agent processes serving one scanner: a restarted agent resumes at once only the
tasks it claimed itself. A task its peer claimed may be running on that peer right now: two
runs of one task could each create a Nessus scan and launch it."""

from __future__ import annotations

import asyncio

from scanfleet.agent.instance import InstanceAgent
from scanfleet.common import capacity, contract
from scanfleet.common.config import ScannerAuth, ScannerConfig, parse_fleet
from scanfleet.common.messages import Assignment, encode, utcnow
from scanfleet.common.registry import sync_registry
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskRecord, TaskState, request_of
from scanfleet.dispatcher.service import Dispatcher
from scanfleet.gateway.core import SubmitScan
from tests.helpers import add_task, agent_alive, make_caller, make_gateway, queue_at_once, watch_until

KEY = contract.instance_key("default", "scanner-1")
SCANNER = ScannerConfig(id="scanner-1", url="https://s1:8834", auth=ScannerAuth(access_key="a", secret_key="b"))


async def in_flight(rt: Runtime, task_id: str, state: TaskState, claimed_by: str | None) -> None:
    record = await add_task(rt, task_id, state)
    await rt.tasks.update(task_id, lambda r: setattr(r, "claimed_by", claimed_by))
    assert await capacity.reserve(rt.capacity, KEY, task_id)
    assignment = Assignment(
        task_id=task_id,
        trace_id=record.trace_id,
        pool="default",
        instance="scanner-1",
        request=request_of(record),
        assigned_at=utcnow(),
    )
    await rt.js.publish(contract.assignment_subject("default", "scanner-1", task_id), encode(assignment))


async def test_a_restarted_agent_resumes_its_own_claims_and_leaves_its_peers(runtime: Runtime) -> None:
    rt = runtime
    await capacity.ensure_limit(rt.capacity, KEY, 8)
    await in_flight(rt, "t-mine-running", TaskState.RUNNING, "agent-b")
    await in_flight(rt, "t-mine-exporting", TaskState.EXPORTING, "agent-b")
    await in_flight(rt, "t-peers", TaskState.RUNNING, "agent-a")
    await in_flight(rt, "t-unclaimed", TaskState.DISPATCHED, None)

    restarted = InstanceAgent(rt, "default", SCANNER, agent_id="agent-b")
    resumed: list[str] = []
    restarted._start = lambda assignment, msg: resumed.append(assignment.task_id)  # type: ignore[method-assign]
    await restarted.reconcile()

    assert sorted(resumed) == ["t-mine-exporting", "t-mine-running"]


async def test_a_dispatch_clears_the_claim_of_an_earlier_attempt(runtime: Runtime) -> None:
    """A claim names the agent of this dispatch: a retried task's earlier agent, restarting,
    must not take the new attempt for its own while another agent may be running it."""
    rt = runtime
    scanner = {"id": "scanner-1", "url": "https://s1:8834", "auth": {"access_key": "a", "secret_key": "b"}}
    fleet = parse_fleet({"pools": {"default": {"scanners": [scanner]}}}, source="t", env={})
    await sync_registry(rt.registry, rt.capacity, fleet)
    await agent_alive(rt, "default", "scanner-1")
    answer = await make_gateway(rt).submit(make_caller(), SubmitScan(targets="10.1.0.1", name="retried"), queue_at_once)
    task_id = answer["task_id"]
    await rt.tasks.update(task_id, lambda r: setattr(r, "claimed_by", "agent-of-an-earlier-attempt"))
    dispatcher = Dispatcher(rt, rt.settings, lead=False)
    running = asyncio.create_task(dispatcher.run())
    try:
        record = await watch_until(rt.tasks.kv, task_id, TaskRecord, lambda r: r.state is TaskState.DISPATCHED)
    finally:
        running.cancel()
        await asyncio.wait({running}, timeout=10)
    assert record.claimed_by is None
