"""Pool scheduling on the emulated fleet: makespan against its lower bound, utilization,
peak concurrency per scanner against its limit, and dispatch latency.

    .venv/bin/python -m benchmarks.scheduling [--scans 2000] [--mean-duration 8] [--targeted 0.05]

20 scanners in 3 pools with capacities 1 to 5 run ``--scans`` scans whose durations vary
(a seeded log-normal, clipped to 0.25x..4x the mean), some targeted at one instance. The
whole stack runs as ``scanfleet up`` runs it; the emulator's own scan clock gives each
scan its duration. Prints one JSON object.

Definitions:
- bound (per pool) = max(total scan time / total capacity, longest scan);
- makespan (per pool) = last completion - first dispatch in that pool (the whole batch is
  queued before the dispatcher starts);
- slot overhead = how long a slot is held beyond the scan's own duration (create, launch,
  polling granularity, export, validation);
- utilization (per pool) = total scan time / (capacity x makespan);
- dispatch latency = from a slot becoming free (the completed event of the scan that held
  it) while a request of that pool waits, to the dispatched event that fills it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats

from scanfleet.cli.stack import EmulatedScanner, Stack, StackOptions
from scanfleet.common.messages import TaskEvent

CAPACITIES = {
    "alpha": [1, 2, 3, 4, 5, 1, 2, 3],
    "beta": [5, 4, 3, 2, 1, 5, 4],
    "gamma": [2, 3, 4, 5, 1],
}
FLEET = tuple(
    EmulatedScanner(pool, f"{pool}-{i + 1}", cap) for pool, caps in CAPACITIES.items() for i, cap in enumerate(caps)
)


@dataclass
class Planned:
    pool: str
    duration: float
    instance: str | None


def plan_scans(count: int, mean: float, targeted: float, seed: int) -> list[Planned]:
    rng = random.Random(seed)
    pools = list(CAPACITIES)
    weights = [sum(CAPACITIES[p]) for p in pools]
    sigma = 0.6
    mu = math.log(mean) - sigma**2 / 2
    out = []
    for _ in range(count):
        pool = rng.choices(pools, weights)[0]
        duration = min(4 * mean, max(mean / 4, rng.lognormvariate(mu, sigma)))
        instance = None
        if rng.random() < targeted:
            instance = rng.choice([s.id for s in FLEET if s.pool == pool])
        out.append(Planned(pool, round(duration, 2), instance))
    return out


async def submit_all(base: str, planned: list[Planned]) -> dict[str, Planned]:
    refusals: list[str] = []
    tasks: dict[str, Planned] = {}
    limit = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def one(i: int, p: Planned) -> None:
            body: dict[str, Any] = {
                "targets": f"10.{i // 250}.{i % 250}.1",
                "name": f"bench-{i}",
                "description": f"emulator-duration={p.duration}",
                "scanner_pool": p.pool,
            }
            if p.instance:
                body["scanner_instance"] = p.instance
            for _ in range(10):
                async with limit:
                    response = await http.post("/v1/scans", json=body)
                if response.status_code != 503:  # "try again": what a well-behaved client does
                    break
                refusals.append(response.text)
                await asyncio.sleep(0.5)
            response.raise_for_status()
            tasks[response.json()["task_id"]] = p

        await asyncio.gather(*(one(i, p) for i, p in enumerate(planned)))
    if refusals:
        print(f"{len(refusals)} submissions were refused with 503 and retried: {refusals[0]}", file=sys.stderr)
    return tasks


async def collect_events(url: str, tasks: dict[str, Planned]) -> dict[str, dict[str, TaskEvent]]:
    """Read SCAN_EVENTS until every task has a terminal event."""
    nc = await nats.connect(url)
    events: dict[str, dict[str, TaskEvent]] = defaultdict(dict)
    done: set[str] = set()
    try:
        sub = await nc.jetstream().subscribe("scan.event.>", ordered_consumer=True)
        while len(done) < len(tasks):
            msg = await sub.next_msg(timeout=600)
            kind = msg.subject.rsplit(".", 1)[-1]
            if kind == "exported":
                continue
            event = msgspec.json.decode(msg.data, type=TaskEvent)
            if event.task_id not in tasks:
                continue
            events[event.task_id].setdefault(kind, event)
            if kind in ("completed", "failed", "cancelled", "timeout"):
                done.add(event.task_id)
    finally:
        await nc.close()
    return events


def emulator_peaks(stack: Stack) -> dict[str, dict[str, int]]:
    out = {}
    for scanner in stack.options.fleet:
        access, secret = stack.secrets[scanner]
        stats = httpx.get(
            f"{stack.emulator_url(scanner)}/_emulator/stats",
            headers={"X-ApiKeys": f"accessKey={access}; secretKey={secret}"},
        ).json()
        out[f"{scanner.pool}/{scanner.id}"] = {
            "max_running_seen": stats["max_running_seen"],
            "limit": scanner.max_concurrent_scans,
            "scans": stats["launches"],
        }
    return out


def ts(value: datetime) -> float:
    return value.timestamp()


def dispatch_latencies(events: dict[str, dict[str, TaskEvent]], tasks: dict[str, Planned]) -> list[float]:
    by_scanner: dict[tuple[str, str], list[tuple[float, str, str]]] = defaultdict(list)
    queued_at = {t: ts(e["queued"].at) for t, e in events.items() if "queued" in e}
    for task_id, kinds in events.items():
        pool = tasks[task_id].pool
        dispatched = kinds.get("dispatched")
        if dispatched is None or dispatched.instance is None:
            continue
        by_scanner[(pool, dispatched.instance)].append((ts(dispatched.at), "dispatched", task_id))
        for kind in ("completed", "failed"):
            if kind in kinds:
                by_scanner[(pool, dispatched.instance)].append((ts(kinds[kind].at), "freed", task_id))
    latencies = []
    for timeline in by_scanner.values():
        timeline.sort()
        last_free: float | None = None
        for at, what, task_id in timeline:
            if what == "freed":
                last_free = at
            elif last_free is not None and queued_at.get(task_id, at) <= last_free:
                latencies.append(at - last_free)
                last_free = None
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(scans: int, mean: float, targeted: float, seed: int) -> dict[str, Any]:
    planned = plan_scans(scans, mean, targeted, seed)
    with tempfile.TemporaryDirectory(prefix="scanfleet-sched-") as tmp:
        stack = Stack(
            StackOptions(
                data_dir=Path(tmp),
                fleet=FLEET,
                scan_duration=mean,
                poll_interval=0.2,
                log_level="WARNING",
                emulator_overrides={"pending_duration": 0.0, "export_delay": 0.0},
            )
        )
        await asyncio.to_thread(stack.start)
        try:
            await wait_usable(stack)
            # The whole batch waits before dispatch starts, so the makespan measures scheduling,
            # not how fast one client can submit.
            await asyncio.to_thread(stack.stop_process, "dispatcher")
            started = time.perf_counter()
            tasks = await submit_all(stack.gateway_url, planned)
            submitted_s = time.perf_counter() - started
            await asyncio.to_thread(stack.start_service, "dispatcher")
            events = await collect_events(stack.nats.url, tasks)
            peaks = await asyncio.to_thread(emulator_peaks, stack)
        finally:
            await asyncio.to_thread(stack.stop)
    return summarize(tasks, events, peaks, submitted_s, mean)


async def wait_usable(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url) as http:
        while True:
            listing = (await http.get("/v1/scanners")).json()
            if sum(s["usable"] for s in listing["scanners"]) == len(FLEET):
                return
            await asyncio.sleep(0.1)


def summarize(
    tasks: dict[str, Planned],
    events: dict[str, dict[str, TaskEvent]],
    peaks: dict[str, dict[str, int]],
    submitted_s: float,
    mean: float,
) -> dict[str, Any]:
    pools: dict[str, Any] = {}
    for pool, caps in CAPACITIES.items():
        mine = [t for t, p in tasks.items() if p.pool == pool]
        durations = [tasks[t].duration for t in mine]
        starts = [ts(events[t]["dispatched"].at) for t in mine if "dispatched" in events[t]]
        ends = [ts(events[t]["completed"].at) for t in mine if "completed" in events[t]]
        capacity = sum(caps)
        bound = max(sum(durations) / capacity, max(durations))
        makespan = max(ends) - min(starts)
        pools[pool] = {
            "scans": len(mine),
            "capacity": capacity,
            "lower_bound_s": round(bound, 1),
            "makespan_s": round(makespan, 1),
            "makespan_over_bound": round(makespan / bound, 3),
            "utilization": round(sum(durations) / (capacity * makespan), 3),
        }
    latencies = dispatch_latencies(events, tasks)
    overheads = [
        ts(kinds["completed"].at) - ts(kinds["dispatched"].at) - tasks[t].duration
        for t, kinds in events.items()
        if "completed" in kinds and "dispatched" in kinds
    ]
    over = {k: v for k, v in peaks.items() if v["max_running_seen"] > v["limit"]}
    stages: dict[str, list[float]] = defaultdict(list)
    for task_id, kinds in events.items():
        steps = [k for k in ("dispatched", "running", "exporting", "validating", "completed") if k in kinds]
        for a, b in itertools.pairwise(steps):
            gap = ts(kinds[b].at) - ts(kinds[a].at)
            stages[f"{a}->{b}"].append(gap - (tasks[task_id].duration if b == "exporting" else 0.0))
    outcomes: dict[str, int] = defaultdict(int)
    for kinds in events.values():
        outcomes[next(k for k in ("completed", "failed", "cancelled", "timeout") if k in kinds)] += 1
    return {
        "benchmark": "scheduling",
        "scans": len(tasks),
        "scanners": len(FLEET),
        "mean_scan_duration_s": mean,
        "targeted": sum(1 for p in tasks.values() if p.instance),
        "outcomes": dict(outcomes),
        "submission_s": round(submitted_s, 1),
        "pools": pools,
        "makespan_over_bound_max": max(p["makespan_over_bound"] for p in pools.values()),
        "mean_utilization": round(statistics.mean(p["utilization"] for p in pools.values()), 3),
        "over_capacity_scanners": over,
        "slot_overhead_beyond_scan_s": {
            "p50": round(percentile(overheads, 0.5), 3),
            "p90": round(percentile(overheads, 0.9), 3),
            "max": round(max(overheads), 3),
        },
        "peak_concurrency": peaks,
        "stage_p50_s": {k: round(percentile(v, 0.5), 3) for k, v in stages.items()},
        "dispatch_latency_ms": {
            "samples": len(latencies),
            "p50": round(1000 * percentile(latencies, 0.5), 1) if latencies else None,
            "p99": round(1000 * percentile(latencies, 0.99), 1) if latencies else None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=2000)
    parser.add_argument("--mean-duration", type=float, default=8.0)
    parser.add_argument("--targeted", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.scans, args.mean_duration, args.targeted, args.seed)), indent=2))


if __name__ == "__main__":
    main()
