"""The audit trail on a real nats-server: append-only, readable by filter and time, followed live,
and a submission that cannot be audited is not queued; a call NATS cannot answer is a 503."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from nats.errors import NoRespondersError
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError

from scanfleet.common import audit, client_tasks, contract
from scanfleet.common.clients import Client, ClientDirectory, Principal, Role
from scanfleet.common.config import parse_fleet
from scanfleet.common.registry import sync_registry
from scanfleet.common.runtime import Runtime
from scanfleet.common.scope import CompiledScope, Scope
from scanfleet.gateway.access import Caller
from scanfleet.gateway.admission import Admission
from scanfleet.gateway.auth import Authenticator
from scanfleet.gateway.core import Gateway, SubmitScan
from scanfleet.gateway.errors import GatewayError
from scanfleet.gateway.guard import Guard


def record(client: str, action: str, decision: audit.Decision = "allow", **fields: object) -> audit.AuditRecord:
    return audit.AuditRecord(client=client, action=action, decision=decision, **fields)  # type: ignore[arg-type]


async def test_read_filters_by_client_action_decision_task_and_time(runtime: Runtime) -> None:
    js = runtime.js
    old = record("alice", "get_scan_status", at=datetime.now(UTC) - timedelta(days=2))
    for r in (
        old,
        record("alice", "run_untrusted_scan", task_id="t1"),
        record("alice", "run_untrusted_scan", "deny", code="target_denied"),
        record("bob", "cancel_scan", "deny", code="task_not_found", task_id="t1"),
        record("cli-root", "clients.add"),
    ):
        await audit.append(js, r)
    await audit.append(js, old)  # a retried publish of the same record is stored once

    async def ids(**query: object) -> list[str]:
        return [r.id for r in await audit.read(js, audit.AuditQuery(**query))]  # type: ignore[arg-type]

    assert len(await ids()) == 5
    assert len(await ids(client="alice")) == 3
    assert len(await ids(client="alice", action="run_untrusted_scan", decision="deny")) == 1
    assert len(await ids(task_id="t1")) == 2
    assert len(await ids(action="clients.add")) == 1
    assert len(await ids(limit=2)) == 2
    # `since` filters by the time JetStream stored the record, which here is now for all five.
    assert len(await ids(since=datetime.now(UTC) + timedelta(seconds=5))) == 0


async def test_the_stream_is_append_only_and_can_be_followed(runtime: Runtime) -> None:
    js = runtime.js
    live = await runtime.nc.subscribe(contract.audit_filter())  # `nats sub 'scan.audit.>'`
    await audit.append(js, record("alice", "list_tasks"))
    seen = await live.next_msg(timeout=5)
    assert seen.subject == contract.audit_subject("alice", "list_tasks")
    # `nats stream view SCAN_AUDIT --since 1h`: an ordered consumer starting at a time.
    start = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=datetime.now(UTC) - timedelta(hours=1)
    )
    history = await js.subscribe(contract.AUDIT_FILTER, ordered_consumer=True, config=start)
    replayed = await history.next_msg(timeout=5)
    assert replayed.subject == seen.subject
    info = await js.stream_info(contract.AUDIT_STREAM)
    assert info.config.deny_delete and info.config.deny_purge
    assert info.config.max_age == pytest.approx(runtime.settings.audit_retention_days * contract.DAY)
    with pytest.raises(APIError):
        await js.delete_msg(contract.AUDIT_STREAM, info.state.last_seq)
    with pytest.raises(APIError):
        await js.purge_stream(contract.AUDIT_STREAM)


async def test_a_submission_that_cannot_be_audited_is_not_queued(runtime: Runtime) -> None:
    scanner = {"id": "scanner-1", "url": "https://s1:8834", "auth": {"access_key": "a", "secret_key": "b"}}
    await sync_registry(
        runtime.registry,
        runtime.capacity,
        parse_fleet({"pools": {"default": {"scanners": [scanner]}}}, source="t", env={}),
    )
    scope = Scope(targets=["10.0.0.0/8"])
    caller = Caller(Principal(Client(id="alice", role=Role.AGENT, scope=scope), CompiledScope.of(scope), "test"))
    gateway = Gateway(runtime, Admission(runtime.settings, ClientDirectory(None)))
    async with httpx.AsyncClient() as http:
        guard = Guard(runtime, Authenticator(ClientDirectory(None), "http://127.0.0.1:1/mcp", http))
        await runtime.js.delete_stream(contract.AUDIT_STREAM)
        work = gateway.submit(
            caller, SubmitScan(targets="10.0.0.1", name="x"), guard.before_queue(caller, "submit_scan")
        )
        with pytest.raises(GatewayError) as refused:
            await guard.run(caller, "submit_scan", work, allow_recorded=True)
    assert refused.value.status == 503 and refused.value.code == "audit_unavailable"
    assert (await runtime.js.stream_info(contract.REQUESTS_STREAM)).state.messages == 0
    assert await client_tasks.active_tasks(runtime.client_tasks, "alice") == []
    assert await client_tasks.submitted(runtime.client_tasks, "alice") == []


async def test_work_nats_did_not_answer_is_a_503_to_retry_and_is_audited(runtime: Runtime) -> None:
    """A cluster electing a leader leaves requests unanswered for seconds: the caller is told to
    try again (503, Retry-After), never given a 500, and the refusal is in the trail."""
    scope = Scope(targets=["10.0.0.0/8"])
    caller = Caller(Principal(Client(id="bob", role=Role.AGENT, scope=scope), CompiledScope.of(scope), "test"))

    async def unanswered() -> dict[str, str]:
        raise NoRespondersError

    async with httpx.AsyncClient() as http:
        guard = Guard(runtime, Authenticator(ClientDirectory(None), "http://127.0.0.1:1/mcp", http))
        with pytest.raises(GatewayError) as refused:
            await guard.run(caller, "get_scan_status", unanswered())
    assert (refused.value.status, refused.value.code) == (503, "bus_unavailable")
    assert refused.value.headers == {"Retry-After": "1"}
    [denied] = await audit.read(runtime.js, audit.AuditQuery(client="bob"))
    assert (denied.decision, denied.code) == ("deny", "bus_unavailable")
