"""NATS least privilege, tried against a real nats-server with the users ``scanfleet up`` runs.

Each service's user does its job with real nats-py clients, and every step outside it is
refused by the server itself: the assertions wait for nats-server's permission-violation
errors (and check that nothing changed), never for a silence alone.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from scanfleet.common import contract
from scanfleet.common.bus import put_object_stream
from scanfleet.common.config import Settings
from scanfleet.common.embedded import NatsServer
from scanfleet.common.messages import DeadLetter, utcnow
from scanfleet.common.nats_auth import SERVICES, USERS, EnvRef, generate_passwords, password_env, server_config
from scanfleet.common.runtime import Runtime, close, open_runtime

POOLS = {"default": ["scanner-1"]}
TOPOLOGY = contract.Topology(POOLS)
AGENT_CONSUMER = contract.agent_consumer_name("default", "scanner-1")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "nats", passwords=generate_passwords())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def settings_for(server: NatsServer, user: str) -> Settings:
    return Settings(nats_url=server.address, nats_user=user, nats_password=server.passwords[user])


@pytest.fixture
async def provisioned(server: NatsServer) -> AsyncIterator[NatsServer]:
    """The contract created by the provision user, as ``scanfleet provision`` does."""
    rt = await open_runtime("provision", settings_for(server, "provision"), topology=TOPOLOGY)
    await close(rt)
    yield server


class Caller:
    """A plain nats-py connection as one user that keeps the server's asynchronous errors."""

    def __init__(self) -> None:
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.nc = NATS()

    async def connect(self, server: NatsServer, user: str) -> Caller:
        async def on_error(exc: Exception) -> None:
            await self.errors.put(exc)

        await self.nc.connect(
            server.url_for(user), inbox_prefix=f"_INBOX.{user}", error_cb=on_error, allow_reconnect=False
        )
        return self

    async def refused(self, kind: str, subject: str, within: float = 5.0) -> str:
        """Wait for the server's 'permissions violation for <kind> to "<subject>"'."""
        wanted = f'permissions violation for {kind} to "{subject}"'.casefold()
        async with asyncio.timeout(within):
            while True:
                message = str(await self.errors.get())
                if wanted in message.casefold():
                    return message


@pytest.fixture
async def caller(provisioned: NatsServer) -> AsyncIterator[dict[str, Caller]]:
    """One plain connection per user."""
    callers = {user: await Caller().connect(provisioned, user) for user in USERS}
    try:
        yield callers
    finally:
        for c in callers.values():
            await c.nc.close()


async def message_count(admin: NATS, stream: str) -> int:
    info = await admin.jetstream().stream_info(stream)
    return int(info.state.messages)


# Who gets in --------------------------------------------------------------------------------


@pytest.mark.parametrize("credentials", ["", "agent:wrong-password@", "nobody:nothing@"])
async def test_unknown_callers_are_refused(provisioned: NatsServer, credentials: str) -> None:
    url = provisioned.address.replace("nats://", f"nats://{credentials}")
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)


def test_config_is_private_and_monitoring_is_on_loopback(server: NatsServer) -> None:
    assert stat.S_IMODE(server.config_file.stat().st_mode) == 0o600
    text = server.config_file.read_text()
    assert f'http: "127.0.0.1:{server.monitor_port}"' in text
    for user in USERS:
        assert f'user: "{user}"' in text


def test_committed_configs_name_passwords_only_by_variable() -> None:
    text = server_config(
        {u: EnvRef(password_env(u)) for u in SERVICES}, listen="0.0.0.0:4222", monitor="127.0.0.1:8222", store_dir="/d"
    )
    for user in SERVICES:
        assert f"password: ${password_env(user)}\n" in text


def test_settings_never_show_the_nats_password() -> None:
    settings = Settings(nats_url="nats://admin:s3cret-url@127.0.0.1:4222", nats_user="agent", nats_password="s3cret")
    assert "s3cret" not in repr(settings)
    assert "'agent'" in repr(settings)


# Each service's own work --------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
async def test_every_service_starts_with_only_its_own_rights(provisioned: NatsServer, service: str) -> None:
    """Start-up only checks the contract (stream and consumer info): nothing to create."""
    topology = TOPOLOGY if service in ("dispatcher", "agent") else None
    rt = await open_runtime(service, settings_for(provisioned, service), topology=topology)
    await close(rt)
    assert "Violation" not in provisioned.log_file.read_text()


