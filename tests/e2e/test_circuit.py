"""A scanner whose calls keep failing opens its circuit: new scans go round it, the scan
already there survives, and one trial after the cooldown closes it again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import nats
import pytest
from mcp import Client

from scanfleet.cli.stack import Stack, StackOptions
from scanfleet.common import contract
from scanfleet.common.messages import Heartbeat, decode
from tests.helpers import (
    mcp_client,
    running_scan,
    running_stack,
    scanner_named,
    status_of,
    tool_json,
    until,
    wait_event,
    wait_terminal,
)

pytestmark = pytest.mark.e2e

COOLDOWN = 6.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    options = StackOptions(
        data_dir=tmp_path_factory.mktemp("circuit-stack"),
        scan_duration=1.0,
        poll_interval=0.2,
        extra_env={
            "SCANFLEET_CIRCUIT_COOLDOWN": str(COOLDOWN),
            "SCANFLEET_RETRY_BASE": "0.1",
            "SCANFLEET_RETRY_CAP": "0.5",
        },
    )
    yield from running_stack(options)


def faults(stack: Stack, instance: str, body: dict[str, Any]) -> None:
    scanner = scanner_named(stack, "default", instance)
    access, secret = stack.secrets[scanner]
    response = httpx.post(
        f"{stack.emulator_url(scanner)}/_emulator/faults",
        json=body,
        headers={"X-ApiKeys": f"accessKey={access}; secretKey={secret}"},
    )
    response.raise_for_status()


async def scanner_view(mcp: Client, instance: str) -> dict[str, Any]:
    listing = tool_json(await mcp.call_tool("list_scanners", {"scanner_pool": "default"}))
    view: dict[str, Any] = next(s for s in listing["scanners"] if s["instance_id"] == instance)
    return view


async def heartbeat(stack: Stack, instance: str) -> Heartbeat:
    nc = await nats.connect(stack.nats.url)
    try:
        kv = await nc.jetstream().key_value(contract.AGENTS_BUCKET)
        entry = await kv.get(contract.instance_key("default", instance))
        return decode(entry.value or b"", Heartbeat)
    finally:
        await nc.close()


async def test_open_circuit_routes_new_scans_around_and_closes_after_the_cooldown(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        assert (await scanner_view(mcp, "scanner-1"))["circuit"] == "closed"
        inflight = await running_scan(mcp, stack, "on the failing scanner", 6, scanner_instance="scanner-1")
        faults(stack, "scanner-1", {"endpoint_faults": [{"path": "*", "status": 503}]})

        async def opened() -> bool:
            return bool((await scanner_view(mcp, "scanner-1"))["circuit"] == "open")

        await until(opened, "the circuit of scanner-1 to open", every=0.2)
        view = await scanner_view(mcp, "scanner-1")
        assert view["usable"] is False and view["circuit_failures"] >= 5
        assert "circuit open" in view["problem"]

        # Without the circuit the second scan would go to scanner-1 (tie on load, assigned least recently).
        placed = []
        for n in range(2):
            task = tool_json(await mcp.call_tool("run_untrusted_scan", {"targets": f"10.80.0.{n + 1}", "name": "new"}))
            await wait_event(stack, task["task_id"], "dispatched")
            placed.append((await status_of(mcp, task["task_id"]))["scanner_instance"])
        assert placed == ["scanner-2", "scanner-2"]

        faults(stack, "scanner-1", {"reset": True})
        opened_at = (await heartbeat(stack, "scanner-1")).circuit_opened_at
        assert opened_at is not None
        # The running scan polls scanner-1 successfully again at once, yet only the trial may close it:
        # a non-event, so look once well after those polls and well before the cooldown ends.
        look_at = min(time.time() + 2.0, opened_at.timestamp() + COOLDOWN - 1.0)
        await asyncio.sleep(max(0.0, look_at - time.time()))
        assert (await scanner_view(mcp, "scanner-1"))["circuit"] == "open"

        async def closed() -> bool:
            return bool((await scanner_view(mcp, "scanner-1"))["circuit"] == "closed")

        await until(closed, "the trial after the cooldown to close the circuit", within=COOLDOWN + 15, every=0.2)
        assert datetime.now(UTC).timestamp() >= opened_at.timestamp() + COOLDOWN
        view = await scanner_view(mcp, "scanner-1")
        assert view["usable"] is True and view["circuit_failures"] == 0

        assert (await wait_terminal(stack, inflight["task_id"], within=60))[-1] == "completed"
        after = tool_json(
            await mcp.call_tool(
                "run_untrusted_scan", {"targets": "10.80.0.9", "name": "back", "scanner_instance": "scanner-1"}
            )
        )
        assert (await wait_terminal(stack, after["task_id"], within=30))[-1] == "completed"
