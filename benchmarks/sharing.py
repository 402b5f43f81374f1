"""Scenarios of a shared fleet for ``benchmarks.scheduling``: fairness, priorities, windows.

Each runs one pool of emulated scanners as ``scanfleet up`` runs it, with its own clients
added to the stack's clients file (each authenticates with its own API token), and returns
one JSON-ready dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import math
import random
import signal
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import yaml

from scanfleet.cli.stack import LOCAL_CLIENT, EmulatedScanner, Stack, StackOptions
from scanfleet.common.clients import Client, Role, find_client, issue_token, load_clients, save_clients
from scanfleet.common.config import WindowConfig
from scanfleet.common.messages import Priority, TaskEvent
from scanfleet.common.windows import ScanWindows
from scanfleet.dispatcher.routing import Candidate, Waiting, plan_shares

POOL = "shared"
SHARED = tuple(EmulatedScanner(POOL, f"s{i + 1}", 2) for i in range(4))
TERMINAL = ("completed", "failed", "cancelled", "timeout")


@dataclass
class Scan:
    client: str
    duration: float
    target: str
    priority: Priority = "normal"


def durations(count: int, mean: float, rng: random.Random) -> list[float]:
    sigma = 0.6
    mu = math.log(mean) - sigma**2 / 2
    return [round(min(4 * mean, max(mean / 4, rng.lognormvariate(mu, sigma))), 2) for _ in range(count)]


def add_client(stack: Stack, client_id: str, *, max_priority: Priority = "normal") -> dict[str, str]:
    """An agent client with the local client's targets, no quota in the way, and its own token."""
    data = load_clients(stack.clients_file)
    scope = msgspec.structs.replace(
        find_client(data, LOCAL_CLIENT).scope, max_active=100_000, submissions_per_minute=100_000
    )
    scope.max_priority = max_priority
    data.clients = [c for c in data.clients if c.id != client_id]
    data.clients.append(Client(id=client_id, role=Role.AGENT, scope=scope))
    token = issue_token(data, client_id)
    save_clients(stack.clients_file, data)
    return {"Authorization": f"Bearer {token}"}


async def submit(http: httpx.AsyncClient, headers: dict[str, str], scan: Scan, name: str) -> str:
    body = {
        "targets": scan.target,
        "name": name,
        "description": f"emulator-duration={scan.duration}",
        "scanner_pool": POOL,
        "priority": scan.priority,
    }
    for _ in range(20):
        response = await http.post("/v1/scans", json=body, headers=headers)
        if response.status_code != 503:
            break
        await asyncio.sleep(0.5)
    response.raise_for_status()
    return str(response.json()["task_id"])


async def submit_many(
    stack: Stack, headers: dict[str, str], scans: dict[str, Scan], names: list[str]
) -> dict[str, str]:
    """name -> task id, eight submissions at a time."""
    limit = asyncio.Semaphore(8)
    out: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:

        async def one(name: str) -> None:
            async with limit:
                out[name] = await submit(http, headers, scans[name], name)

        await asyncio.gather(*(one(n) for n in names))
    return out


class Events:
    """Every task event as it arrives (by task id and kind), on one subscription."""

    def __init__(self) -> None:
        self.by_task: dict[str, dict[str, TaskEvent]] = defaultdict(dict)
        self.changed = asyncio.Event()

    async def follow(self, url: str, stop: asyncio.Event) -> None:
        nc = await nats.connect(url)
        try:
            sub = await nc.jetstream().subscribe("scan.event.>", ordered_consumer=True)
            while not stop.is_set():
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except TimeoutError:
                    continue
                if msg.subject.endswith(".exported"):
                    continue
                event = msgspec.json.decode(msg.data, type=TaskEvent)
                kinds = self.by_task[event.task_id]
                kinds.setdefault(event.kind, event)
                if event.kind in ("paused", "resumed"):
                    kinds[f"{event.kind}@{event.at.isoformat()}"] = event
                self.changed.set()
        finally:
            await nc.close()

    async def until(self, done: Callable[[], bool], within: float) -> None:
        deadline = time.monotonic() + within
        while not done():
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the scenario did not finish in time")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(1.0, remaining))

    def ended(self, task_id: str) -> bool:
        return any(k in self.by_task.get(task_id, {}) for k in TERMINAL)

    def at(self, task_id: str, kind: str) -> float | None:
        event = self.by_task.get(task_id, {}).get(kind)
        return event.at.timestamp() if event is not None else None


