"""Through the real gateway core and a real nats-server: nothing outside a client's scope ever
lands in SCAN_REQUESTS, for random scopes and random targets, checked with Python's ipaddress."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanfleet.common import contract
from scanfleet.common.clients import Client, ClientDirectory, Principal, Role
from scanfleet.common.config import parse_fleet
from scanfleet.common.messages import ScanRequest
from scanfleet.common.registry import sync_registry
from scanfleet.common.runtime import Runtime
from scanfleet.common.scope import ALWAYS_DENIED, CompiledScope, Scope
from scanfleet.common.targets import Target
from scanfleet.gateway.access import Caller
from scanfleet.gateway.admission import Admission
from scanfleet.gateway.core import Gateway, SubmitScan
from scanfleet.gateway.errors import GatewayError
from tests.helpers import oracle_in_scope, scope_networks, scope_targets

POOL = "default"
REFUSALS = {"target_denied", "target_out_of_scope"}


@pytest.fixture
async def gateway(runtime: Runtime) -> Gateway:
    scanner = {"id": "scanner-1", "url": "https://s1:8834", "auth": {"access_key": "a", "secret_key": "b"}}
    config = parse_fleet({"pools": {POOL: {"scanners": [scanner]}}}, source="t", env={})
    await sync_registry(runtime.registry, runtime.capacity, config)
    return Gateway(runtime, Admission(runtime.settings, ClientDirectory(None)))


async def nothing_before(_task: str, _targets: list[Target], _pool: str, _scan_type: Any) -> None:
    return None


def caller_with(allowed: list[str], exclude: list[str], n: int) -> Caller:
    scope = Scope(targets=allowed, exclude=exclude, max_targets=1 << 20, max_active=10**6, submissions_per_minute=10**6)
    client = Client(id=f"prop-{n}", role=Role.AGENT, scope=scope)
    return Caller(Principal(client, CompiledScope.of(scope), "test"))


async def queued_requests(rt: Runtime) -> int:
    return (await rt.js.stream_info(contract.REQUESTS_STREAM)).state.messages


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    allowed=st.lists(scope_networks(), min_size=1, max_size=3),
    exclude=st.lists(scope_networks(), max_size=2),
    wanted=st.lists(scope_targets(), min_size=1, max_size=3),
    n=st.integers(min_value=0, max_value=10**9),
)
async def test_only_in_scope_targets_reach_the_request_stream(
    gateway: Gateway, allowed: list[str], exclude: list[str], wanted: list[str], n: int
) -> None:
    rt = gateway.rt
    before = await queued_requests(rt)
    in_scope = oracle_in_scope(wanted, allowed, [*ALWAYS_DENIED, *exclude])
    submit = SubmitScan(targets=wanted, name="property", scanner_pool=POOL)
    try:
        answer = await gateway.submit(caller_with(allowed, exclude, n), submit, nothing_before)
    except GatewayError as refusal:
        assert refusal.code in REFUSALS, refusal.as_dict()
        assert not in_scope, f"{wanted} is in scope {allowed} - {exclude} but was refused: {refusal.message}"
        assert await queued_requests(rt) == before, "a refused submission reached SCAN_REQUESTS"
        return
    assert in_scope, f"{wanted} is outside {allowed} - {exclude} but was queued"
    stored = await rt.js.get_last_msg(contract.REQUESTS_STREAM, contract.request_subject(POOL, answer["task_id"]))
    request = msgspec.json.decode(stored.data or b"", type=ScanRequest)
    assert oracle_in_scope(request.targets, allowed, [*ALWAYS_DENIED, *exclude])
    assert await queued_requests(rt) == before + 1
