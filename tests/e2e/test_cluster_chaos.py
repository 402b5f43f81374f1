"""Issue 13's chaos run: 500 scans on a three-node JetStream cluster (R3) with two gateways and
two agents serving the same scanners, while the JetStream meta leader, the node leading
SCAN_REQUESTS, a gateway and an agent are killed with SIGKILL (and brought back, as an
orchestrator would).

Clients submit over REST and MCP with idempotency keys, spread over both gateways; a refused
or broken submission is retried with the same key on the other gateway, as a real client
would, and every retry is counted. Afterwards, by the emulated scanners' own records: every
task completed, each was launched exactly once, no scanner ever ran more than its limit, no
slot is held, and each key sent again to the other gateway names the same task.

The two node kills are one after the other, each node restarted before the next kill: a
three-node cluster keeps its quorum through one lost node, not two. When the meta leader also
leads SCAN_REQUESTS, the second kill takes whichever node leads SCAN_REQUESTS after the
first failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import msgspec
import nats
import pytest
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from scanfleet.cli.stack import EmulatedScanner, Stack, StackOptions
from scanfleet.common import capacity, contract
from scanfleet.common.bus import kv_items
from scanfleet.common.clients import Role
from scanfleet.common.embedded import NatsCluster
from scanfleet.common.tasks import TaskRecord, TaskState
from tests.helpers import TEST_SCOPE, add_client, emulator_get, running_stack, until

# About three minutes on two shared cores; the bound leaves room for a loaded machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

T = TypeVar("T")

SCANS = 500
IN_FLIGHT = 12
MCP_EVERY = 10  # every tenth submission goes through MCP (tools/call over plain JSON-RPC)
GATEWAYS = ("gateway", "gateway-2")
FLEET = (
    EmulatedScanner("default", "scanner-1", 4),
    EmulatedScanner("default", "scanner-2", 4),
    EmulatedScanner("default", "scanner-3", 4),
    EmulatedScanner("edge", "scanner-4", 4),
)
SUBMIT_WITHIN = 90.0  # one submission, retries included
DONE_WITHIN = 150.0  # every task terminal, counted from the end of the submissions


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    options = StackOptions(
        data_dir=tmp_path_factory.mktemp("chaos"),
        fleet=FLEET,
        scan_duration=0.3,
        poll_interval=0.3,
        nats_nodes=3,
        replicas={"gateway": 2, "agent": 2},
        emulator_overrides={"pending_duration": 0.1, "export_delay": 0.1},
        log_level="WARNING",
    )
    yield from running_stack(options)


def cluster_of(stack: Stack) -> NatsCluster:
    assert isinstance(stack.nats, NatsCluster)
    return stack.nats


@dataclass
class Tally:
    """What the clients saw: accepted task ids, retries and why."""

    task_ids: dict[int, str] = field(default_factory=dict)
    answered_by: dict[int, str] = field(default_factory=dict)
    retries: int = 0
    why: Counter[str] = field(default_factory=Counter)
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    accepted_at: dict[int, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def note(self, i: int, gateway: str, task_id: str) -> None:
        self.task_ids[i] = task_id
        self.answered_by[i] = gateway
        self.accepted_at[i] = time.monotonic() - self.started
        if len(self.task_ids) >= SCANS * 3 // 10:
            self.accepted.set()


def body_of(i: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "targets": f"10.90.{i // 200}.{i % 200 + 1}",
        "name": f"chaos-{i}",
        "idempotency_key": f"chaos-{i}",
    }
    if i % 5 == 4:
        body["scanner_pool"] = "edge"
    return body


async def submit_rest(http: httpx.AsyncClient, base: str, i: int) -> str:
    answer = await http.post(f"{base}/v1/scans", json=body_of(i))
    if answer.status_code != 202:
        raise Refused(f"rest {answer.status_code} {error_code(answer)}")
    task_id: str = answer.json()["task_id"]
    return task_id


async def submit_mcp(http: httpx.AsyncClient, base: str, i: int) -> str:
    """tools/call as a 2026-07-28 client sends it over plain HTTP (no session to lose)."""
    body = {
        "jsonrpc": "2.0",
        "id": i,
        "method": "tools/call",
        "params": {
            "name": "run_untrusted_scan",
            "arguments": body_of(i),
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "chaos", "version": "1"},
            },
        },
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "run_untrusted_scan",
    }
    answer = await http.post(f"{base}/mcp", json=body, headers=headers)
    if answer.status_code >= 300:
        raise Refused(f"mcp {answer.status_code}")
    message = sse_or_json(answer)
    result = message.get("result") or {}
    if "error" in message or result.get("isError"):
        text = (result.get("content") or [{}])[0].get("text", "")
        code = json.loads(text).get("error", "?") if text.startswith("{") else "?"
        raise Refused(f"mcp error {message.get('error', {}).get('code', code)}")
    task_id: str = result["structuredContent"]["task_id"]
    return task_id


def sse_or_json(answer: httpx.Response) -> dict[str, Any]:
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        for line in answer.text.splitlines():
            if line.startswith("data:"):
                message: dict[str, Any] = json.loads(line.removeprefix("data:"))
                if "result" in message or "error" in message:
                    return message
        raise Refused("mcp stream without an answer")
    answered: dict[str, Any] = answer.json()
    return answered


def error_code(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("error", "?"))
    except ValueError:
        return answer.text[:40]


class Refused(Exception):
    """A submission the gateway did not take (a 4xx/5xx, a tool error): the client retries."""


async def submitter(stack: Stack, token: str, work: asyncio.Queue[int], tally: Tally) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=15.0) as http:
        while not work.empty():
            i = work.get_nowait()
            deadline = time.monotonic() + SUBMIT_WITHIN
            attempt = 0
            while True:
                gateway = GATEWAYS[(i + attempt) % 2]  # a retry goes to the other gateway
                send = submit_mcp if i % MCP_EVERY == 0 else submit_rest
                try:
                    tally.note(i, gateway, await send(http, stack.gateway_url_of(gateway), i))
                    break
                except (httpx.HTTPError, Refused) as exc:
                    tally.retries += 1
                    tally.why[str(exc) or type(exc).__name__] += 1
                    assert time.monotonic() < deadline, f"submission {i} not taken within {SUBMIT_WITHIN}s: {exc}"
                    attempt += 1
                    await asyncio.sleep(min(2.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0))  # client backoff


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(fn)


async def leader_change(ask: Callable[[], str | None], old: str, within: float = 30.0) -> tuple[str, float]:
    """The new leader once one other than ``old`` is reported, and how long that took."""
    started = time.monotonic()

    async def elected() -> str:
        leader = await in_thread(ask)
        return leader if leader not in (None, old) else ""

    leader = await until(elected, f"a leader other than {old}", within=within, every=0.1)
    return leader, time.monotonic() - started


@dataclass
class Chaos:
    """What was killed, and how long the cluster took to recover."""

    killed: list[str] = field(default_factory=list)
    figures: dict[str, float | str] = field(default_factory=dict)


async def chaos(stack: Stack, tally: Tally, done: Chaos) -> None:
    cluster = cluster_of(stack)
    await tally.accepted.wait()
    meta = cluster.meta_leader()
    requests = cluster.stream_leader(contract.REQUESTS_STREAM)
    assert meta is not None and requests is not None
    done.figures["first_meta_leader"], done.figures["first_requests_leader"] = meta, requests
    done.figures["first_kill_at_s"] = round(time.monotonic() - tally.started, 1)

    # 1. The meta leader and a gateway at once.
    await in_thread(lambda: cluster.by_name(meta).stop(kill=True))
    await in_thread(lambda: stack.kill("gateway-2"))
    done.killed += [f"nats {meta} (meta leader)", "gateway-2"]
    new_meta, took = await leader_change(cluster.meta_leader, meta)
    done.figures["meta_failover_s"] = round(took, 2)
    await in_thread(lambda: cluster.by_name(meta).start())
    await in_thread(lambda: cluster.wait_formed(60.0))
    await in_thread(lambda: stack.start_service("gateway", name="gateway-2"))

    # 2. Whoever leads SCAN_REQUESTS now, and an agent at once.
    leader = await until(
        lambda: in_thread(lambda: cluster.stream_leader(contract.REQUESTS_STREAM)), "a SCAN_REQUESTS leader"
    )
    done.figures["second_kill_at_s"] = round(time.monotonic() - tally.started, 1)
    await in_thread(lambda: cluster.by_name(leader).stop(kill=True))
    await in_thread(lambda: stack.kill("agent-2"))
    done.killed += [f"nats {leader} (SCAN_REQUESTS leader)", "agent-2"]
    _, took = await leader_change(lambda: cluster.stream_leader(contract.REQUESTS_STREAM), leader)
    done.figures["requests_failover_s"] = round(took, 2)
    await in_thread(lambda: stack.start_service("agent", name="agent-2"))
    await in_thread(lambda: cluster.by_name(leader).start())
    await in_thread(lambda: cluster.wait_formed(60.0))
    await in_thread(lambda: stack.wait_ready(60.0, gateways=["gateway-2"]))
    done.figures["recovered_at_s"] = round(time.monotonic() - tally.started, 1)
    done.figures["new_meta_leader"] = new_meta


@contextlib.asynccontextmanager
async def cluster_js(stack: Stack) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(stack.nats.url.split(","), max_reconnect_attempts=-1)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def retrying(read: Callable[[], Awaitable[T]]) -> T:
    """A read that a leader election may leave unanswered for a moment."""

    async def attempt() -> list[T]:
        try:
            return [await read()]
        except (NatsError, TimeoutError):
            return []

    return (await until(attempt, "NATS to answer", within=30.0, every=0.5))[0]


async def all_completed(stack: Stack, task_ids: set[str]) -> dict[str, TaskRecord]:
    """Every task ends (polled: 500 event subscriptions would load the run they observe),
    and ends completed."""
    async with cluster_js(stack) as js:
        tasks = await retrying(lambda: js.key_value(contract.TASKS_BUCKET))

        async def ended() -> dict[str, TaskRecord]:
            raw = await retrying(lambda: kv_items(tasks))
            records = {k: msgspec.json.decode(v, type=TaskRecord) for k, v in raw.items() if k in task_ids}
            return records if len(records) == len(task_ids) and all(r.state.terminal for r in records.values()) else {}

        records = await until(ended, "every task to end", within=DONE_WITHIN, every=1.0)
    failed = {t: (r.state, r.error_reason, r.error) for t, r in records.items() if r.state is not TaskState.COMPLETED}
    assert not failed, f"{len(failed)} tasks did not complete, e.g. {list(failed.items())[:5]}"
    return records


async def no_slot_held(stack: Stack) -> None:
    async with cluster_js(stack) as js:
        kv = await retrying(lambda: js.key_value(contract.CAPACITY_BUCKET))
        slots = await retrying(lambda: capacity.read_all(kv))
    held = {key: s.tasks for key, s in slots.items() if s.tasks}
    assert not held, f"slots still held: {held}"


def each_launched_once_within_limits(stack: Stack, task_ids: set[str]) -> int:
    """By the emulated scanners' own records: one Nessus scan per task, launched once, and
    never more running at once than a scanner's limit. Returns the launches counted."""
    launches: Counter[str] = Counter()
    for scanner in stack.options.fleet:
        stats = emulator_get(stack, scanner, "/_emulator/stats")
        assert stats["max_running_seen"] <= scanner.max_concurrent_scans, (scanner, stats["max_running_seen"])
        for scan in stats["scans"]:
            launches[scan["name"]] += scan["launches"]
    assert set(launches) == {f"scanfleet-{t}" for t in task_ids}, "one Nessus scan name per task, no other"
    twice = {name: n for name, n in launches.items() if n != 1}
    assert not twice, f"scans launched other than once: {twice}"
    return sum(launches.values())


