"""The stack keeps its promises when NATS itself goes away and comes back."""

from __future__ import annotations

import pytest

from scanfleet.cli.stack import Stack
from tests.helpers import mcp_client, tool_json, wait_terminal

pytestmark = pytest.mark.e2e


async def test_scans_survive_a_nats_restart(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        before = tool_json(await mcp.call_tool("run_untrusted_scan", {"targets": "10.50.0.1", "name": "before"}))
    stack.nats.restart(kill=True)
    assert (await wait_terminal(stack, before["task_id"], within=90))[-1] == "completed"
    async with mcp_client(stack) as mcp:
        after = tool_json(await mcp.call_tool("run_untrusted_scan", {"targets": "10.50.0.2", "name": "after"}))
        assert (await wait_terminal(stack, after["task_id"], within=90))[-1] == "completed"
        status = tool_json(await mcp.call_tool("get_scan_status", {"task_id": before["task_id"]}))
    assert status["results_summary"]["hosts_scanned"] == 1
    stack.check_alive()
