"""The embedded stack exactly as ``scanfleet up`` runs it, on free ports and a temp folder."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import nats
import pytest
from mcp import Client
from mcp.types import CallToolResult

from scanfleet.cli.stack import EmulatedScanner, Stack, StackOptions
from scanfleet.common import contract


def running_stack(options: StackOptions) -> Iterator[Stack]:
    """Start the stack, hand it over, then stop it and insist every process exited cleanly
    and that nats-server refused none of them anything."""
    running = Stack(options)
    try:
        running.start()
    except Exception:
        print(running.log_tail())
        running.stop()
        raise
    try:
        yield running
    finally:
        codes = running.stop()
        print(running.log_tail(10))
        assert all(code == 0 for code in codes.values()), f"unclean shutdown: {codes}"
        # Every service ran as its own NATS user: not one step outside its permissions.
        refused = [line for line in running.nats.log_file.read_text().splitlines() if "Violation" in line]
        assert not refused, "NATS refused a service:\n" + "\n".join(refused[:20])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(
        StackOptions(data_dir=tmp_path_factory.mktemp("stack"), scan_duration=1.0, poll_interval=0.2)
    )


@contextlib.asynccontextmanager
async def mcp_client(stack: Stack) -> AsyncIterator[Client]:
    """Opened inside each test: the MCP client's anyio scopes must enter and exit in one task."""
    async with Client(stack.mcp_url) as client:
        yield client


def tool_json(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    text = result.content[0].text  # type: ignore[union-attr]
    return json.loads(text)  # type: ignore[no-any-return]


def tool_error(result: CallToolResult) -> str:
    assert result.is_error, result.content
    return result.content[0].text  # type: ignore[union-attr]


async def wait_terminal(stack: Stack, task_id: str, within: float = 60.0) -> list[str]:
    """Await the task's lifecycle events on SCAN_EVENTS until a terminal one arrives."""
    nc = await nats.connect(stack.nats.url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(contract.task_events_filter(task_id), ordered_consumer=True)
        kinds: list[str] = []
        while True:
            msg = await sub.next_msg(timeout=within)
            kinds.append(msg.subject.rsplit(".", 1)[-1])
            if kinds[-1] in ("completed", "failed", "cancelled", "timeout"):
                return kinds
    finally:
        await nc.close()


def emulator_truth(stack: Stack, scanner: EmulatedScanner, scan_id: int) -> dict[str, Any]:
    access, secret = stack.secrets[scanner]
    response = httpx.get(
        f"{stack.emulator_url(scanner)}/_emulator/scans/{scan_id}/truth",
        headers={"X-ApiKeys": f"accessKey={access}; secretKey={secret}"},
    )
    response.raise_for_status()
    truth: dict[str, Any] = response.json()
    return truth


def scanner_named(stack: Stack, pool: str, instance: str) -> EmulatedScanner:
    return next(s for s in stack.options.fleet if (s.pool, s.id) == (pool, instance))
