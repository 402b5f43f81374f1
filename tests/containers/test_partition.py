"""Partitions, not only kills: deploy/compose for real while a steady stream of scans runs,
one NATS node cut off the compose network (it keeps running) and healed, then a stream
leader's container killed outright and started again.

The client is an ordinary REST client: each scan carries an idempotency key, and on an
error or a timeout it sends the same request again with the same key, to the other gateway
(as behind a load balancer). Afterwards, from the system's own records and the emulator's:

- none lost: every submission was accepted and its task completed;
- none launched twice: each task has exactly one Nessus scan, launched once, in the
  emulator's own records, and no key produced two tasks;
- no scanner over its limit: the emulator's own peak of running scans;
- no slot leaked: every scanner's capacity is back to free.

What the clients saw (submit latency, errors by status, retries, how long until writes were
accepted again) goes to .scanfleet/partition-report.json and the output.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from docker.models.containers import Container

from tests.containers.compose import (
    Deployment,
    deployed,
    emulated_scanners,
    emulator_get,
    monitor,
    run_in,
    stream_leaders,
)
from tests.containers.conftest import ROOT, Images
from tests.helpers import until

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

SCAN_SECONDS = 2
STREAM = "SCAN_REQUESTS"
NODES = ("nats-1", "nats-2", "nats-3")
SCANS_AT_LEAST, SCANS_AT_MOST, SCANS_BEFORE_FAULTS, SCANS_AFTER_FAULTS = 40, 100, 5, 5
EVERY = 1.2  # seconds between two new submissions
CUT_FOR = 30.0  # how long the node stays cut off: the fault, not a wait for anything
ATTEMPT_TIMEOUT = 15.0
GIVE_UP_AFTER = 180.0
REPORT = ROOT / ".scanfleet" / "partition-report.json"
LOGS = ROOT / ".scanfleet" / "partition-failure.log"
CLIENT = ["loadtest", "--role", "operator", "--targets", "10.0.0.0/8"]
CLIENT_LIMITS = ["--max-active", "500", "--submissions-per-minute", "1000"]


@pytest.fixture
def deployment(engine_env: dict[str, str], images: Images, tmp_path: Path) -> Iterator[Deployment]:
    with deployed(engine_env, images, tmp_path, scan_seconds=SCAN_SECONDS, client=CLIENT + CLIENT_LIMITS) as deploy:
        yield deploy


# The client side ----------------------------------------------------------------------------


@dataclass
class Attempt:
    started: float
    ended: float
    gateway: int
    outcome: str  # the HTTP status, or the transport error's class name

    @property
    def accepted(self) -> bool:
        return self.outcome == "202"


@dataclass
class Submission:
    number: int
    key: str
    started: float
    attempts: list[Attempt] = field(default_factory=list)
    task_ids: set[str] = field(default_factory=set)
    statuses: list[str] = field(default_factory=list)
    refused: str | None = None  # a final answer no retry can change (4xx other than 429)

    @property
    def accepted_at(self) -> float | None:
        return next((a.ended for a in self.attempts if a.accepted), None)


class Clock:
    """Seconds since the stream began; the events of the faults on the same scale."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.marks: dict[str, float] = {}
        self.accepted = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, key: str, event: str) -> float:
        self.marks[key] = at = self.now()
        print(f"[{at:6.1f}s] {event}", flush=True)
        return at

    def between(self, start: str, end: str) -> tuple[float, float]:
        return self.marks[start], self.marks[end]


def body_of(n: int, key: str) -> dict[str, Any]:
    """Mostly the default pool (two scanners), one in six to dmz (one scanner, one slot)."""
    return {
        "targets": f"10.77.{n // 200}.{n % 200 + 1}",
        "name": f"partition {n}",
        "idempotency_key": key,
        "scanner_pool": "dmz" if n % 6 == 5 else "default",
    }


