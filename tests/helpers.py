"""Helpers shared by test modules: the one place tests import from (test modules never import each other).

Waiting: await an event (a KV watch, a SCAN_EVENTS subscription) wherever one announces the fact;
``until`` polls only for facts nothing announces (HTTP status APIs, metrics, consumer counters).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import httpx
import httpx2
import msgspec
import nats
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, Request, RequestParams, Result
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import ConfigDict

from scanfleet.cli.stack import EmulatedScanner, Stack, StackOptions
from scanfleet.common import contract
from scanfleet.common.bus import put_object_stream
from scanfleet.common.capacity import Slots
from scanfleet.common.clients import Client as ScanfleetClient
from scanfleet.common.clients import (
    ClientDirectory,
    ClientsFile,
    Principal,
    Role,
    issue_token,
    load_clients,
    save_clients,
)
from scanfleet.common.embedded import free_port
from scanfleet.common.messages import ExportEvent, Heartbeat, ScanType, encode, utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.scope import CompiledScope, Scope
from scanfleet.common.targets import Target
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.emulator.config import EmulatorConfig
from scanfleet.gateway.access import Caller
from scanfleet.gateway.admission import Admission
from scanfleet.gateway.core import Gateway

T = TypeVar("T")

MALFORMED = "ruby-nessus__spec_example_v2_MALFORMED.nessus"
"""The one corpus file that is not well-formed XML."""

# --- waiting ------------------------------------------------------------------------------------


async def until(
    check: Callable[[], Awaitable[T]], what: str = "the condition", within: float = 20.0, every: float = 0.05
) -> T:
    """Poll ``check`` until it returns something truthy, and return that; for facts no event announces."""
    deadline = time.monotonic() + within
    while not (value := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)
    return value


async def watch_until(kv: KeyValue, key: str, kind: type[T], check: Callable[[T], bool], within: float = 10.0) -> T:
    """The key's first value, current or later, that decodes as ``kind`` and satisfies ``check``."""
    watcher = await kv.watch(key)
    try:
        async with asyncio.timeout(within):
            while True:
                entry = await watcher.updates(timeout=within)  # type: ignore[no-untyped-call]
                if entry is not None and entry.value:
                    value = msgspec.json.decode(entry.value, type=kind)
                    if check(value):
                        return value
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]


async def watch_gone(kv: KeyValue, key: str, within: float = 15.0) -> None:
    """Return once the key is deleted or purged (at once if it holds no value now)."""
    watcher = await kv.watch(key)
    live = False
    try:
        async with asyncio.timeout(within):
            while True:
                entry = await watcher.updates(timeout=within)  # type: ignore[no-untyped-call]
                if entry is None:  # the end of the current values
                    if not live:
                        return
                elif entry.operation in ("DEL", "PURGE"):
                    return
                else:
                    live = True
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]


async def task_events(js: JetStreamContext, task_id: str, kinds: Collection[str], within: float = 30.0) -> list[Msg]:
    """The task's events on SCAN_EVENTS from its first, through the first one of ``kinds``.

    ``within`` bounds the wait for each next event.
    """
    sub = await js.subscribe(contract.task_events_filter(task_id), ordered_consumer=True)
    try:
        events: list[Msg] = []
        while not events or contract.kind_of_event(events[-1].subject) not in kinds:
            events.append(await sub.next_msg(timeout=within))
        return events
    finally:
        await sub.unsubscribe()


# --- records and exports on a runtime -----------------------------------------------------------


async def agent_alive(rt: Runtime, pool: str, instance: str) -> None:
    """A heartbeat of a live, able agent for the scanner, as the agent writes it every 5 s."""
    beat = Heartbeat(
        pool=pool, instance=instance, agent_id="a", at=utcnow(), reachable=True, authenticated=True, scan_api=True
    )
    await rt.agents.put(contract.instance_key(pool, instance), encode(beat))


async def add_task(rt: Runtime, task_id: str, state: TaskState) -> TaskRecord:
    now = utcnow()
    record = TaskRecord(
        task_id=task_id,
        trace_id="ab" * 16,
        state=state,
        pool="default",
        instance="scanner-1",
        targets=["10.0.0.1"],
        name=task_id,
        created_at=now,
        updated_at=now,
        started_at=now,
        finished_at=now if state.terminal else None,
    )
    await rt.tasks.create(record)
    return record


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 1 << 16):
        yield data[i : i + (1 << 16)]


