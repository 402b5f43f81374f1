"""Pool scheduling under crashes and races, judged by the emulator's own count of running scans."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import nats
import pytest

from scanfleet.cli.stack import EmulatedScanner, Stack, StackOptions
from scanfleet.common import capacity, contract
from tests.helpers import mcp_client, running_stack, tool_error, tool_json, wait_terminal

pytestmark = pytest.mark.e2e

FAST_FAILOVER = {"SCANFLEET_DISPATCHER_LEASE_TTL": "2", "SCANFLEET_DISPATCH_ACK_WAIT": "4"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    options = StackOptions(
        data_dir=tmp_path_factory.mktemp("dispatch"),
        scan_duration=1.0,
        poll_interval=0.2,
        extra_env=FAST_FAILOVER,
    )
    yield from running_stack(options)


def emulator_stats(stack: Stack, scanner: EmulatedScanner) -> dict[str, Any]:
    access, secret = stack.secrets[scanner]
    response = httpx.get(
        f"{stack.emulator_url(scanner)}/_emulator/stats",
        headers={"X-ApiKeys": f"accessKey={access}; secretKey={secret}"},
    )
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


@contextlib.asynccontextmanager
async def sampled_concurrency(stack: Stack) -> AsyncIterator[dict[EmulatedScanner, int]]:
    """Sample every emulator's running-scan count while the block runs; yields the peaks."""
    peaks = dict.fromkeys(stack.options.fleet, 0)
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            for scanner in stack.options.fleet:
                running = (await asyncio.to_thread(emulator_stats, stack, scanner))["running"]
                peaks[scanner] = max(peaks[scanner], running)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)

    sampler = asyncio.create_task(sample())
    try:
        yield peaks
    finally:
        stop.set()
        await sampler


async def submit(stack: Stack, count: int, prefix: str, **extra: str) -> list[str]:
    async with mcp_client(stack) as mcp:
        return [
            tool_json(
                await mcp.call_tool("run_untrusted_scan", {"targets": f"10.60.{i}.1", "name": f"{prefix}-{i}", **extra})
            )["task_id"]
            for i in range(count)
        ]


async def assert_invariants(stack: Stack, task_ids: list[str], peaks: dict[EmulatedScanner, int]) -> None:
    outcomes = await asyncio.gather(*(wait_terminal(stack, t, within=120) for t in task_ids))
    assert all(kinds[-1] == "completed" for kinds in outcomes), outcomes
    for kinds in outcomes:
        assert kinds.count("dispatched") == 1, kinds
    for scanner in stack.options.fleet:
        stats = emulator_stats(stack, scanner)
        assert peaks[scanner] <= scanner.max_concurrent_scans, (scanner, peaks)
        assert stats["max_running_seen"] <= scanner.max_concurrent_scans, (scanner, stats)
    nc = await nats.connect(stack.nats.url)
    try:
        slots = await capacity.read_all(await nc.jetstream().key_value(contract.CAPACITY_BUCKET))
    finally:
        await nc.close()
    leaked = {k: s.tasks for k, s in slots.items() if set(s.tasks) & set(task_ids)}
    assert not leaked, leaked


def created_and_launched(stack: Stack) -> tuple[int, int]:
    stats = [emulator_stats(stack, s) for s in stack.options.fleet]
    return sum(s["scans_created"] for s in stats), sum(s["launches"] for s in stats)


async def test_kill_dispatcher_at_random_moments(stack: Stack) -> None:
    created_before, launched_before = created_and_launched(stack)
    rng = random.Random(7)
    async with sampled_concurrency(stack) as peaks:
        task_ids = await submit(stack, 14, "crash", scanner_pool="default")
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.0, 1.5))  # a random moment is the point of this test
            stack.kill("dispatcher")
            stack.start_service("dispatcher")
        await assert_invariants(stack, task_ids, peaks)
    created, launched = created_and_launched(stack)
    assert (created - created_before, launched - launched_before) == (14, 14), "each task: one scan, one launch"