async def with_stack(
    mean: float, body: Callable[[Stack, Events], Awaitable[dict[str, Any]]], **options: Any
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scanfleet-share-") as tmp:
        stack = Stack(
            StackOptions(
                data_dir=Path(tmp),
                fleet=SHARED,
                scan_duration=mean,
                poll_interval=0.2,
                log_level="WARNING",
                emulator_overrides={"pending_duration": 0.0, "export_delay": 0.0},
                **options,
            )
        )
        await asyncio.to_thread(stack.start)
        events, stop = Events(), asyncio.Event()
        follower = asyncio.create_task(events.follow(stack.nats.url, stop))
        try:
            return await body(stack, events)
        finally:
            stop.set()
            await follower
            await asyncio.to_thread(stack.stop)


def ideal_starts(
    arrivals: dict[str, float], scans: dict[str, Scan], fleet: tuple[EmulatedScanner, ...], aging: float = 600.0
) -> dict[str, float]:
    """When each task starts under the dispatcher's policy with instant hand-overs, given when it
    was queued: the ideal schedule of the policy itself (fair shares, priorities, FIFO)."""
    clock = 0.0
    pending = sorted(arrivals, key=lambda t: arrivals[t])
    seq = {t: i for i, t in enumerate(pending)}
    waiting: dict[str, Waiting] = {}
    active = {s.id: 0 for s in fleet}
    running: list[tuple[float, str, str]] = []
    held: dict[str, int] = defaultdict(int)
    served: dict[str, float] = {}
    starts: dict[str, float] = {}
    while pending or waiting or running:
        while pending and arrivals[pending[0]] <= clock:
            t = pending.pop(0)
            scan = scans[t]
            waiting[t] = Waiting(t, seq[t], client=scan.client, priority=scan.priority)
        snapshot = [Candidate(s.id, s.max_concurrent_scans, active[s.id]) for s in fleet]
        current = [
            Waiting(w.task_id, w.seq, client=w.client, priority=w.priority, submitted=arrivals[w.task_id])
            for w in waiting.values()
        ]
        decisions, served = plan_shares(current, snapshot, running=held, served=served, now=clock, aging=aging)
        for decision in decisions:
            w = waiting.pop(decision.task_id)
            starts[w.task_id] = clock
            active[decision.instance] += 1
            held[w.client] += 1
            heapq.heappush(running, (clock + scans[w.task_id].duration, decision.instance, w.task_id))
        served = {c: v for c, v in served.items() if any(w.client == c for w in waiting.values())}
        next_arrival = arrivals[pending[0]] if pending else math.inf
        next_end = running[0][0] if running else math.inf
        if next_arrival == math.inf and next_end == math.inf:
            break
        clock = min(next_arrival, next_end)
        while running and running[0][0] <= clock:
            _, instance, t = heapq.heappop(running)
            active[instance] -= 1
            held[scans[t].client] -= 1
    return starts


def slot_held(events: Events, task_id: str) -> float | None:
    """Dispatch to ``validating``: the validator's first step, just after the agent freed the slot."""
    began, freed = events.at(task_id, "dispatched"), events.at(task_id, "validating")
    return freed - began if began is not None and freed is not None else None


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values)) if any(values) else 1.0


# Fairness ---------------------------------------------------------------------------------


