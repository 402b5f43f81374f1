"""An automatic rollover end to end: a scheduled run whose client asked for rollovers times out on a
short running timeout, and scanfleet queues, once, a scan of exactly the hosts the emulator's truth
says it had not finished."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from scanfleet.cli.stack import Stack, StackOptions
from scanfleet.common import contract
from scanfleet.common.schedules import Claim
from scanfleet.common.tasks import TaskRecord
from tests.helpers import (
    emulator_truth,
    long_scan,
    mcp_client,
    running_stack,
    scanner_named,
    stack_js,
    tool_json,
    until,
    wait_terminal,
    watch_task,
)

pytestmark = pytest.mark.e2e
RUNNING_TIMEOUT = 5.0
TARGETS = [f"10.87.0.{i}" for i in range(1, 7)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    options = StackOptions(
        data_dir=tmp_path_factory.mktemp("rollover"),
        scan_duration=2.0,
        poll_interval=0.2,
        emulator_overrides={"seed": 5},
        extra_env={
            "SCANFLEET_RUNNING_TIMEOUT": f"{RUNNING_TIMEOUT:g}",
            "SCANFLEET_SCHEDULE_INTERVAL": "0.3",
            "SCANFLEET_PROGRESS_INTERVAL": "0.3",
        },
    )
    yield from running_stack(options)


async def tasks_rolled_from(stack: Stack, task_id: str) -> list[TaskRecord]:
    async with stack_js(stack) as js:
        kv = await js.key_value(contract.TASKS_BUCKET)
        found = []
        for key in await kv.keys():
            entry = await kv.get(key)
            record = msgspec.json.decode(entry.value or b"", type=TaskRecord)
            if record.rollover_of == task_id:
                found.append(record)
        return found


async def rollover_claim(stack: Stack, task_id: str) -> Claim:
    async with stack_js(stack) as js:
        entry = await (await js.key_value(contract.SCHEDULE_RUNS_BUCKET)).get(contract.rollover_claim_key(task_id))
        return msgspec.json.decode(entry.value or b"", type=Claim)


def truth(stack: Stack, record: TaskRecord) -> dict[str, Any]:
    assert record.instance is not None and record.nessus_scan_id is not None
    return emulator_truth(stack, scanner_named(stack, record.pool, record.instance), record.nessus_scan_id)


async def read(stack: Stack, task_id: str) -> TaskRecord:
    async with stack_js(stack) as js:
        entry = await (await js.key_value(contract.TASKS_BUCKET)).get(task_id)
        return msgspec.json.decode(entry.value or b"", type=TaskRecord)


async def test_a_timed_out_run_rolls_over_automatically_to_exactly_the_hosts_left(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        schedule = tool_json(
            await mcp.call_tool(
                "schedule_scan",
                {
                    "targets": ",".join(TARGETS),
                    "name": "nightly, rolls over",
                    "rrule": "FREQ=SECONDLY;INTERVAL=2",
                    "description": long_scan(6),  # hosts finish from 2/3 of the run on: the timeout comes mid-way
                    "auto_rollover": True,
                },
            )
        )

        async def first_run() -> str:
            listing = tool_json(await mcp.call_tool("list_schedules", {}))
            mine = next(s for s in listing["schedules"] if s["schedule_id"] == schedule["schedule_id"])
            return str(mine["last_task_id"] or "")

        first = await until(first_run, "the first occurrence", within=30, every=0.2)
        tool_json(await mcp.call_tool("delete_schedule", {"schedule_id": schedule["schedule_id"]}))

    assert (await wait_terminal(stack, first, within=60))[-1] == "timeout"
    original = await read(stack, first)
    assert original.auto_rollover and original.error_reason == "running_timeout"
    progress = truth(stack, original)["host_progress"]
    left = sorted(h for h in TARGETS if progress.get(h, 0) < 100)
    assert 0 < len(left) < len(TARGETS), progress
    assert sorted(original.hosts_left or []) == left

    (rolled,) = await until(lambda: tasks_rolled_from(stack, first), "the automatic rollover", within=30)
    assert sorted(rolled.targets) == left and rolled.submitted_by == original.submitted_by
    assert rolled.schedule_id == original.schedule_id and not rolled.auto_rollover
    await watch_task(stack, rolled.task_id, lambda r: r.nessus_scan_id is not None, within=30)
    scanned = truth(stack, await read(stack, rolled.task_id))
    assert sorted(scanned["host_progress"]) == left, "the rollover scans exactly the hosts left"

    await wait_terminal(stack, rolled.task_id, within=60)  # it times out too: one generation only
    assert [r.task_id for r in await tasks_rolled_from(stack, first)] == [rolled.task_id]
    assert await tasks_rolled_from(stack, rolled.task_id) == []
    claim = await rollover_claim(stack, first)
    assert (claim.outcome, claim.task_id) == ("fired", rolled.task_id)
    print(f"\nrollover: {len(TARGETS) - len(left)} hosts done before the timeout, {len(left)} rolled over: {left}")