async def resubmitted_elsewhere(stack: Stack, token: str, tally: Tally) -> Tally:
    """Every key sent again, each to the gateway that did not answer it first."""
    again, work = Tally(), asyncio.Queue[int]()
    for i in range(SCANS):
        work.put_nowait(i)

    async def repeat(http: httpx.AsyncClient) -> None:
        while not work.empty():
            i = work.get_nowait()
            other = GATEWAYS[1 - GATEWAYS.index(tally.answered_by[i])]
            send = submit_mcp if i % MCP_EVERY == 0 else submit_rest
            again.note(i, other, await send(http, stack.gateway_url_of(other), i))

    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=15.0) as http:
        await asyncio.gather(*(repeat(http) for _ in range(IN_FLIGHT)))
    return again


def longest_gap(times: list[float]) -> float:
    ordered = sorted(times)
    return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


async def test_five_hundred_scans_survive_node_gateway_and_agent_kills(stack: Stack) -> None:
    assert len(stack.env()["SCANFLEET_NATS_URL"].split(",")) == 3, "every service is given all three servers"
    token = add_client(stack.clients_file, "chaos", Role.OPERATOR, TEST_SCOPE)
    tally, done = Tally(), Chaos()
    work: asyncio.Queue[int] = asyncio.Queue()
    for i in range(SCANS):
        work.put_nowait(i)
    figures: dict[str, Any] = {"scans": SCANS}
    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(IN_FLIGHT):
                tg.create_task(submitter(stack, token, work, tally))
            tg.create_task(chaos(stack, tally, done))
        figures["all_accepted_at_s"] = round(max(tally.accepted_at.values()), 1)
        task_ids = set(tally.task_ids.values())
        assert len(task_ids) == SCANS, "one task per idempotency key"

        records = await all_completed(stack, task_ids)
        figures["all_completed_at_s"] = round(time.monotonic() - tally.started, 1)
        figures["run_by"] = dict(Counter(r.claimed_by for r in records.values()))
        assert set(figures["run_by"]) == {"agent", "agent-2"}, "both agents ran scans, and no one else"
        await no_slot_held(stack)
        figures["launches"] = each_launched_once_within_limits(stack, task_ids)
        resubmitting = time.monotonic()
        again = await resubmitted_elsewhere(stack, token, tally)
        figures["resubmitted_in_s"] = round(time.monotonic() - resubmitting, 1)
        assert again.task_ids == tally.task_ids, "the same key names the same task on the other gateway"
        assert again.retries == 0, again.why
    except BaseException:
        print(stack.log_tail(60))
        raise
    finally:
        figures.update(
            {
                "retries": tally.retries,
                "retry_reasons": dict(tally.why.most_common()),
                "longest_gap_between_accepted_s": round(longest_gap(list(tally.accepted_at.values())), 2),
                "killed": done.killed,
                **done.figures,
            }
        )
        print("\nchaos: " + json.dumps(figures))
