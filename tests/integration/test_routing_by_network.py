"""Through the real gateway core: routing by network, permanent exclusions, priorities within
the scope, and window delays in the submission's answer."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scanfleet.common.clients import Role
from scanfleet.common.config import parse_fleet
from scanfleet.common.messages import Priority
from scanfleet.common.registry import sync_registry
from scanfleet.common.runtime import Runtime
from scanfleet.common.scope import Scope
from scanfleet.gateway.core import Gateway, SubmitScan
from scanfleet.gateway.errors import GatewayError
from tests.helpers import make_caller, make_gateway, queue_at_once

SCOPE = Scope(
    targets=["10.0.0.0/8", "192.168.0.0/16"], max_active=100, submissions_per_minute=1000, max_priority="normal"
)


def pool(*scanners: str, ranges: list[str] | None = None) -> dict[str, object]:
    return {
        "scanners": [
            {"id": s, "url": f"https://{s}:8834", "auth": {"access_key": "a", "secret_key": "b"}} for s in scanners
        ],
        **({"ranges": ranges} if ranges else {}),
    }


@pytest.fixture
async def gateway(runtime: Runtime) -> Gateway:
    fleet = {
        "default_pool": "default",
        "pools": {
            "default": pool("scanner-1", "scanner-2", ranges=["10.0.0.0/8"]),
            "dmz": pool("scanner-3", ranges=["10.20.0.0/16"]),
        },
        "exclusions": [{"targets": ["10.99.0.0/16"], "reason": "payment systems: PCI change freeze"}],
        "windows": [
            {
                "name": "dmz-nightly",
                "cron": "0 1 * * *",
                "duration_minutes": 120,
                "timezone": "UTC",
                "targets": ["10.20.5.0/24"],
            }
        ],
    }
    await sync_registry(runtime.registry, runtime.capacity, parse_fleet(fleet, source="t", env={}))
    return make_gateway(runtime)


async def submit(
    gateway: Gateway, targets: list[str], *, pool: str | None = None, priority: Priority = "normal"
) -> dict[str, object]:
    wanted = SubmitScan(targets=targets, name="route me", scanner_pool=pool, priority=priority)
    return await gateway.submit(make_caller(Role.AGENT, "router", SCOPE), wanted, queue_at_once)


async def test_a_scan_without_a_pool_goes_to_the_narrowest_pool_that_reaches_it(gateway: Gateway) -> None:
    assert (await submit(gateway, ["10.20.1.1", "10.20.2.0/25"]))["scanner_pool"] == "dmz"
    assert (await submit(gateway, ["10.20.1.1", "10.30.0.1"]))["scanner_pool"] == "default"


async def test_targets_no_pool_reaches_are_refused_with_the_pools_and_their_ranges(gateway: Gateway) -> None:
    with pytest.raises(GatewayError) as refused:
        await submit(gateway, ["192.168.1.1"])
    assert refused.value.code == "target_unreachable" and refused.value.status == 422
    details = refused.value.as_dict()
    assert details["pools"] == {"default": ["10.0.0.0/8"], "dmz": ["10.20.0.0/16"]}
    assert details["targets"] == ["192.168.1.1"]


async def test_an_explicit_pool_that_does_not_reach_a_target_is_refused(gateway: Gateway) -> None:
    with pytest.raises(GatewayError) as refused:
        await submit(gateway, ["10.30.0.1"], pool="dmz")
    assert refused.value.code == "target_unreachable"
    assert "pool 'dmz' does not reach 10.30.0.1" in refused.value.message


async def test_a_permanently_excluded_target_is_refused_with_the_reason(gateway: Gateway) -> None:
    with pytest.raises(GatewayError) as refused:
        await submit(gateway, ["10.99.1.1"])
    assert (refused.value.status, refused.value.code) == (403, "target_excluded")
    assert "PCI change freeze" in refused.value.message


async def test_a_priority_above_the_scope_is_refused_and_a_lower_one_recorded(gateway: Gateway) -> None:
    with pytest.raises(GatewayError) as refused:
        await submit(gateway, ["10.1.1.1"], priority="high")
    assert (refused.value.status, refused.value.code) == (403, "priority_not_allowed")
    answer = await submit(gateway, ["10.1.1.1"], priority="low")
    record = await gateway.rt.tasks.get(str(answer["task_id"]))
    assert record is not None and record.priority == "low" and record.submitted_by == "router"


async def test_a_submission_held_by_a_window_says_until_when(gateway: Gateway) -> None:
    gateway.rt.now = lambda: datetime(2026, 6, 1, 1, 30, tzinfo=UTC)
    answer = await submit(gateway, ["10.20.5.7"])
    assert answer["scan_window"] == {"name": "dmz-nightly", "until": "2026-06-01T03:00:00+00:00"}
    assert answer["estimated_wait_seconds"] == 5400.0
    free = await submit(gateway, ["10.20.6.7"])
    assert "scan_window" not in free