async def submit(gateways: list[httpx.AsyncClient], clock: Clock, n: int) -> Submission:
    """One scan as a careful client sends it: the same key on every retry, the other gateway
    after a failure, a growing pause (or Retry-After) between tries."""
    sub = Submission(n, f"partition-{n}-{secrets.token_hex(4)}", clock.now())
    pause, which = 0.5, n % 2
    while clock.now() - sub.started < GIVE_UP_AFTER:
        started = clock.now()
        retry_after: str | None = None
        try:
            answer = await gateways[which].post("/v1/scans", json=body_of(n, sub.key))
            outcome, retry_after = str(answer.status_code), answer.headers.get("retry-after")
        except httpx.HTTPError as exc:
            outcome, answer = type(exc).__name__, None
        sub.attempts.append(Attempt(started, clock.now(), which, outcome))
        if answer is not None and answer.status_code == 202:
            clock.accepted += 1
            sub.task_ids.add(answer.json()["task_id"])
            sub.statuses.append(answer.json()["status"])
            return sub
        if answer is not None and 400 <= answer.status_code < 500 and answer.status_code != 429:
            sub.refused = f"{answer.status_code} {answer.text[:300]}"
            return sub
        which = 1 - which
        await asyncio.sleep(float(retry_after) if retry_after else pause)
        pause = min(pause * 2, 4.0)
    return sub


async def stream_of_scans(
    gateways: list[httpx.AsyncClient], clock: Clock, faults_over: asyncio.Event
) -> list[Submission]:
    """A new submission every EVERY seconds, whatever the earlier ones are going through,
    until the faults are over (and a few more after), within SCANS_AT_LEAST..SCANS_AT_MOST."""
    running: list[asyncio.Task[Submission]] = []
    after_faults = 0
    while len(running) < SCANS_AT_MOST:
        if faults_over.is_set():
            after_faults += 1
            if len(running) >= SCANS_AT_LEAST and after_faults > SCANS_AFTER_FAULTS:
                break
        running.append(asyncio.create_task(submit(gateways, clock, len(running))))
        await asyncio.sleep(EVERY)  # the offered load's pace, not a wait for anything
    return list(await asyncio.gather(*running))


# The faults -----------------------------------------------------------------------------------


@dataclass
class Cluster:
    """The NATS nodes of one deployment, driven with the docker SDK off the event loop."""

    engine: docker.DockerClient
    deployment: Deployment

    def node(self, name: str) -> Container:
        return self.deployment.container(self.engine, name)

    async def ask(self, name: str, endpoint: str) -> dict[str, Any] | None:
        """None also while the container is not running (exec refused)."""
        try:
            return await asyncio.to_thread(monitor, self.node(name), endpoint)
        except docker.errors.APIError:
            return None

    async def leaders(self, among: tuple[str, ...] = NODES) -> dict[str, str]:
        """Stream and meta leaders once the asked nodes agree on every one of them (else empty)."""
        seen = [await self.ask(n, "jsz?streams=true") for n in among]
        views = [{**stream_leaders(s), "$meta": s.get("meta_cluster", {}).get("leader", "")} for s in seen if s]
        if len(views) < len(among) or any(v != views[0] for v in views) or not all(views[0].values()):
            return {}
        return views[0]

    async def leader_of(self, stream: str, among: tuple[str, ...] = NODES, not_: str = "") -> str:
        async def agreed() -> str:
            leader = (await self.leaders(among)).get(stream, "")
            return leader if leader != not_ else ""

        return await until(agreed, f"leader of {stream} agreed by {among}", within=90, every=0.5)

    async def healthy(self, name: str) -> None:
        """The node answers /healthz: in contact with the meta leader, every stream caught up."""
        await until(lambda: self.ask(name, "healthz"), f"{name} healthy", within=120, every=0.5)

    async def clients_of(self, name: str) -> list[str]:
        connz = await self.ask(name, "connz") or {}
        return sorted(c.get("name", "?") for c in connz.get("connections", []))


def others(name: str) -> tuple[str, ...]:
    return tuple(n for n in NODES if n != name)


