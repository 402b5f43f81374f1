"""Intake: durable submissions per second and submit latency as the queue grows.

    .venv/bin/python -m benchmarks.intake [--depths 0,10000,100000] [--submissions 2000]
        [--concurrency 64] [--gateways 1,2] [--topologies single,cluster] [--baseline DIR]

Prints one JSON object. For every topology (one embedded nats-server, or a three-node
cluster on loopback with every stream at three replicas), queue depth and number of
gateways it:

1. starts fresh servers and provisions them (one pool, one scanner, no dispatcher, so
   nothing leaves the queue);
2. fills the pool's queue to the depth by publishing requests straight to SCAN_REQUESTS
   (``publish_async``): the queue position reads only that stream and its consumer, so
   such requests weigh on a submission exactly as submitted ones do;
3. runs ``gateways`` processes, each with its own NATS connection and ``Gateway`` core,
   submitting ``submissions / gateways`` scans ``concurrency / gateways`` at a time, the way
   a REST or MCP call does after authentication: admission, idempotency claim (every
   submission has a key), active-limit claim, the audit record, task record, QUEUED event,
   request, queue position. HTTP itself is left out (``benchmarks.access`` times it).

Each submission comes from one of ``concurrency`` clients, so no client's active-task list
(one KV key, compare-and-set) is shared by concurrent submissions; the run measures
intake, not one client's CAS contention.

"durable" means the submission returned after JetStream acknowledged every write.
``nats_bytes_per_submission`` is what the gateways' connections sent plus received.

``--baseline DIR``: also run the submissions with the code of another checkout (its
``.venv``; e.g. ``git worktree add /tmp/baseline-13 <rev> && (cd /tmp/baseline-13 &&
scripts/bootstrap)``) against the same servers and queue, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POOL, INSTANCE = "default", "scanner-1"


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
    }


# The submitting side: runs in a child process, possibly with another checkout's code -----------


async def submit_worker(
    url: str, replicas: int, worker: int, count: int, concurrency: int, steps: bool = False
) -> dict[str, Any]:
    from scanfleet.common.clients import Role
    from scanfleet.common.config import Settings
    from scanfleet.common.runtime import close, open_runtime
    from scanfleet.common.scope import Scope
    from scanfleet.gateway.core import SubmitScan
    from scanfleet.gateway.guard import Guard
    from tests.helpers import make_caller, make_gateway

    settings = Settings(nats_url=url, **({"nats_replicas": replicas} if replicas > 1 else {}))  # type: ignore[arg-type]
    rt = await open_runtime(f"bench-{worker}", settings, topology=_topology())
    gateway = make_gateway(rt)
    await gateway.start()  # the fleet mirror, as the gateway service runs it
    guard = Guard(rt, None)  # type: ignore[arg-type]  # only its audit is used
    scope = Scope(targets=["10.0.0.0/8"], max_targets=65_536, max_active=1_000_000, submissions_per_minute=10**9)
    callers = [make_caller(Role.ADMIN, f"bench-{worker}-{i}", scope) for i in range(concurrency)]
    latencies: list[float] = []
    step_ms: dict[str, list[float]] = {}
    marks: list[tuple[str, float]] = []
    if steps:  # the intake's crash hook, used as a stopwatch after each step
        gateway.intake.crash = lambda step: marks.append((step, time.perf_counter()))
    queue = iter(range(count))
    stats_before = dict(rt.nc.stats)

    async def one_client(caller: Any) -> None:
        for n in queue:
            submit = SubmitScan(
                targets=f"10.{worker}.{n // 250}.{n % 250 + 1}",
                name=f"bench {worker}-{n}",
                scanner_pool=POOL,
                idempotency_key=f"bench-{worker}-{n}-{os.getpid()}",
            )
            marks.clear()
            started = time.perf_counter()
            await gateway.submit(caller, submit, guard.before_queue(caller, "submit_scan"))
            latencies.append(time.perf_counter() - started)
            if steps:
                points = [("checks and idempotency claim", started), *marks, ("queue position", time.perf_counter())]
                for (_, before), (name, after) in itertools.pairwise(points):
                    step_ms.setdefault(name, []).append(1000 * (after - before))

    started = time.perf_counter()
    await asyncio.gather(*(one_client(c) for c in callers))
    elapsed = time.perf_counter() - started
    moved = sum(rt.nc.stats[k] - stats_before[k] for k in ("in_bytes", "out_bytes"))
    await gateway.stop()
    await close(rt)
    names = {
        "claimed": "checks and idempotency claim",
        "admitted": "active-limit claim",
        "audited": "audit record",
        "recorded": "task record",
        "announced": "history entry and QUEUED event",
        "published": "request",
    }
    per_step = {names.get(k, k): round(statistics.fmean(v), 3) for k, v in step_ms.items()}
    return {"latencies": latencies, "elapsed": elapsed, "bytes": moved, "step_ms": per_step}


def _topology() -> Any:
    from scanfleet.common import contract

    return contract.Topology({POOL: [INSTANCE]})


async def prepare(url: str, replicas: int, depth: int) -> None:
    """Provision, register the scanner with a live heartbeat, and fill the queue to ``depth``."""
    from scanfleet.common import contract
    from scanfleet.common.config import Settings, parse_fleet
    from scanfleet.common.messages import Heartbeat, encode, utcnow
    from scanfleet.common.registry import sync_registry
    from scanfleet.common.runtime import close, open_runtime

    settings = Settings(nats_url=url, **({"nats_replicas": replicas} if replicas > 1 else {}))  # type: ignore[arg-type]
    rt = await open_runtime("bench-prepare", settings, topology=_topology())
    scanner = {"id": INSTANCE, "url": "https://192.0.2.10:8834", "auth": {"access_key": "a", "secret_key": "b"}}
    fleet = parse_fleet({"pools": {POOL: {"scanners": [{**scanner, "max_concurrent_scans": 4}]}}}, source="b", env={})
    await sync_registry(rt.registry, rt.capacity, fleet)
    beat = Heartbeat(pool=POOL, instance=INSTANCE, agent_id="b", at=utcnow(), reachable=True, authenticated=True,
                     scan_api=True)  # fmt: skip
    await rt.agents.put(contract.instance_key(POOL, INSTANCE), encode(beat))
    for start in range(0, depth, 5000):
        for i in range(start, min(depth, start + 5000)):
            task_id = f"20000101T000000{i:06d}-{i:032x}"
            await rt.js.publish_async(
                contract.request_subject(POOL, task_id), b"{}", headers={contract.HDR_MSG_ID: task_id}
            )
        await asyncio.wait_for(rt.js.publish_async_completed(), timeout=120)
    await close(rt)


def worker_main(argv: list[str]) -> int:
    url, replicas, worker, count, concurrency = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    steps = argv[5:6] == ["steps"]
    import logging

    logging.disable(logging.WARNING)
    result = asyncio.run(submit_worker(url, replicas, worker, count, concurrency, steps))
    print(json.dumps(result))
    return 0


# The driving side ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Servers:
    url: str
    replicas: int
    stop: Any


def start_servers(topology: str, data: Path) -> Servers:
    from scanfleet.common.embedded import NatsCluster, NatsServer

    if topology == "cluster":
        cluster = NatsCluster(data / "cluster")
        cluster.start()
        return Servers(cluster.nats_url, 3, lambda: cluster.stop(kill=True))
    server = NatsServer(data / "single")
    server.start()
    return Servers(server.url, 1, lambda: server.stop(kill=True))


def run_gateways(
    python: str, servers: Servers, gateways: int, submissions: int, concurrency: int, *extra: str
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the checkout's venv picks its code
    procs = [
        subprocess.Popen(
            [
                python,
                "-m",
                "benchmarks.intake",
                "--worker",
                servers.url,
                str(servers.replicas),
                str(g),
                str(submissions // gateways),
                str(max(1, concurrency // gateways)),
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for g in range(gateways)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"submitting worker failed:\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    latencies = [x for r in results for x in r["latencies"]]
    wall = max(r["elapsed"] for r in results)
    return {
        "submissions": len(latencies),
        "durable_submissions_per_s": round(len(latencies) / wall, 1),
        **summary(latencies),
        "nats_bytes_per_submission": round(sum(r["bytes"] for r in results) / len(latencies)),
        **({"mean_ms_per_step": results[0]["step_ms"]} if results[0].get("step_ms") else {}),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1:])
    p = argparse.ArgumentParser(prog="benchmarks.intake", description=__doc__)
    p.add_argument("--depths", default="0,10000,100000")
    p.add_argument("--submissions", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--gateways", default="1,2")
    p.add_argument("--topologies", default="single,cluster")
    p.add_argument("--steps", type=int, default=0, help="also time each intake step over N one-at-a-time submissions")
    p.add_argument("--baseline", type=Path, help="another checkout (with its .venv) to measure side by side")
    args = p.parse_args(argv)
    codes = {"this": sys.executable}
    if args.baseline:
        codes["baseline"] = str(args.baseline / ".venv" / "bin" / "python")
    rows = []
    for topology in args.topologies.split(","):
        for depth in (int(d) for d in args.depths.split(",")):
            for gateways in (int(g) for g in args.gateways.split(",")):
                for code, python in codes.items():
                    with tempfile.TemporaryDirectory(prefix="intake-") as tmp:
                        servers = start_servers(topology, Path(tmp))
                        try:
                            filled = time.perf_counter()
                            asyncio.run(prepare(servers.url, servers.replicas, depth))
                            fill_s = time.perf_counter() - filled
                            row = run_gateways(python, servers, gateways, args.submissions, args.concurrency)
                        finally:
                            servers.stop()
                    rows.append(
                        {
                            "code": code,
                            "topology": topology,
                            "queue_depth": depth,
                            "gateways": gateways,
                            "fill_seconds": round(fill_s, 1),
                            **row,
                        }
                    )
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    steps = None
    if args.steps:
        with tempfile.TemporaryDirectory(prefix="intake-") as tmp:
            servers = start_servers("single", Path(tmp))
            try:
                asyncio.run(prepare(servers.url, servers.replicas, 0))
                steps = run_gateways(sys.executable, servers, 1, args.steps, 1, "steps")
            finally:
                servers.stop()
    print(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count()},
                "one_at_a_time_steps": steps,
                "submissions_per_run": args.submissions,
                "concurrency": args.concurrency,
                "rows": rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