async def submit_export(rt: Runtime, data: bytes, *, scan_type: ScanType = "untrusted", hosts: int = 1) -> str:
    """A task in ``exporting`` with its export stored, and the event the agent would publish."""
    task_id = f"t{secrets.token_hex(6)}"
    now = utcnow()
    record = TaskRecord(
        task_id=task_id,
        trace_id=secrets.token_hex(16),
        state=TaskState.EXPORTING,
        scan_type=scan_type,
        pool="default",
        instance="scanner-1",
        targets=["10.0.0.0/24"],
        name="integration",
        created_at=now,
        updated_at=now,
    )
    await rt.tasks.create(record)
    name = contract.export_object_name(task_id)
    stored = await put_object_stream(rt.js, contract.EXPORTS_OBJECTS, name, _chunks(data))
    event = ExportEvent(
        task_id=task_id,
        trace_id=record.trace_id,
        pool="default",
        instance="scanner-1",
        scan_type=scan_type,
        expected_hosts=hosts,
        object_name=name,
        size=stored.size,
        sha256=hashlib.sha256(data).hexdigest(),
        nessus_scan_id=1,
        exported_at=now,
    )
    await rt.js.publish(contract.event_subject(task_id, contract.EventKind.EXPORTED), encode(event))
    return task_id


# --- the gateway's core, called directly ---------------------------------------------------------

# Named make_*, not test_*: pytest would collect a test_* name imported into a test module.
TEST_SCOPE = Scope(
    targets=["10.0.0.0/8"],
    scan_types=["untrusted", "authenticated", "authenticated_privileged"],
    credential_refs=["*"],
    max_targets=65536,
    max_active=100_000,
    submissions_per_minute=100_000,
)
"""Wide enough that only what a test is about can refuse a submission."""


def make_caller(role: Role = Role.ADMIN, client_id: str = "tester", scope: Scope = TEST_SCOPE) -> Caller:
    client = ScanfleetClient(id=client_id, role=role, scope=scope)
    return Caller(Principal(client, CompiledScope.of(scope), "test"))


def make_gateway(rt: Runtime) -> Gateway:
    """A gateway core with no clients file: callers come from ``make_caller``."""
    return Gateway(rt, Admission(rt.settings, ClientDirectory(None)))


async def queue_at_once(task_id: str, targets: list[Target], pool: str, scan_type: ScanType) -> None:
    """``before_queue`` for tests: the REST and MCP layers audit there; nothing to record here."""


# --- the emulator -------------------------------------------------------------------------------

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
API_KEYS = {"X-ApiKeys": f"accessKey={ACCESS_KEY}; secretKey={SECRET_KEY};"}
ADVANCED = "ad629e16-03b6-8c1d-cef6-ef8c9dd3c658d24bd260ef5f9e66"