async def test_a_scan_flows_through_every_user_within_its_rights(provisioned: NatsServer) -> None:
    """Gateway submits, dispatcher assigns, agent pulls and exports, validator reads and writes
    findings, janitor removes the objects: every step as that service's user, no violation."""
    rts: dict[str, Runtime] = {}
    try:
        for service in SERVICES:
            topology = TOPOLOGY if service in ("dispatcher", "agent") else None
            rts[service] = await open_runtime(service, settings_for(provisioned, service), topology=topology)
        gateway, dispatcher, agent, validator, janitor = (rts[s] for s in SERVICES)
        task = "t-perm-1"

        await gateway.idempotency.put("k", b"t-perm-1")
        await gateway.js.publish(contract.request_subject("default", task), b"{}")
        requests = await dispatcher.js.pull_subscribe_bind(
            durable=contract.dispatch_consumer_name("default"), stream=contract.REQUESTS_STREAM
        )
        [request] = await requests.fetch(1, timeout=5)
        await request.in_progress()
        await dispatcher.capacity.put(contract.instance_key("default", "scanner-1"), b"{}")
        await dispatcher.js.publish(contract.assignment_subject("default", "scanner-1", task), b"{}")
        await request.ack_sync()

        assignments = await agent.js.pull_subscribe_bind(durable=AGENT_CONSUMER, stream=contract.ASSIGNMENTS_STREAM)
        [assignment] = await assignments.fetch(1, timeout=5)
        await assignment.in_progress()
        await agent.tasks.kv.put(task, b"{}")
        await agent.agents.put(contract.instance_key("default", "scanner-1"), b"{}")

        async def export() -> AsyncIterator[bytes]:
            yield b"<NessusClientData_v2/>"

        await put_object_stream(agent.js, contract.EXPORTS_OBJECTS, contract.export_object_name(task), export())
        await agent.js.publish(contract.event_subject(task, "exported"), b"{}")
        await assignment.ack_sync()

        events = await validator.js.pull_subscribe_bind(
            durable=contract.VALIDATOR_CONSUMER, stream=contract.EVENTS_STREAM
        )
        [exported] = await events.fetch(1, timeout=5)
        exports = await validator.js.object_store(contract.EXPORTS_OBJECTS)
        assert (await exports.get(contract.export_object_name(task))).data == b"<NessusClientData_v2/>"
        findings = await validator.js.object_store(contract.FINDINGS_OBJECTS)
        await findings.put(contract.findings_object_name(task), b"SFF1")
        await exported.ack_sync()

        read = await gateway.js.object_store(contract.FINDINGS_OBJECTS)
        assert (await read.get(contract.findings_object_name(task))).data == b"SFF1"
        for store_name, name in contract.task_objects(task)[:2]:
            store = await janitor.js.object_store(store_name)
            await store.delete(name)
        await janitor.tasks.kv.delete(task)
        letter = DeadLetter(task_id=task, stage="janitor", reason="test", error="-", attempts=1, failed_at=utcnow())
        await janitor.dead_letter(letter)
    finally:
        for rt in rts.values():
            await close(rt)
    assert "Violation" not in provisioned.log_file.read_text()


async def test_a_scanner_restart_goes_from_the_gateway_to_the_agent_and_back(caller: dict[str, Caller]) -> None:
    """The gateway asks, the agent listens for its scanners and answers once on the gateway's
    inbox, and records its own automatic restarts as the system: all within their rights."""
    agent, gateway = caller["agent"].nc, caller["gateway"].nc
    subject = contract.scanner_restart_subject("default", "scanner-1")
    sub = await agent.subscribe(contract.SCANNER_RESTART_FILTER, queue=contract.SCANNER_CONTROL_QUEUE)
    await agent.flush()

    async def answer() -> None:
        msg = await sub.next_msg(timeout=5)
        assert msg.subject == subject and msg.reply.startswith("_INBOX.gateway.")
        await msg.respond(b"restarted")

    answering = asyncio.create_task(answer())
    reply = await gateway.request(subject, b"{}", timeout=5)
    await answering
    assert reply.data == b"restarted"
    js = agent.jetstream()
    await js.publish(contract.audit_subject(contract.SYSTEM_ACTOR, contract.SCANNER_RESTART_ACTION), b"{}")
    assert all(c.errors.empty() for c in caller.values())


# Everything else is refused -----------------------------------------------------------------

