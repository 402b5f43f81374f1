"""Time from start to ready, and from submit to completed, on the embedded stack.

    .venv/bin/python -m benchmarks.startup [--scans 5] [--scan-duration 1.0]

Prints one JSON object. The stack is the one ``scanfleet up`` runs (real nats-server,
emulated fleet, five service processes); scans are submitted over MCP one after another.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import nats
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from scanfleet.cli.stack import Stack, StackOptions
from scanfleet.common import contract

TERMINAL = {"completed", "failed", "cancelled", "timeout"}


async def usable_scanners(client: Client) -> int:
    result = await client.call_tool("list_scanners", {})
    listing = json.loads(result.content[0].text)  # type: ignore[union-attr]
    return sum(bool(s["usable"]) for s in listing["scanners"])


async def one_scan(client: Client, stack: Stack, index: int) -> dict[str, float | str]:
    nc = await nats.connect(stack.nats.url)
    try:
        started = time.perf_counter()
        result = await client.call_tool("run_untrusted_scan", {"targets": f"10.99.{index}.1", "name": f"bench {index}"})
        submitted = time.perf_counter()
        task_id = json.loads(result.content[0].text)["task_id"]  # type: ignore[union-attr]
        sub = await nc.jetstream().subscribe(contract.task_events_filter(task_id), ordered_consumer=True)
        seen: dict[str, float] = {}
        while True:
            msg = await sub.next_msg(timeout=120)
            kind = msg.subject.rsplit(".", 1)[-1]
            seen.setdefault(kind, time.perf_counter())
            if kind in TERMINAL:
                break
        return {
            "outcome": kind,
            "submit_call_s": submitted - started,
            "submit_to_dispatched_s": seen.get("dispatched", float("nan")) - started,
            "submit_to_completed_s": seen[kind] - started,
        }
    finally:
        await nc.close()


async def run(scans: int, scan_duration: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scanfleet-bench-") as tmp:
        stack = Stack(StackOptions(data_dir=Path(tmp), scan_duration=scan_duration, poll_interval=0.2))
        t0 = time.perf_counter()
        await asyncio.to_thread(stack.start)
        ready = time.perf_counter() - t0
        try:
            async with (
                httpx2.AsyncClient(headers=stack.auth_headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
                Client(streamable_http_client(stack.mcp_url, http_client=http)) as client,
            ):
                while await usable_scanners(client) < len(stack.options.fleet):  # noqa: ASYNC110 (polls an API)
                    await asyncio.sleep(0.05)
                fleet_ready = time.perf_counter() - t0
                runs = [await one_scan(client, stack, i) for i in range(scans)]
        finally:
            await asyncio.to_thread(stack.stop)
    totals = [float(r["submit_to_completed_s"]) for r in runs]
    dispatch = [float(r["submit_to_dispatched_s"]) for r in runs]
    return {
        "benchmark": "startup_and_scan_latency",
        "start_to_gateway_ready_s": round(ready, 3),
        "start_to_all_scanners_usable_s": round(fleet_ready, 3),
        "emulated_scan_duration_s": scan_duration,
        "scans": scans,
        "outcomes": sorted({str(r["outcome"]) for r in runs}),
        "submit_to_completed_s": {
            "min": round(min(totals), 3),
            "median": round(statistics.median(totals), 3),
            "max": round(max(totals), 3),
        },
        "overhead_beyond_scan_s_median": round(statistics.median(totals) - scan_duration, 3),
        "submit_to_dispatched_ms_median": round(1000 * statistics.median(dispatch), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=5)
    parser.add_argument("--scan-duration", type=float, default=1.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.scans, args.scan_duration)), indent=2))


if __name__ == "__main__":
    main()