async def partition(cluster: Cluster, clock: Clock, report: dict[str, Any]) -> None:
    """Cut the node leading SCAN_REQUESTS off the network, keep it cut, heal it as it was."""
    leaders = await until(cluster.leaders, "cluster leaders", within=60, every=0.5)
    cut = leaders[STREAM]
    node = cluster.node(cut)
    assert node.id is not None
    network = cluster.engine.networks.get(cluster.deployment.network)
    attached = node.attrs["NetworkSettings"]["Networks"][cluster.deployment.network]
    aliases = [a for a in attached.get("Aliases") or [] if a != node.id[:12]]
    address = attached["IPAddress"]
    report.update(node=cut, was=f"leader of {STREAM}", meta_leader=leaders["$meta"], aliases=aliases)
    report["clients_on_node"] = await cluster.clients_of(cut)
    at = clock.mark("cut", f"partition: {cut} cut off the network")
    await asyncio.to_thread(network.disconnect, node)
    successor = await cluster.leader_of(STREAM, others(cut), not_=cut)
    elected = clock.mark("cut_elected", f"{STREAM} led by {successor}")
    report["stream_leader_elected_after_s"] = round(elected - at, 1)
    await asyncio.to_thread(node.reload)
    assert node.status == "running", "a partitioned node keeps running"
    await asyncio.sleep(max(0.0, CUT_FOR - (clock.now() - at)))  # the fault's length
    healed = clock.mark("healed", f"partition healed: {cut} reconnected as {aliases} at {address}")
    await asyncio.to_thread(network.connect, node, aliases=aliases, ipv4_address=address)
    await cluster.healthy(cut)
    report["cut_for_s"] = round(healed - at, 1)
    report["healthy_after_heal_s"] = round(clock.mark("cut_healthy", f"{cut} healthy again") - healed, 1)
    gateway = cluster.deployment.container(cluster.engine, "gateway-1")
    code, resolved = await asyncio.to_thread(
        run_in, gateway, "python", "-c", f"print(__import__('socket').gethostbyname('{cut}'))"
    )
    assert (code, resolved.decode().strip()) == (0, address), "the healed node's name resolves as before"


async def kill(cluster: Cluster, clock: Clock, report: dict[str, Any]) -> None:
    """Kill the container leading SCAN_REQUESTS now (SIGKILL), start it again."""
    leader = await cluster.leader_of(STREAM)
    node = cluster.node(leader)
    report.update(node=leader, was=f"leader of {STREAM}")
    report["clients_on_node"] = await cluster.clients_of(leader)
    started_at = node.attrs["State"]["StartedAt"]
    at = clock.mark("killed", f"kill: {leader} killed")
    await asyncio.to_thread(node.kill)
    successor = await cluster.leader_of(STREAM, others(leader), not_=leader)
    elected = clock.mark("killed_elected", f"{STREAM} led by {successor}")
    report["stream_leader_elected_after_s"] = round(elected - at, 1)

    async def down_or_restarted() -> str:
        """The container's state once it is no longer the process that was killed."""
        await asyncio.to_thread(node.reload)
        same = node.status == "running" and node.attrs["State"]["StartedAt"] == started_at
        return "" if same else str(node.status)

    state = await until(down_or_restarted, f"{leader} to be down", within=30, every=0.5)
    report["restarted_by"] = "the engine (restart policy)" if state == "running" else "the test"
    if state != "running":
        await asyncio.to_thread(node.start)
    restarted = clock.mark("restarted", f"{leader} started again")
    await cluster.healthy(leader)
    report["healthy_after_start_s"] = round(clock.mark("killed_healthy", f"{leader} healthy again") - restarted, 1)


async def scans_running(gateway: httpx.AsyncClient) -> bool:
    scanners = (await gateway.get("/v1/scanners")).json()["scanners"]
    return any(s["active_scans"] > 0 for s in scanners)


async def faults(
    cluster: Cluster, gateway: httpx.AsyncClient, clock: Clock, over: asyncio.Event, report: dict[str, Any]
) -> None:
    try:

        async def under_way() -> bool:
            return clock.accepted >= SCANS_BEFORE_FAULTS and await scans_running(gateway)

        await until(under_way, "the stream of scans under way", within=120, every=0.5)
        clock.mark("running", f"{clock.accepted} scans accepted, scans running")
        await partition(cluster, clock, report.setdefault("partition", {}))
        await kill(cluster, clock, report.setdefault("kill", {}))
    finally:
        over.set()


# What the clients saw ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest rank, never an interpolation (below 100 samples p99 is the worst one)."""
    ranked = sorted(values)
    return round(ranked[max(0, min(len(ranked) - 1, round(q * len(ranked)) - 1))], 3)


