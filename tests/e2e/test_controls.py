"""Cancel, pause and resume over MCP in each state, against the whole stack.

After every cancel the task's slot is free again (KV ``scan_capacity``) and the Nessus scan
is stopped (the emulator's own stats); nonsensical requests are refused with the reason.
"""

from __future__ import annotations

from typing import Any

import pytest

from scanfleet.cli.stack import LOCAL_CLIENT, Stack
from scanfleet.common.tasks import TaskState
from tests.helpers import (
    emulator_scan,
    mcp_client,
    running_scan,
    slot_freed,
    slot_holders,
    status_of,
    tool_error,
    tool_json,
    until,
    wait_terminal,
    watch_task,
)

pytestmark = pytest.mark.e2e

STOPPED = {"stopping", "canceled"}


async def assert_stopped_and_freed(stack: Stack, status: dict[str, Any]) -> None:
    task_id, pool, instance = status["task_id"], status["scanner_pool"], status["scanner_instance"]

    await slot_freed(stack, pool, instance, task_id)
    assert emulator_scan(stack, pool, instance, task_id)["status"] in STOPPED


async def test_cancel_a_queued_then_a_running_scan_in_a_full_pool(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        blocker = await running_scan(mcp, stack, "fills dmz", 60, scanner_pool="dmz")
        waiting = tool_json(
            await mcp.call_tool("run_untrusted_scan", {"targets": "10.70.0.2", "name": "waits", "scanner_pool": "dmz"})
        )
        assert waiting["status"] == "queued" and waiting["queue_position"] == 1
        queue = tool_json(await mcp.call_tool("get_queue_status", {"scanner_pool": "dmz"}))
        assert [t["task_id"] for t in queue["pools"][0]["next_tasks"]] == [waiting["task_id"]]

        refused = tool_error(await mcp.call_tool("pause_scan", {"task_id": waiting["task_id"]}))
        assert refused["error"] == "cannot_pause" and "not started" in refused["message"]

        cancelled = tool_json(
            await mcp.call_tool("cancel_scan", {"task_id": waiting["task_id"], "reason": "wrong window"})
        )
        assert cancelled["status"] == "cancelled" and cancelled["error_message"] == "wrong window"
        queue = tool_json(await mcp.call_tool("get_queue_status", {"scanner_pool": "dmz"}))
        assert queue["pools"][0]["queue_depth"] == 0 and queue["pools"][0]["next_tasks"] == []
        assert waiting["task_id"] not in await slot_holders(stack, "dmz", "scanner-3")

        answer = tool_json(await mcp.call_tool("cancel_scan", {"task_id": blocker["task_id"]}))
        assert answer["status"] == "running" and answer["cancel_requested"] == f"cancelled by {LOCAL_CLIENT}"
        assert (await wait_terminal(stack, blocker["task_id"]))[-1] == "cancelled"
        await assert_stopped_and_freed(stack, blocker)
        final = await status_of(mcp, blocker["task_id"])
        assert final["status"] == "cancelled" and final["error_reason"] == "cancelled"
        assert final["submitted_by"] == final["cancelled_by"] == LOCAL_CLIENT


async def test_pause_then_resume_a_running_scan(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        task = await running_scan(mcp, stack, "pause me", 4)
        task_id, pool, instance = task["task_id"], task["scanner_pool"], task["scanner_instance"]
        refused = tool_error(await mcp.call_tool("resume_scan", {"task_id": task_id}))
        assert refused["error"] == "cannot_resume" and "not paused" in refused["message"]

        answer = tool_json(await mcp.call_tool("pause_scan", {"task_id": task_id}))
        assert answer["status"] == "running"

        await watch_task(stack, task_id, lambda r: r.state is TaskState.RUNNING and r.paused)
        assert emulator_scan(stack, pool, instance, task_id)["status"] == "paused"
        again = tool_json(await mcp.call_tool("pause_scan", {"task_id": task_id}))
        assert again["paused"] is True and "already paused" in again["message"]

        tool_json(await mcp.call_tool("resume_scan", {"task_id": task_id}))

        await watch_task(stack, task_id, lambda r: r.state is not TaskState.RUNNING or not r.paused)

        # A scan paused inside Nessus's short "pending" phase resumes into the rest of it; nothing announces the
        # emulator's status, so poll it (a scan left paused never gets there and the wait fails).
        async def active_again() -> bool:
            return emulator_scan(stack, pool, instance, task_id)["status"] in {"running", "completed"}

        await until(active_again, "the Nessus scan to run again after resume", within=10.0)
        kinds = await wait_terminal(stack, task_id)
        assert kinds[-1] == "completed" and "paused" in kinds and "resumed" in kinds
        assert kinds.index("paused") < kinds.index("resumed") < kinds.index("exporting")
        assert emulator_scan(stack, pool, instance, task_id)["launches"] == 1
        assert task_id not in await slot_holders(stack, pool, instance)

        for action in ("cancel_scan", "pause_scan", "resume_scan"):
            refused = tool_error(await mcp.call_tool(action, {"task_id": task_id}))
            assert refused["error"] == f"cannot_{action.removesuffix('_scan')}"
            assert "already ended (completed)" in refused["message"]
        missing = tool_error(await mcp.call_tool("cancel_scan", {"task_id": "no-such-task"}))
        assert missing["error"] == "task_not_found"


async def test_cancel_a_paused_scan(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        task = await running_scan(mcp, stack, "pause then cancel", 60)
        task_id = task["task_id"]
        tool_json(await mcp.call_tool("pause_scan", {"task_id": task_id}))

        await watch_task(stack, task_id, lambda r: r.state is TaskState.RUNNING and r.paused)
        tool_json(await mcp.call_tool("cancel_scan", {"task_id": task_id, "reason": "no longer needed"}))
        assert (await wait_terminal(stack, task_id))[-1] == "cancelled"
        await assert_stopped_and_freed(stack, task)
        final = await status_of(mcp, task_id)
        assert final["error_message"] == "cancelled: no longer needed"
        refused = tool_error(await mcp.call_tool("cancel_scan", {"task_id": task_id}))
        assert refused["error"] == "cannot_cancel" and "already ended (cancelled)" in refused["message"]