async def test_racing_dispatchers_never_overcommit(stack: Stack) -> None:
    """Three dispatchers without the lease race for the same slots; CAS alone keeps the limits."""
    racing = {"SCANFLEET_DISPATCHER_LEASE": "false"}
    stack.stop_process("dispatcher")
    for i in range(3):
        stack.start_service("dispatcher", name=f"racer-{i}", env=racing)
    created_before, launched_before = created_and_launched(stack)
    try:
        async with sampled_concurrency(stack) as peaks:
            task_ids = await submit(stack, 20, "race")
            await assert_invariants(stack, task_ids, peaks)
    finally:
        for i in range(3):
            stack.stop_process(f"racer-{i}")
        stack.start_service("dispatcher")
    created, launched = created_and_launched(stack)
    assert (created - created_before, launched - launched_before) == (20, 20)


async def test_standby_takes_over_from_a_dead_leader(stack: Stack) -> None:
    stack.start_service("dispatcher", name="standby")
    try:
        stack.kill("dispatcher")
        task_ids = await submit(stack, 4, "failover", scanner_pool="dmz")
        async with sampled_concurrency(stack) as peaks:
            await assert_invariants(stack, task_ids, peaks)
    finally:
        stack.stop_process("standby")
        stack.start_service("dispatcher")


async def test_targeted_requests_wait_for_their_scanner_only(stack: Stack) -> None:
    targeted = await submit(stack, 4, "pinned", scanner_instance="scanner-2")
    free = await submit(stack, 4, "free")
    outcomes = await asyncio.gather(*(wait_terminal(stack, t) for t in targeted + free))
    assert all(k[-1] == "completed" for k in outcomes)
    async with mcp_client(stack) as mcp:
        pinned = [tool_json(await mcp.call_tool("get_scan_status", {"task_id": t})) for t in targeted]
    assert {s["scanner_instance"] for s in pinned} == {"scanner-2"}


async def test_queue_and_pool_status_report_live_load(stack: Stack) -> None:
    """With the dmz pool (one slot) busy, later requests wait in order with an estimate."""
    task_ids = await submit(stack, 4, "queue", scanner_pool="dmz")
    async with mcp_client(stack) as mcp:
        statuses = [tool_json(await mcp.call_tool("get_scan_status", {"task_id": t})) for t in task_ids]
        queue = tool_json(await mcp.call_tool("get_queue_status", {"scanner_pool": "dmz"}))
        pools = tool_json(await mcp.call_tool("get_pool_status", {"scanner_pool": "dmz"}))
    queued = [s for s in statuses if s["status"] == "queued"]
    assert len(queued) >= 2, statuses  # one slot, scans of a second: most of the four must wait
    positions = [s["queue_position"] for s in queued]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert all(1 <= p <= s["queue_depth"] for p, s in zip(positions, queued, strict=True))
    waiting = [t["task_id"] for t in queue["pools"][0]["next_tasks"]]
    assert waiting == sorted(waiting) and set(waiting) <= set(task_ids)
    assert "credentials" not in str(queue) and "password" not in str(queue)
    [dmz] = pools["pools"]
    assert dmz["total_capacity"] == 1 and dmz["scanners"][0]["max_concurrent_scans"] == 1
    assert dmz["scanners"][0]["active_scans"] <= 1
    outcomes = await asyncio.gather(*(wait_terminal(stack, t) for t in task_ids))
    assert all(k[-1] == "completed" for k in outcomes)
    async with mcp_client(stack) as mcp:
        pools = tool_json(await mcp.call_tool("get_pool_status", {"scanner_pool": "dmz"}))
        later = tool_json(await mcp.call_tool("run_untrusted_scan", {"targets": "10.70.0.1", "name": "eta"}))
        unknown = await mcp.call_tool("get_pool_status", {"scanner_pool": "nope"})
    assert pools["pools"][0]["avg_scan_duration_s"] is not None and pools["pools"][0]["avg_scan_duration_s"] > 0
    assert later["estimated_wait_seconds"] is not None
    refusal = tool_error(unknown)
    assert refusal["error"] == "unknown_pool" and "dmz" in refusal["valid_pools"]
