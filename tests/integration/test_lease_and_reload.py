"""The dispatcher's leader lease, and live registry reloads that never orphan running scans."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from nats.errors import NoRespondersError

from scanfleet.common import capacity
from scanfleet.common.config import FleetConfig, parse_fleet
from scanfleet.common.lease import Lease
from scanfleet.common.registry import fleet_view, sync_registry
from scanfleet.common.runtime import Runtime
from scanfleet.dispatcher.service import Dispatcher


async def test_only_one_holder_and_takeover_after_expiry(runtime: Runtime) -> None:
    a = Lease(runtime.leases, "dispatcher", "a", ttl=0.5)
    b = Lease(runtime.leases, "dispatcher", "b", ttl=0.5)
    assert await a.try_acquire()
    assert not await b.try_acquire()
    assert await a.renew()
    current = await a.current()
    assert current is not None and current.holder == "a"
    # b may take over only once a's expiry has passed: wait for that instant, not a guess.
    await asyncio.sleep(max(0.0, current.expires_at - time.time()) + 0.05)
    assert await b.try_acquire()
    assert not await a.renew(), "a lost the lease and must learn it on its next renewal"
    await b.release()
    assert await a.try_acquire()


async def test_a_leader_leads_through_an_unanswered_renewal_only_while_its_lease_lasts(runtime: Runtime) -> None:
    """A cluster electing the leases bucket's leader answers no renewal for seconds: the
    dispatcher neither dies nor stands down at once; it leads on while its lease surely lasts."""
    settings = msgspec.structs.replace(runtime.settings, dispatcher_lease_ttl=1.0)
    dispatcher = Dispatcher(runtime, settings, lead=True)
    assert await dispatcher._hold_lease()

    async def unanswered() -> bool:
        raise NoRespondersError

    dispatcher.lease.renew = unanswered  # type: ignore[method-assign]
    assert await dispatcher._hold_lease(), "the lease written a moment ago still lasts"
    # Past the lease's expiry less the margin (a fifth of the TTL): the time itself is the fact.
    await asyncio.sleep(max(0.0, dispatcher.lease.expires_at - 0.2 - time.time()) + 0.05)
    assert not await dispatcher._hold_lease(), "it may have expired: a standby could lead now"


async def test_a_renewal_left_hanging_is_given_up_before_the_lease_runs_out(runtime: Runtime) -> None:
    settings = msgspec.structs.replace(runtime.settings, dispatcher_lease_ttl=1.0)
    dispatcher = Dispatcher(runtime, settings, lead=True)
    assert await dispatcher._hold_lease()

    async def hanging() -> bool:
        await asyncio.Event().wait()
        return True

    dispatcher.lease.renew = hanging  # type: ignore[method-assign]
    assert not await dispatcher._hold_lease()
    assert time.time() < dispatcher.lease.expires_at, "it stood down while the lease still held"


async def test_concurrent_acquisition_has_one_winner(runtime: Runtime) -> None:
    leases = [Lease(runtime.leases, "dispatcher", f"d{i}", ttl=30) for i in range(8)]
    results = await asyncio.gather(*(lease.try_acquire() for lease in leases))
    assert sum(results) == 1


def fleet(*scanners: dict[str, Any]) -> FleetConfig:
    return parse_fleet({"pools": {"default": {"scanners": list(scanners)}}}, source="test", env={})


def scanner(sid: str, limit: int = 2, enabled: bool = True) -> dict[str, Any]:
    return {
        "id": sid,
        "url": f"https://{sid}:8834",
        "auth": {"access_key": "a", "secret_key": "b"},
        "max_concurrent_scans": limit,
        "enabled": enabled,
    }


async def test_reload_adds_changes_disables_and_drains(runtime: Runtime) -> None:
    first = await sync_registry(runtime.registry, runtime.capacity, fleet(scanner("s1"), scanner("s2")))
    assert sorted(first.added) == ["default.s1", "default.s2"]
    assert await capacity.reserve(runtime.capacity, "default.s2", "running-task")

    again = await sync_registry(runtime.registry, runtime.capacity, fleet(scanner("s1"), scanner("s2")))
    assert again.describe() == "no changes"

    # s1 disabled and its limit raised; s2 removed from the file while it still runs a scan.
    report = await sync_registry(runtime.registry, runtime.capacity, fleet(scanner("s1", 4, enabled=False)))
    assert report.changed == ["default.s1"]
    assert report.removed == []
    assert report.draining == {"default.s2": ["running-task"]}
    views = {v.key: v for v in await fleet_view(runtime.registry, runtime.capacity, runtime.agents)}
    assert views["default.s1"].slots.limit == 4 and not views["default.s1"].entry.enabled
    assert views["default.s2"].entry.removing and views["default.s2"].slots.tasks == ["running-task"]
    assert not views["default.s2"].usable

    # Once its scan ends, the next reload removes it for good.
    assert await capacity.release(runtime.capacity, "default.s2", "running-task")
    final = await sync_registry(runtime.registry, runtime.capacity, fleet(scanner("s1", 4, enabled=False)))
    assert final.removed == ["default.s2"]
    views = {v.key: v for v in await fleet_view(runtime.registry, runtime.capacity, runtime.agents)}
    assert set(views) == {"default.s1"}
    assert "default.s2" not in await capacity.read_all(runtime.capacity)