def latency(subs: list[Submission]) -> dict[str, float | int]:
    """Submit latency as the client lives it: first try sent to the 202, retries included."""
    seconds = [s.accepted_at - s.started for s in subs if s.accepted_at is not None]
    if not seconds:
        return {"submissions": 0}
    return {
        "submissions": len(seconds),
        "p50_s": percentile(seconds, 0.50),
        "p99_s": percentile(seconds, 0.99),
        "max_s": round(max(seconds), 3),
    }


def seen_during(subs: list[Submission], fault_at: float, fault_end: float) -> dict[str, Any]:
    """The submissions started while the fault lasted, and when writes were accepted again."""
    mine = [s for s in subs if fault_at <= s.started < fault_end]
    attempts = [a for s in subs for a in s.attempts if a.started >= fault_at]
    first_ok = min((a.ended for a in attempts if a.accepted), default=None)
    failed = [a.ended for a in attempts if not a.accepted and a.started < fault_end]
    return {
        "submit_latency": latency(mine),
        "errors_by_status": dict(Counter(a.outcome for s in mine for a in s.attempts if not a.accepted)),
        "retries": sum(len(s.attempts) - 1 for s in mine),
        "first_write_accepted_after_s": round(first_ok - fault_at, 1) if first_ok is not None else None,
        "last_refused_write_after_s": round(max(failed) - fault_at, 1) if failed else 0.0,
    }


def client_report(subs: list[Submission], phases: dict[str, tuple[float, float]]) -> dict[str, Any]:
    accepted = sorted(a for s in subs if (a := s.accepted_at) is not None)
    return {
        "submissions": len(subs),
        "submit_latency": latency(subs),
        "errors_by_status": dict(Counter(a.outcome for s in subs for a in s.attempts if not a.accepted)),
        "retries": sum(len(s.attempts) - 1 for s in subs),
        "submissions_retried": sum(1 for s in subs if len(s.attempts) > 1),
        "longest_gap_between_accepted_writes_s": round(max((b - a for a, b in pairwise(accepted)), default=0.0), 1),
        **{phase: seen_during(subs, *between) for phase, between in phases.items()},
    }


# The invariants --------------------------------------------------------------------------------


class NeverEnded(AssertionError):
    """Tasks that never reached a terminal state; their last status says where they stopped."""

    def __init__(self, last: dict[str, Any], total: int) -> None:
        self.task_ids = list(last)
        super().__init__(f"{len(last)} of {total} tasks never ended: {json.dumps(last, indent=1)}")


async def all_ended(gateways: list[httpx.AsyncClient], task_ids: list[str], within: float) -> dict[str, str]:
    """Every task's final state (terminal ones are final; a status read may fail and is asked again)."""
    ended: dict[str, str] = {}
    last: dict[str, Any] = {}

    async def check() -> dict[str, str]:
        for n, task_id in enumerate(t for t in task_ids if t not in ended):
            try:
                answer = await gateways[n % 2].get(f"/v1/scans/{task_id}")
            except httpx.HTTPError:
                continue
            last[task_id] = answer.json()
            if answer.status_code == 200 and last[task_id]["status"] in ("completed", "failed", "cancelled"):
                ended[task_id] = last[task_id]["status"]
        return ended if len(ended) == len(task_ids) else {}

    try:
        return await until(check, "every task ended", within=within, every=1.0)
    except AssertionError:
        raise NeverEnded({t: last.get(t) for t in task_ids if t not in ended}, len(task_ids)) from None