class FakeClock:
    def __init__(self, start: float = 1_718_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(**overrides: object) -> EmulatorConfig:
    values: dict[str, object] = {
        "name": "emu-1",
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "username": "operator",
        "password": "operator-pass",
        "scan_duration": 1.0,
        "pending_duration": 0.2,
        "export_delay": 0.5,
        "ssh_accounts": {"root": "toor"},
    }
    values.update(overrides)
    return msgspec.convert(values, EmulatorConfig)


def scan_body(name: str, targets: str, ssh: list[dict[str, str]] | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "uuid": ADVANCED,
        "settings": {"name": name, "text_targets": targets, "folder_id": 3, "scanner_id": 1, "enabled": False},
    }
    if ssh is not None:
        body["credentials"] = {"add": {"Host": {"SSH": ssh}}, "edit": {}, "delete": []}
    return body


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` over real HTTP on a free port; yields its base URL."""
    port = free_port("127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    running = asyncio.create_task(server.serve())
    try:

        async def started() -> bool:
            return bool(server.started)  # uvicorn offers no started event

        await until(started, "uvicorn to start", within=10.0, every=0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = server.force_exit = True
        await running


# --- the whole stack (e2e) ----------------------------------------------------------------------


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
        lines = [line for log in running.nats.log_files for line in log.read_text().splitlines()]
        refused = [line for line in lines if "Violation" in line]
        assert not refused, "NATS refused a service:\n" + "\n".join(refused[:20])


@contextlib.asynccontextmanager
async def mcp_client(
    stack: Stack, token: str | None = None, *, gateway: str = "gateway", **options: Any
) -> AsyncIterator[Client]:
    """Opened inside each test: the MCP client's anyio scopes must enter and exit in one task.
    Authenticated as the stack's local client unless another ``token`` is given, on the gateway
    process ``gateway``; ``options`` go to the official ``Client`` (``mode``, ``extensions``,
    ``elicitation_callback``)."""
    headers = {"Authorization": f"Bearer {token or stack.token}"}
    url = f"{stack.gateway_url_of(gateway)}/mcp"
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        Client(streamable_http_client(url, http_client=http), **options) as client,
    ):
        yield client


# --- MCP Tasks (io.modelcontextprotocol/tasks) ---------------------------------------------------

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
MODERN_PROTOCOL = "2026-07-28"


class CreatedTask(Result):
    """A ``CreateTaskResult``: the handle the server answers a task-augmented tools/call with."""

    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    poll_interval_ms: int | None = None


class PolledTask(Result):
    """A ``tasks/get`` answer (a ``DetailedTask``)."""

    model_config = ConfigDict(extra="allow")
    task_id: str
    status: str
    status_message: str | None = None
    poll_interval_ms: int | None = None
    result: dict[str, Any] | None = None


class TaskRefParams(RequestParams):
    task_id: str


class GetTask(Request[TaskRefParams, Literal["tasks/get"]]):
    name_param: ClassVar[str | None] = "taskId"  # the spec's Mcp-Name header for tasks/*
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskRefParams


class McpTasks(ClientExtension):
    """The client half of MCP Tasks for the official client: it opts in, and turns a task handle
    into the tool's final result by polling ``tasks/get`` at the server's ``pollIntervalMs``."""

    identifier = TASKS_EXTENSION

    def __init__(self) -> None:
        self.created: list[str] = []
        self.polls: list[dict[str, Any]] = []

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreatedTask, resolve=self.resolve)]

    async def resolve(self, created: CreatedTask, ctx: ClaimContext) -> CallToolResult:
        self.created.append(created.task_id)
        interval = created.poll_interval_ms or 1000
        while True:
            await asyncio.sleep(interval / 1000)  # the spec's polling, at the server's pace
            task = await ctx.session.send_request(GetTask(params=TaskRefParams(task_id=created.task_id)), PolledTask)
            self.polls.append(task.model_dump(by_alias=True, exclude_none=True))
            if task.status == "completed" and task.result is not None:
                return CallToolResult.model_validate(task.result)
            if task.status in ("failed", "cancelled"):
                raise AssertionError(f"task {created.task_id} {task.status}: {task.status_message}")
            interval = task.poll_interval_ms or interval


async def jsonrpc(
    http: httpx.AsyncClient,
    stack: Stack,
    method: str,
    params: dict[str, Any],
    *,
    extensions: dict[str, Any] | None = None,
    name: str | None = None,
    token: str | None = None,
    gateway: str = "gateway",
    capabilities: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One 2026-07-28 JSON-RPC request over plain HTTP, as the spec has a client send it: the
    protocol version and capabilities in ``_meta``, and the Mcp-Method / Mcp-Name headers;
    to the gateway process ``gateway``."""
    capabilities = {**(capabilities or {}), **({"extensions": extensions} if extensions is not None else {})}
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN_PROTOCOL,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "plain-jsonrpc", "version": "1"},
    }
    body = {"jsonrpc": "2.0", "id": secrets.randbelow(1 << 30), "method": method, "params": {**params, "_meta": meta}}
    headers = {
        "Authorization": f"Bearer {token or stack.token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN_PROTOCOL,
        "Mcp-Method": method,
    }
    if name is not None:
        headers["Mcp-Name"] = name
    response = await http.post(f"{stack.gateway_url_of(gateway)}/mcp", json=body, headers=headers)
    assert response.status_code < 500, response.text  # JSON-RPC errors may come with a 4xx status
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:"):
                message = json.loads(line.removeprefix("data:"))
                if message.get("id") == body["id"]:
                    return message  # type: ignore[no-any-return]
        raise AssertionError(f"no answer in the event stream: {response.text[:500]}")
    return response.json()  # type: ignore[no-any-return]


def cli_json(stack: Stack, *args: str, timeout: float = 60.0) -> Any:
    """``scanfleet <args> --json`` against the stack's NATS (as its admin user); its parsed output."""
    done = subprocess.run(
        [sys.executable, "-m", "scanfleet.cli", *args, "--json"],
        env={**os.environ, "SCANFLEET_NATS_URL": stack.nats.url},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rest(stack: Stack, token: str | None = None, timeout: float = 10.0, gateway: str = "gateway") -> httpx.Client:
    """A REST client for the stack's gateway (the process ``gateway``), authenticated as the
    local client unless ``token``."""
    headers = {"Authorization": f"Bearer {token or stack.token}"}
    return httpx.Client(base_url=stack.gateway_url_of(gateway), headers=headers, timeout=timeout)


def arest(stack: Stack, token: str | None = None, timeout: float = 10.0, gateway: str = "gateway") -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token or stack.token}"}
    return httpx.AsyncClient(base_url=stack.gateway_url_of(gateway), headers=headers, timeout=timeout)


# --- access control -----------------------------------------------------------------------------


def add_client(clients_file: Path, client_id: str, role: Role, scope: Scope, **fields: Any) -> str:
    """Add a client to a clients file and return its new API token (the gateway re-reads the file)."""
    data = load_clients(clients_file) if clients_file.exists() else ClientsFile()
    data.clients = [c for c in data.clients if c.id != client_id]
    data.clients.append(ScanfleetClient(id=client_id, role=role, scope=scope, **fields))
    token = issue_token(data, client_id)
    save_clients(clients_file, data)
    return token


def addresses_of(entry: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address of an address, CIDR or ``a.b.c.d-e`` range, by Python's ipaddress alone."""
    if "/" in entry:
        return list(ipaddress.ip_network(entry, strict=False))
    if "-" in entry:
        first_text, _, tail = entry.partition("-")
        first = ipaddress.ip_address(first_text)
        last = ipaddress.ip_address(".".join([*first_text.split(".")[:3], tail]))
        return [ipaddress.ip_address(i) for i in range(int(first), int(last) + 1)]
    return [ipaddress.ip_address(entry)]


def oracle_in_scope(entries: Collection[str], allowed: Collection[str], denied: Collection[str]) -> bool:
    """True when every address of every entry lies in an allowed network and in no denied one."""
    allowed_nets = [ipaddress.ip_network(n) for n in allowed]
    denied_nets = [ipaddress.ip_network(n) for n in denied]
    for entry in entries:
        for address in addresses_of(entry):
            if not any(address in n for n in allowed_nets if n.version == address.version):
                return False
            if any(address in n for n in denied_nets if n.version == address.version):
                return False
    return True


class Jwks:
    """Signing keys of a pretend identity provider: an RSA and an EC key, published as a JWKS."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.keys = [
            {**json.loads(RSAAlgorithm.to_jwk(self.rsa.public_key())), "kid": "rsa-1", "alg": "RS256", "use": "sig"},
            {**json.loads(ECAlgorithm.to_jwk(self.ec.public_key())), "kid": "ec-1", "alg": "ES256", "use": "sig"},
        ]
        self.requests = 0


@contextlib.contextmanager
def serving_jwks() -> Iterator[tuple[str, Jwks]]:
    """A real JWKS over HTTP on loopback, as an identity provider serves it; yields (url, keys)."""
    jwks = Jwks()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            jwks.requests += 1
            body = json.dumps({"keys": jwks.keys}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", jwks
    finally:
        server.shutdown()
        server.server_close()


# A small universe around the always-denied edges, so every address can be enumerated.
SCOPE_BASES = ["10.0.0.0", "10.0.1.0", "126.255.255.0", "127.0.0.0", "169.254.169.0", "223.255.255.0", "255.255.255.0"]


@st.composite
def scope_networks(draw: st.DrawFn) -> str:
    base = ipaddress.ip_address(draw(st.sampled_from(SCOPE_BASES)))
    prefix = draw(st.integers(min_value=26, max_value=32))
    offset = draw(st.integers(min_value=0, max_value=255))
    return str(ipaddress.ip_network(f"{base + offset}/{prefix}", strict=False))


@st.composite
def scope_targets(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["address", "cidr", "range"]))
    base = ipaddress.ip_address(draw(st.sampled_from(SCOPE_BASES)))
    first = base + draw(st.integers(min_value=0, max_value=255))
    if kind == "address":
        return str(first)
    if kind == "cidr":
        return f"{first}/{draw(st.integers(min_value=27, max_value=32))}"
    last = draw(st.integers(min_value=int(str(first).rsplit(".", 1)[1]), max_value=255))
    return f"{first}-{last}"


def tool_json(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    text = result.content[0].text  # type: ignore[union-attr]
    return json.loads(text)  # type: ignore[no-any-return]


def tool_error_text(result: CallToolResult) -> str:
    assert result.is_error, result.content
    return result.content[0].text  # type: ignore[union-attr]


def tool_error(result: CallToolResult) -> dict[str, Any]:
    """A tool's refusal: exactly the JSON a REST client gets (``error`` code, ``message``, details)."""
    text = tool_error_text(result)
    try:
        refusal = json.loads(text)
    except json.JSONDecodeError:
        raise AssertionError(f"a tool refusal that is not JSON: {text!r}") from None
    assert isinstance(refusal, dict) and {"error", "message"} <= refusal.keys(), refusal
    return refusal


async def status_of(mcp: Client, task_id: str) -> dict[str, Any]:
    return tool_json(await mcp.call_tool("get_scan_status", {"task_id": task_id}))


@contextlib.asynccontextmanager
async def stack_js(stack: Stack) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on the stack's own nats-server (any server of its cluster), closed on exit."""
    nc = await nats.connect(stack.nats.url.split(","))
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def wait_terminal(stack: Stack, task_id: str, within: float = 60.0) -> list[str]:
    """The kinds of the task's lifecycle events, through the first terminal one."""
    async with stack_js(stack) as js:
        events = await task_events(js, task_id, contract.TERMINAL_KINDS, within)
    return [kind for msg in events if (kind := contract.kind_of_event(msg.subject))]


async def wait_event(stack: Stack, task_id: str, kind: str, within: float = 30.0) -> None:
    async with stack_js(stack) as js:
        await task_events(js, task_id, {kind}, within)


async def watch_task(stack: Stack, task_id: str, check: Callable[[TaskRecord], bool], within: float = 20.0) -> None:
    async with stack_js(stack) as js:
        await watch_until(await js.key_value(contract.TASKS_BUCKET), task_id, TaskRecord, check, within)


async def slot_holders(stack: Stack, pool: str, instance: str) -> list[str]:
    async with stack_js(stack) as js:
        kv = await js.key_value(contract.CAPACITY_BUCKET)
        entry = await kv.get(contract.instance_key(pool, instance))
        return msgspec.json.decode(entry.value or b"{}", type=Slots).tasks


async def slot_freed(stack: Stack, pool: str, instance: str, task_id: str, within: float = 20.0) -> None:
    async with stack_js(stack) as js:
        kv = await js.key_value(contract.CAPACITY_BUCKET)
        await watch_until(kv, contract.instance_key(pool, instance), Slots, lambda s: task_id not in s.tasks, within)


def scanner_named(stack: Stack, pool: str, instance: str) -> EmulatedScanner:
    return next(s for s in stack.options.fleet if (s.pool, s.id) == (pool, instance))


def emulator_get(stack: Stack, scanner: EmulatedScanner, path: str) -> Any:
    access, secret = stack.secrets[scanner]
    response = httpx.get(
        f"{stack.emulator_url(scanner)}{path}",
        headers={"X-ApiKeys": f"accessKey={access}; secretKey={secret}"},
    )
    response.raise_for_status()
    return response.json()


def emulator_truth(stack: Stack, scanner: EmulatedScanner, scan_id: int) -> dict[str, Any]:
    truth: dict[str, Any] = emulator_get(stack, scanner, f"/_emulator/scans/{scan_id}/truth")
    return truth


def emulator_scan(stack: Stack, pool: str, instance: str, task_id: str) -> dict[str, Any]:
    stats = emulator_get(stack, scanner_named(stack, pool, instance), "/_emulator/stats")
    mine = [s for s in stats["scans"] if s["name"] == f"scanfleet-{task_id}"]
    assert len(mine) == 1, f"exactly one Nessus scan for {task_id}: {mine}"
    scan: dict[str, Any] = mine[0]
    return scan


def long_scan(seconds: float) -> str:
    """The emulator runs a scan for as long as its description says."""
    return f"emulator-duration={seconds:g}"


async def running_scan(mcp: Client, stack: Stack, name: str, seconds: float, **where: str) -> dict[str, Any]:
    task = tool_json(
        await mcp.call_tool(
            "run_untrusted_scan", {"targets": "10.70.0.1", "name": name, "description": long_scan(seconds), **where}
        )
    )
    await wait_event(stack, task["task_id"], "running")
    return await status_of(mcp, task["task_id"])