FORBIDDEN_PUBLISH = [
    ("agent", f"$JS.API.STREAM.DELETE.KV_{contract.TASKS_BUCKET}"),
    ("agent", f"$JS.API.STREAM.DELETE.{contract.REQUESTS_STREAM}"),
    ("agent", f"$JS.API.STREAM.PURGE.{contract.ASSIGNMENTS_STREAM}"),
    ("agent", f"$KV.{contract.REGISTRY_BUCKET}.default.scanner-1"),
    ("agent", f"$KV.{contract.IDEMPOTENCY_BUCKET}.k"),
    ("agent", f"$JS.API.CONSUMER.DELETE.{contract.ASSIGNMENTS_STREAM}.{AGENT_CONSUMER}"),
    ("gateway", f"$JS.API.STREAM.PURGE.{contract.REQUESTS_STREAM}"),
    ("gateway", f"$JS.API.STREAM.PURGE.{contract.EVENTS_STREAM}"),
    ("gateway", f"$JS.API.STREAM.PURGE.KV_{contract.TASKS_BUCKET}"),
    ("gateway", contract.assignment_subject("default", "scanner-1", "t1")),
    ("gateway", f"$JS.API.CONSUMER.MSG.NEXT.{contract.ASSIGNMENTS_STREAM}.{AGENT_CONSUMER}"),
    ("gateway", f"$O.{contract.EXPORTS_OBJECTS}.M.x"),
    ("dispatcher", f"$KV.{contract.IDEMPOTENCY_BUCKET}.k"),
    ("dispatcher", f"$JS.API.STREAM.UPDATE.{contract.EVENTS_STREAM}"),
    ("dispatcher", f"$O.{contract.EXPORTS_OBJECTS}.M.x"),
    ("validator", contract.request_subject("default", "t1")),
    ("validator", contract.assignment_subject("default", "scanner-1", "t1")),
    ("validator", f"$O.{contract.EXPORTS_OBJECTS}.M.x"),
    ("validator", f"$KV.{contract.AGENTS_BUCKET}.default.scanner-1"),
    # The janitor queues scheduled scans and rollovers (scan.request.>), never assignments.
    ("janitor", contract.assignment_subject("default", "scanner-1", "t1")),
    ("janitor", f"$KV.{contract.NESSUS_SCANS_BUCKET}.default.scanner-1.5"),
    ("janitor", f"$JS.API.STREAM.DELETE.{contract.DLQ_STREAM}"),
    ("janitor", f"$KV.{contract.REGISTRY_BUCKET}.default.scanner-1"),
    ("provision", f"$JS.API.STREAM.DELETE.{contract.EVENTS_STREAM}"),
    ("provision", f"$JS.API.STREAM.PURGE.{contract.REQUESTS_STREAM}"),
    ("provision", contract.request_subject("default", "t1")),
    # Only the gateway (and admin) ask for restarts; an agent appends no audit record but its own.
    ("validator", contract.scanner_restart_subject("default", "scanner-1")),
    ("dispatcher", contract.scanner_restart_subject("default", "scanner-1")),
    ("agent", contract.scanner_restart_subject("default", "scanner-1")),
    ("agent", contract.audit_subject("tester", "submit_scan")),
    ("agent", contract.audit_subject(contract.SYSTEM_ACTOR, "clients.add")),
]


@pytest.mark.parametrize(("user", "subject"), FORBIDDEN_PUBLISH)
async def test_publishing_outside_a_users_rights_is_refused(caller: dict[str, Caller], user: str, subject: str) -> None:
    await caller[user].nc.publish(subject, b"x")
    await caller[user].nc.flush()
    await caller[user].refused("publish", subject)
    admin = caller["admin"].nc
    for stream in (contract.REQUESTS_STREAM, contract.ASSIGNMENTS_STREAM):
        assert await message_count(admin, stream) == 0
    assert await admin.jetstream().stream_info(contract.EVENTS_STREAM)


async def test_jetstream_calls_outside_rights_fail_and_change_nothing(caller: dict[str, Caller]) -> None:
    admin = caller["admin"].nc.jetstream()
    await admin.publish(contract.request_subject("default", "t1"), b"{}")

    agent = caller["agent"].nc.jetstream(timeout=1.0)
    with pytest.raises(nats.errors.TimeoutError):
        await agent.delete_key_value(contract.TASKS_BUCKET)
    await caller["agent"].refused("publish", f"$JS.API.STREAM.DELETE.KV_{contract.TASKS_BUCKET}")
    with pytest.raises(nats.errors.TimeoutError):
        await agent.delete_stream(contract.REQUESTS_STREAM)
    await caller["agent"].refused("publish", f"$JS.API.STREAM.DELETE.{contract.REQUESTS_STREAM}")

    gateway = caller["gateway"].nc.jetstream(timeout=1.0)
    with pytest.raises(nats.errors.TimeoutError):
        await gateway.purge_stream(contract.REQUESTS_STREAM)
    await caller["gateway"].refused("publish", f"$JS.API.STREAM.PURGE.{contract.REQUESTS_STREAM}")

    assert await message_count(caller["admin"].nc, contract.REQUESTS_STREAM) == 1
    assert (await admin.stream_info(f"KV_{contract.TASKS_BUCKET}")).config.name == f"KV_{contract.TASKS_BUCKET}"


FORBIDDEN_SUBSCRIBE = [
    ("agent", "scan.event.>"),
    ("agent", "_INBOX.>"),
    ("agent", "_INBOX.gateway.>"),
    ("gateway", "scan.request.>"),
    ("gateway", contract.SCANNER_RESTART_FILTER),
    ("validator", contract.SCANNER_RESTART_FILTER),
    ("validator", "scan.assign.>"),
    ("janitor", ">"),
]


@pytest.mark.parametrize(("user", "subject"), FORBIDDEN_SUBSCRIBE)
async def test_listening_outside_a_users_rights_is_refused(caller: dict[str, Caller], user: str, subject: str) -> None:
    """Nobody but admin may listen to the flow, nor to another user's replies."""
    await caller[user].nc.subscribe(subject)
    await caller[user].nc.flush()
    await caller[user].refused("subscription", subject)