async def slots_free(gateway: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every scanner (once none holds a slot: its capacity back to its limit), else none."""
    scanners: list[dict[str, Any]] = (await gateway.get("/v1/scanners")).json()["scanners"]
    free = all(s["active_scans"] == 0 and s["available_capacity"] == s["max_concurrent_scans"] for s in scanners)
    return scanners if free else []


def emulator_truth(engine: docker.DockerClient, deployment: Deployment) -> dict[str, dict[str, Any]]:
    emulator = deployment.container(engine, "emulator")
    return {f"{s.pool}/{s.instance}": emulator_get(emulator, s, "/_emulator/stats") for s in emulated_scanners()}


async def test_a_partitioned_and_a_killed_nats_node_lose_nothing_and_launch_nothing_twice(
    engine: docker.DockerClient, deployment: Deployment
) -> None:
    began = time.monotonic()
    report: dict[str, Any] = {"scan_seconds": SCAN_SECONDS, "faults": {}}
    headers = {"Authorization": f"Bearer {deployment.token}"}
    clock = Clock()
    try:
        async with (
            httpx.AsyncClient(base_url=deployment.gateways[0], headers=headers, timeout=ATTEMPT_TIMEOUT) as one,
            httpx.AsyncClient(base_url=deployment.gateways[1], headers=headers, timeout=ATTEMPT_TIMEOUT) as two,
        ):
            gateways = [one, two]
            over = asyncio.Event()
            subs, _ = await asyncio.gather(
                stream_of_scans(gateways, clock, over),
                faults(Cluster(engine, deployment), one, clock, over, report["faults"]),
            )
            submitted = clock.mark("submitted", f"{len(subs)} submissions done")
            phases = {
                "during_partition": clock.between("cut", "cut_healthy"),
                "during_kill": clock.between("killed", "killed_healthy"),
            }
            report["clients"] = client_report(subs, phases)
            report["timeline_s"] = {k: round(v, 1) for k, v in clock.marks.items()}
            print(json.dumps(report, indent=2))

            refused = [f"#{s.number}: {s.refused}" for s in subs if s.refused]
            assert not refused, f"submissions refused for good: {refused}"
            unaccepted = [s.number for s in subs if s.accepted_at is None]
            assert not unaccepted, f"submissions never accepted: {unaccepted}"
            doubled = {s.key: s.task_ids for s in subs if len(s.task_ids) != 1}
            assert not doubled, f"one key, several tasks: {doubled}"
            task_of = {s.key: next(iter(s.task_ids)) for s in subs}
            assert len(set(task_of.values())) == len(subs), "two keys share a task"

            ended = await all_ended(gateways, list(task_of.values()), within=180)
            report["all_completed_after_last_submission_s"] = round(clock.now() - submitted, 1)
            lost = {t: state for t, state in ended.items() if state != "completed"}
            assert not lost, f"{len(lost)} scans did not complete: {lost}"

            scanners = await until(lambda: slots_free(one), "every slot free", within=60, every=0.5)
            report["slots"] = {f"{s['scanner_pool']}/{s['instance_id']}": s["available_capacity"] for s in scanners}

        truth = await asyncio.to_thread(emulator_truth, engine, deployment)
        limits = {f"{s.pool}/{s.instance}": s.max_concurrent_scans for s in emulated_scanners()}
        report["emulator"] = {
            name: {"max_running_seen": t["max_running_seen"], "limit": limits[name], "launches": t["launches"]}
            for name, t in truth.items()
        }
        over_limit = {n: e for n, e in report["emulator"].items() if e["max_running_seen"] > e["limit"]}
        assert not over_limit, f"scanners over their limit: {over_limit}"
        nessus_scans = Counter[str]()
        launches = Counter[str]()
        for stats in truth.values():
            for scan in stats["scans"]:
                nessus_scans[scan["name"]] += 1
                launches[scan["name"]] += scan["launches"]
        expected = {f"scanfleet-{task_id}" for task_id in task_of.values()}
        twice = {n: (nessus_scans[n], launches[n]) for n in expected if (nessus_scans[n], launches[n]) != (1, 1)}
        assert not twice, f"tasks without exactly one Nessus scan launched once (scans, launches): {twice}"
        assert set(nessus_scans) == expected, f"Nessus scans of no submitted task: {set(nessus_scans) - expected}"
        failed_answers = Counter(a.outcome for s in subs for a in s.attempts if a.outcome.startswith("5"))
        del failed_answers["503"]
        assert not failed_answers, f"answers other than 503 (retry) while NATS failed over: {failed_answers}"
    except BaseException as exc:
        deployment.dump(tail=40, keep=LOGS)
        for task_id in getattr(exc, "task_ids", []):
            print(f"--- every log line naming {task_id}:")
            print("\n".join(line for line in LOGS.read_text().splitlines() if task_id in line)[-20000:])
        raise
    finally:
        report["test_duration_s"] = round(time.monotonic() - began, 1)
        report["timings"] = deployment.timings
        REPORT.parent.mkdir(exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")
        print("partition report:", json.dumps(report, indent=2))