async def fairness(flood: int, small: int, mean: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    clients = ["flooder", "c1", "c2", "c3"]
    scans: dict[str, Scan] = {}
    for i, d in enumerate(durations(flood, mean, rng)):
        scans[f"flood-{i}"] = Scan("flooder", d, f"10.50.{i // 250}.{i % 250 + 1}")
    for c in clients[1:]:
        for i, d in enumerate(durations(small, mean, rng)):
            scans[f"{c}-{i}"] = Scan(c, d, f"10.51.{clients.index(c)}.{i + 1}")

    async def body(stack: Stack, events: Events) -> dict[str, Any]:
        headers = {c: add_client(stack, c) for c in clients}
        ids = await submit_many(stack, headers["flooder"], scans, [n for n in scans if n.startswith("flood")])
        flood_done_at = time.time()
        batches = await asyncio.gather(
            *(submit_many(stack, headers[c], scans, [n for n in scans if n.startswith(f"{c}-")]) for c in clients[1:])
        )
        for batch in batches:
            ids.update(batch)
        small_tasks = [ids[n] for n in scans if not n.startswith("flood")]
        await events.until(lambda: all(events.ended(t) for t in small_tasks), within=60 + 20 * small * mean)
        return analyse_fairness(events, scans, ids, clients, flood_done_at)

    return await with_stack(mean, body)


def analyse_fairness(
    events: Events, scans: dict[str, Scan], ids: dict[str, str], clients: list[str], flood_done_at: float
) -> dict[str, Any]:
    queued = {n: events.at(ids[n], "queued") for n in scans}
    known = {n: q for n, q in queued.items() if q is not None}
    t0 = min(known.values())
    arrivals = {n: q - t0 for n, q in known.items()}
    # Two ideals with instant hand-overs: with the scans' own durations, and with the time each
    # scan really held its slot (dispatch to validating, just after the slot went back), which
    # leaves the per-scan overhead of launch, polling and export to the throughput scenario.
    ideal = ideal_starts(arrivals, scans, SHARED)
    held = [h for n in scans if (h := slot_held(events, ids[n])) is not None]
    overhead = sorted(h - scans[n].duration for n in scans if (h := slot_held(events, ids[n])) is not None)
    extra = overhead[len(overhead) // 2] if overhead else 0.0
    occupied = {
        n: dataclasses.replace(scan, duration=slot_held(events, ids[n]) or scan.duration + extra)
        for n, scan in scans.items()
    }
    ideal_occupied = ideal_starts(arrivals, occupied, SHARED)
    per_client: dict[str, Any] = {}
    for c in clients[1:]:
        mine = [n for n in scans if scans[n].client == c]
        waits = [events.at(ids[n], "dispatched") - known[n] for n in mine]  # type: ignore[operator]
        ideal_waits = [ideal[n] + t0 - known[n] for n in mine]
        occupied_waits = [ideal_occupied[n] + t0 - known[n] for n in mine]
        per_client[c] = {
            "scans": len(mine),
            "wait_sum_s": round(sum(waits), 2),
            "ideal_wait_sum_s": round(sum(ideal_waits), 2),
            "wait_over_ideal": round(sum(waits) / sum(ideal_waits), 3) if sum(ideal_waits) else None,
            "occupancy_ideal_wait_sum_s": round(sum(occupied_waits), 2),
            "wait_over_occupancy_ideal": round(sum(waits) / sum(occupied_waits), 3) if sum(occupied_waits) else None,
            "first_wait_s": round(min(waits), 2),
            "last_start_s": round(max(waits), 2),
            "ideal_last_start_s": round(max(ideal_waits), 2),
            "occupancy_ideal_last_start_s": round(max(occupied_waits), 2),
        }
    # Slot time per client while all four had work waiting: from the last small submission to
    # the first moment one small client had nothing left waiting.
    small = [n for n in scans if scans[n].client != "flooder"]
    start = max(known[n] for n in small)
    end = min(max(events.at(ids[n], "dispatched") or 0 for n in scans if scans[n].client == c) for c in clients[1:])
    # Scans are not pre-empted: the flood keeps the slots it held at the small submissions until
    # those scans end. The steady window starts once the last of them has ended.
    steady = max(
        [start]
        + [
            events.at(ids[n], "completed") or math.inf
            for n in scans
            if scans[n].client == "flooder" and (events.at(ids[n], "dispatched") or math.inf) <= start
        ]
    )

    def slot_time(lo: float, hi: float) -> dict[str, float]:
        out = dict.fromkeys(clients, 0.0)
        for n, scan in scans.items():
            began = events.at(ids[n], "dispatched") if n in ids else None
            if began is None:
                continue
            finished = events.at(ids[n], "completed") or math.inf
            out[scan.client] += max(0.0, min(finished, hi) - max(began, lo))
        return out

    whole, settled = slot_time(start, end), slot_time(steady, end)
    ratios = [v["wait_over_ideal"] for v in per_client.values() if v["wait_over_ideal"] is not None]
    occupancy_ratios = [
        v["wait_over_occupancy_ideal"] for v in per_client.values() if v["wait_over_occupancy_ideal"] is not None
    ]
    small_waits = sum(v["wait_sum_s"] for v in per_client.values())
    return {
        "benchmark": "scheduling/fairness",
        "flood": sum(1 for s in scans.values() if s.client == "flooder"),
        "small_clients": {c: per_client[c] for c in clients[1:]},
        "flood_submission_s": round(flood_done_at - t0, 1),
        "all_backlogged_window_s": round(end - start, 2),
        "slot_time_in_window_s": {c: round(v, 2) for c, v in whole.items()},
        "jain_index": round(jain(list(whole.values())), 4) if end > start else None,
        "steady_window_s": round(end - steady, 2),
        "slot_time_in_steady_window_s": {c: round(v, 2) for c, v in settled.items()},
        "jain_index_steady": round(jain(list(settled.values())), 4) if end > steady else None,
        "slot_overhead_p50_s": round(extra, 3),
        "slots_measured": len(held),
        "wait_over_ideal_max": max(ratios) if ratios else None,
        "wait_over_occupancy_ideal_max": max(occupancy_ratios) if occupancy_ratios else None,
        "all_small_waits_over_ideal": round(small_waits / sum(v["ideal_wait_sum_s"] for v in per_client.values()), 3),
        "all_small_waits_over_occupancy_ideal": round(
            small_waits / sum(v["occupancy_ideal_wait_sum_s"] for v in per_client.values()), 3
        ),
        "targets": {
            "waits_within_1_1x_of_ideal": bool(ratios) and max(ratios) <= 1.1,
            "waits_within_1_1x_of_occupancy_ideal": bool(occupancy_ratios) and max(occupancy_ratios) <= 1.1,
        },
    }


# Priorities -------------------------------------------------------------------------------


async def priorities(backlog: int, urgent: int, mean: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    scans = {
        f"bulk-{i}": Scan("bulk", d, f"10.60.{i // 250}.{i % 250 + 1}")
        for i, d in enumerate(durations(backlog, mean, rng))
    }
    for i, d in enumerate(durations(urgent, mean, rng)):
        scans[f"urgent-{i}"] = Scan("urgent", d, f"10.61.0.{i + 1}", priority="high")

    async def body(stack: Stack, events: Events) -> dict[str, Any]:
        bulk = add_client(stack, "bulk")
        hurry = add_client(stack, "urgent", max_priority="high")
        ids = await submit_many(stack, bulk, scans, [n for n in scans if n.startswith("bulk")])
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
            for i in range(urgent):
                await asyncio.sleep(mean / 2)
                ids[f"urgent-{i}"] = await submit(http, hurry, scans[f"urgent-{i}"], f"urgent-{i}")
        wanted = [ids[f"urgent-{i}"] for i in range(urgent)]
        await events.until(lambda: all(events.at(t, "dispatched") for t in wanted), within=120 + 10 * mean)
        out: list[dict[str, Any]] = []
        waits: list[float] = []
        bulk_starts = sorted(
            at for n in scans if n.startswith("bulk") and (at := events.at(ids[n], "dispatched")) is not None
        )
        for i, task in enumerate(wanted):
            q, d = events.at(task, "queued"), events.at(task, "dispatched")
            assert q is not None and d is not None
            # Bulk scans started after the high-priority one was queued (a plan already under
            # way when it arrived gets 50 ms) but before it: each is a slot it was denied.
            overtaken = sum(1 for at in bulk_starts if q + 0.05 < at < d)
            waits.append(d - q)
            out.append({"task": f"urgent-{i}", "wait_s": round(d - q, 3), "bulk_started_before_it": overtaken})
        return {
            "benchmark": "scheduling/priorities",
            "backlog": backlog,
            "capacity": sum(s.max_concurrent_scans for s in SHARED),
            "mean_scan_duration_s": mean,
            "high_priority": out,
            "wait_p50_s": round(sorted(waits)[len(waits) // 2], 3),
            "targets": {"each_started_at_the_next_free_slot": all(o["bulk_started_before_it"] == 0 for o in out)},
        }

    return await with_stack(mean, body)


# Windows ----------------------------------------------------------------------------------

WINDOW = WindowConfig(
    name="every-other-minute",
    cron="*/2 * * * *",
    duration_minutes=1,
    timezone="UTC",
    targets=["10.70.0.0/16"],
    on_running="pause",
)


async def windows(count: int, mean: float, seed: int) -> dict[str, Any]:
    """Blackouts on even minutes (UTC) for 10.70.0.0/16; scans of ``mean`` seconds run across several."""
    rng = random.Random(seed)
    scans = {f"w-{i}": Scan("ops", d, f"10.70.0.{i + 1}") for i, d in enumerate(durations(count, mean, rng))}
    rules = ScanWindows((WINDOW.compile(None),))

    async def body(stack: Stack, events: Events) -> dict[str, Any]:
        config = yaml.safe_load(stack.scanners_file.read_text())
        config["windows"] = [msgspec.to_builtins(WINDOW)]
        stack.scanners_file.write_text(yaml.safe_dump(config, sort_keys=False))
        stack.procs["dispatcher"].send_signal(signal.SIGHUP)  # publishes the windows in the registry
        await asyncio.sleep(3.0)  # the reload and every agent's next registry read
        # Start just after a blackout begins, so the first plans meet it.
        now = datetime.now(UTC)
        wait = (rules.next_start(POOL, ["10.70.0.1"], now) or now) - now
        if rules.held(POOL, ["10.70.0.1"], now) is None and wait > timedelta(seconds=5):
            await asyncio.sleep(max(0.0, wait.total_seconds() - 50))
        ops = add_client(stack, "ops")
        ids = await submit_many(stack, ops, scans, list(scans))
        samples: list[tuple[float, int, int]] = []
        stop = asyncio.Event()

        async def sample() -> None:
            async with httpx.AsyncClient(timeout=5) as http:
                while not stop.is_set():
                    at, running, paused = time.time(), 0, 0
                    for scanner in SHARED:
                        access, secret = stack.secrets[scanner]
                        stats = (
                            await http.get(
                                f"{stack.emulator_url(scanner)}/_emulator/stats",
                                headers={"X-ApiKeys": f"accessKey={access}; secretKey={secret}"},
                            )
                        ).json()
                        running += sum(1 for s in stats["scans"] if s["status"] == "running")
                        paused += sum(1 for s in stats["scans"] if s["status"] == "paused")
                    samples.append((at, running, paused))
                    await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        try:
            await events.until(lambda: all(events.ended(ids[n]) for n in scans), within=600)
        finally:
            stop.set()
            await sampler
        return analyse_windows(events, scans, ids, samples, rules)

    return await with_stack(mean, body)


def analyse_windows(
    events: Events,
    scans: dict[str, Scan],
    ids: dict[str, str],
    samples: list[tuple[float, int, int]],
    rules: ScanWindows,
) -> dict[str, Any]:
    grace = 1.0  # the agents act on a blackout's start within one poll of the scanner

    def inside(at: float) -> bool:
        moment = datetime.fromtimestamp(at, UTC)
        return rules.held(POOL, ["10.70.0.1"], moment) is not None and (
            rules.held(POOL, ["10.70.0.1"], moment - timedelta(seconds=grace)) is not None
        )

    in_blackout = [s for s in samples if inside(s[0])]
    running_inside = [s for s in in_blackout if s[1] > 0]
    dispatched_inside = [n for n in scans if (at := events.at(ids[n], "dispatched")) is not None and inside(at)]
    paused = {n for n in scans if any(k.startswith("paused@") for k in events.by_task[ids[n]])}
    resumed = {n for n in scans if any(k.startswith("resumed@") for k in events.by_task[ids[n]])}
    outcomes: dict[str, int] = defaultdict(int)
    for n in scans:
        outcomes[next((k for k in TERMINAL if k in events.by_task[ids[n]]), "unfinished")] += 1
    return {
        "benchmark": "scheduling/windows",
        "window": msgspec.to_builtins(WINDOW),
        "scans": len(scans),
        "outcomes": dict(outcomes),
        "samples": len(samples),
        "samples_inside_blackout": len(in_blackout),
        "samples_with_a_scan_running_inside_blackout": len(running_inside),
        "max_paused_seen": max((s[2] for s in samples), default=0),
        "dispatched_inside_blackout": len(dispatched_inside),
        "scans_paused_by_window": len(paused),
        "paused_and_resumed": len(paused & resumed),
        "targets": {
            "zero_running_inside_blackout": not running_inside and not dispatched_inside,
            "paused_scans_resumed": paused <= resumed and outcomes.get("completed", 0) == len(scans),
        },
    }
