"""Pool scheduling on the emulated fleet, one scenario at a time (each prints one JSON object).

    .venv/bin/python -m benchmarks.scheduling [--scenario throughput|fairness|priorities|windows|all]
        [--scans 2000] [--mean-duration 8] [--targeted 0.05] [--flood 1000] [--small 10]

throughput: makespan against the policy's own ideal and the lower bound, utilization, peak
concurrency per scanner against its limit, and dispatch latency (targets: makespan <= 1.02 x the
policy ideal, zero over-capacity, the dispatcher's own hand-over p99 <= 50 ms).
fairness: one client floods ``--flood`` scans, then three clients submit ``--small`` each; their
waits against the ideal fair-share schedule (target <= 1.1 x) and Jain's index of slot time while
all four are backlogged. priorities: high-priority scans submitted behind a full queue start at
the next free slot. windows: a recurring blackout on the scans' range; the emulators' own status
must show no scan running inside it, and paused scans must resume after it.

The throughput scenario:

20 scanners in 3 pools with capacities 1 to 5 run ``--scans`` scans whose durations vary
(a seeded log-normal, clipped to 0.25x..4x the mean), some targeted at one instance. The
whole stack runs as ``scanfleet up`` runs it; the emulator's own scan clock gives each
scan its duration. Prints one JSON object.

Definitions:
- bound (per pool) = max(total scan time / total capacity, longest scan);
- policy ideal (per pool) = the makespan the dispatcher's own policy (``plan``) gives when
  every hand-over is instant: the same queue, order rules and targeting, zero overhead (one
  client at one priority: first in, first out). makespan / policy ideal is the cost of the
  real system alone, policy ideal / bound that of the order rule (longest-first ideal shows
  what giving up FIFO would buy);
- makespan (per pool) = last completion - first dispatch in that pool (the whole batch is
  queued before the dispatcher starts);
- slot overhead = how long a slot is held beyond the scan's own duration (create, launch,
  polling granularity, export, validation);
- utilization (per pool) = total scan time / (capacity x makespan);
- dispatch latency = from a slot becoming free (its release stored in the capacity bucket)
  while a request that may use it waits, to the assignment published for that scanner. Both
  are timed as they reach the benchmark's one connection, so both are on one clock.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
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
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import sharing
from scanfleet.cli.stack import LOCAL_CLIENT, EmulatedScanner, Stack, StackOptions
from scanfleet.common import contract
from scanfleet.common.capacity import Slots
from scanfleet.common.clients import find_client, load_clients, save_clients
from scanfleet.common.messages import TaskEvent
from scanfleet.dispatcher.routing import Candidate, Waiting, plan

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


async def submit_all(stack: Stack, planned: list[Planned]) -> dict[str, Planned]:
    refusals: list[str] = []
    tasks: dict[str, Planned] = {}
    limit = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=stack.auth_headers, timeout=30) as http:

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


def ideal_makespan(planned: list[Planned], pool: str, *, longest_first: bool = False) -> float:
    """Makespan of ``plan`` over this pool's queue when every hand-over takes no time: in
    submission order (FIFO), or, for comparison only, longest scan first."""
    scanners = [s for s in FLEET if s.pool == pool]
    mine = [(i, p) for i, p in enumerate(planned) if p.pool == pool]
    if longest_first:
        mine.sort(key=lambda item: -item[1].duration)
    duration = {str(i): p.duration for i, p in mine}
    waiting = [Waiting(task_id=str(i), seq=rank, instance=p.instance) for rank, (i, p) in enumerate(mine)]
    active = {s.id: 0 for s in scanners}
    last = {s.id: 0.0 for s in scanners}
    running: list[tuple[float, str]] = []
    now = 0.0
    while waiting or running:
        fleet = [Candidate(s.id, s.max_concurrent_scans, active[s.id], last_assigned_at=last[s.id]) for s in scanners]
        decisions = plan(waiting, fleet)
        for order, decision in enumerate(decisions):
            active[decision.instance] += 1
            last[decision.instance] = now + order * 1e-9
            heapq.heappush(running, (now + duration[decision.task_id], decision.instance))
        assigned = {d.task_id for d in decisions}
        waiting = [w for w in waiting if w.task_id not in assigned]
        now, instance = heapq.heappop(running)
        active[instance] -= 1
        while running and running[0][0] == now:
            active[heapq.heappop(running)[1]] -= 1
    return now


@dataclass
class SlotTrace:
    """Slot releases and assignments as one core-NATS subscriber saw them, on one clock."""

    releases: list[tuple[float, str, str]]
    assignments: list[tuple[float, str, str]]


class SlotWatcher:
    def __init__(self) -> None:
        self.trace = SlotTrace([], [])
        self._held: dict[str, set[str]] = {}
        self._seen: set[str] = set()

    async def on_capacity(self, msg: Msg) -> None:
        at = time.perf_counter()
        key = msg.subject.removeprefix(f"$KV.{contract.CAPACITY_BUCKET}.")
        tasks = set(msgspec.json.decode(msg.data, type=Slots).tasks) if msg.data else set()
        for task_id in self._held.get(key, set()) - tasks:
            self.trace.releases.append((at, key, task_id))
        self._held[key] = tasks

    async def on_assignment(self, msg: Msg) -> None:
        at = time.perf_counter()
        _, _, pool, instance, task_id = msg.subject.split(".", 4)
        if task_id not in self._seen:  # a redelivered assignment fills no new slot
            self._seen.add(task_id)
            self.trace.assignments.append((at, f"{pool}.{instance}", task_id))


def dispatch_latencies(trace: SlotTrace, tasks: dict[str, Planned]) -> list[float]:
    """For each release while a request that could use it waited: the wait for the next
    assignment to that scanner."""
    assigned_at = {task_id: at for at, _, task_id in trace.assignments}
    timeline = sorted(
        [(at, 0, key, t) for at, key, t in trace.releases] + [(at, 1, key, t) for at, key, t in trace.assignments]
    )
    free_since: dict[str, list[float]] = defaultdict(list)
    latencies = []
    for at, kind, key, _ in timeline:
        pool, instance = key.split(".", 1)
        if kind == 1:
            if free_since[key]:
                latencies.append(at - free_since[key].pop(0))
            continue
        eligible_waiting = any(
            p.pool == pool and p.instance in (None, instance) and assigned_at.get(t, math.inf) > at
            for t, p in tasks.items()
        )
        if eligible_waiting:
            free_since[key].append(at)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def dispatcher_histogram(base: str) -> dict[str, Any]:
    """The dispatcher's own ``scanfleet_dispatch_latency_seconds``: cumulative share per bucket."""
    async with httpx.AsyncClient(base_url=base) as http:
        text = (await http.get("/metrics")).text
    buckets: dict[float, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        if family.name == "scanfleet_dispatch_latency_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets[float(sample.labels["le"])] += sample.value
    total = buckets.get(math.inf, 0.0)
    p99 = next((le for le, n in sorted(buckets.items()) if total and n / total >= 0.99), None)
    return {
        "assignments": int(total),
        "p99_le_ms": None if p99 is None else p99 * 1000,
        "share_within_ms": {f"{le * 1000:g}": round(n / total, 4) for le, n in sorted(buckets.items()) if total},
    }


async def run(scans: int, mean: float, targeted: float, seed: int) -> tuple[dict[str, Any], SlotTrace]:
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
            allow_batch(stack, scans)
            await wait_usable(stack)
            # The whole batch waits before dispatch starts, so the makespan measures scheduling,
            # not how fast one client can submit.
            await asyncio.to_thread(stack.stop_process, "dispatcher")
            started = time.perf_counter()
            tasks = await submit_all(stack, planned)
            submitted_s = time.perf_counter() - started
            watcher = SlotWatcher()
            nc = await nats.connect(stack.nats.url)
            try:
                # Slots from the stream, not core NATS: a core subscriber also sees the CAS
                # writes the server refused.
                await nc.jetstream().subscribe(
                    f"$KV.{contract.CAPACITY_BUCKET}.>",
                    cb=watcher.on_capacity,
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.NEW,
                )
                await nc.subscribe("scan.assign.>", cb=watcher.on_assignment)
                await nc.flush()
                await asyncio.to_thread(stack.start_service, "dispatcher")
                events = await collect_events(stack.nats.url, tasks)
            finally:
                await nc.close()
            own_view = await dispatcher_histogram(stack.service_url("dispatcher"))
            peaks = await asyncio.to_thread(emulator_peaks, stack)
        finally:
            await asyncio.to_thread(stack.stop)
    summary = summarize(planned, tasks, events, watcher.trace, peaks, submitted_s, mean)
    summary["dispatcher_own_latency"] = own_view
    summary["targets"] = {
        "makespan_over_policy_ideal_le_1_02": summary["makespan_over_policy_ideal_max"] <= 1.02,
        "zero_over_capacity": not summary["over_capacity_scanners"],
        "dispatcher_own_p99_le_50ms": own_view["p99_le_ms"] is not None and own_view["p99_le_ms"] <= 50,
    }
    return summary, watcher.trace


def allow_batch(stack: Stack, scans: int) -> None:
    """Let the local client queue the whole batch at once: this measures scheduling, not quotas.
    The gateway re-reads the clients file on its next request."""
    data = load_clients(stack.clients_file)
    scope = find_client(data, LOCAL_CLIENT).scope
    scope.max_active = max(scope.max_active, scans)
    scope.submissions_per_minute = max(scope.submissions_per_minute, scans)
    save_clients(stack.clients_file, data)


async def wait_usable(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=stack.auth_headers) as http:
        while True:
            listing = (await http.get("/v1/scanners")).json()
            if sum(s["usable"] for s in listing["scanners"]) == len(FLEET):
                return
            await asyncio.sleep(0.1)


def summarize(
    planned: list[Planned],
    tasks: dict[str, Planned],
    events: dict[str, dict[str, TaskEvent]],
    trace: SlotTrace,
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
        ideal = ideal_makespan(planned, pool)
        longest_first = ideal_makespan(planned, pool, longest_first=True)
        makespan = max(ends) - min(starts)
        pools[pool] = {
            "scans": len(mine),
            "capacity": capacity,
            "lower_bound_s": round(bound, 1),
            "policy_ideal_s": round(ideal, 1),
            "makespan_s": round(makespan, 1),
            "makespan_over_bound": round(makespan / bound, 3),
            "policy_ideal_over_bound": round(ideal / bound, 3),
            "longest_first_ideal_over_bound": round(longest_first / bound, 3),
            "makespan_over_policy_ideal": round(makespan / ideal, 3),
            "utilization": round(sum(durations) / (capacity * makespan), 3),
        }
    latencies = dispatch_latencies(trace, tasks)
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
        "policy_ideal_over_bound_max": max(p["policy_ideal_over_bound"] for p in pools.values()),
        "makespan_over_policy_ideal_max": max(p["makespan_over_policy_ideal"] for p in pools.values()),
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
    parser.add_argument(
        "--scenario", choices=["throughput", "fairness", "priorities", "windows", "all"], default="throughput"
    )
    parser.add_argument("--scans", type=int, default=2000)
    parser.add_argument("--mean-duration", type=float, default=8.0)
    parser.add_argument("--targeted", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flood", type=int, default=1000, help="fairness: the flooding client's scans")
    parser.add_argument("--small", type=int, default=10, help="fairness: each small client's scans")
    parser.add_argument("--backlog", type=int, default=200, help="priorities: normal scans queued first")
    parser.add_argument("--urgent", type=int, default=5, help="priorities: high-priority scans after them")
    parser.add_argument("--window-scans", type=int, default=12, help="windows: scans in the blackout's range")
    parser.add_argument("--window-mean", type=float, default=45.0, help="windows: their mean duration (s)")
    parser.add_argument("--trace-out", type=Path, help="throughput: write the slot releases and assignments seen")
    args = parser.parse_args()
    chosen = ["throughput", "fairness", "priorities", "windows"] if args.scenario == "all" else [args.scenario]
    for scenario in chosen:
        if scenario == "throughput":
            result, trace = asyncio.run(run(args.scans, args.mean_duration, args.targeted, args.seed))
            if args.trace_out is not None:
                args.trace_out.write_text(json.dumps(msgspec.to_builtins(trace)))
        elif scenario == "fairness":
            result = asyncio.run(sharing.fairness(args.flood, args.small, args.mean_duration, args.seed))
        elif scenario == "priorities":
            result = asyncio.run(sharing.priorities(args.backlog, args.urgent, args.mean_duration, args.seed))
        else:
            result = asyncio.run(sharing.windows(args.window_scans, args.window_mean, args.seed))
        print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
