"""An agent process follows scanners.yaml live: a reload adds, reconnects and lets go of scanners."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scanfleet.agent.fleet import AgentFleet, select
from scanfleet.agent.instance import credential_resolver
from scanfleet.common import capacity
from scanfleet.common.config import load_fleet
from scanfleet.common.messages import Heartbeat
from scanfleet.common.registry import sync_registry
from scanfleet.common.runtime import Runtime
from scanfleet.emulator.app import create_app
from tests.helpers import ACCESS_KEY, SECRET_KEY, make_config, serving, watch_until


@pytest.fixture
async def emulator_url() -> AsyncIterator[str]:
    async with serving(create_app(make_config())) as url:
        yield url


def write(path: Path, url: str, *ids: str, secret: str = SECRET_KEY) -> None:
    scanners = [{"id": i, "url": url, "auth": {"access_key": ACCESS_KEY, "secret_key": secret}} for i in ids]
    path.write_text(yaml.safe_dump({"version": 1, "pools": {"default": {"scanners": scanners}}}))


async def beat_of(rt: Runtime, key: str, check: Callable[[Heartbeat], bool]) -> Heartbeat:
    return await watch_until(rt.agents, key, Heartbeat, check, within=15.0)


async def reload(rt: Runtime, path: Path) -> None:
    """What ``scanfleet reload`` does: apply the file to the registry."""
    await sync_registry(rt.registry, rt.capacity, load_fleet(path))


async def test_a_reload_adds_reconnects_and_lets_go_of_scanners(
    runtime: Runtime, emulator_url: str, tmp_path: Path
) -> None:
    rt = runtime
    path = tmp_path / "scanners.yaml"
    write(path, emulator_url, "s1")
    await reload(rt, path)
    instances, _ = select(load_fleet(path), None)
    fleet = AgentFleet(
        rt, instances, agent_id="a1", credentials=credential_resolver(rt.settings), load=lambda: load_fleet(path)
    )
    running = asyncio.create_task(fleet.run())
    try:
        await beat_of(rt, "default.s1", lambda b: b.authenticated)

        write(path, emulator_url, "s1", "s2")
        await reload(rt, path)
        beat = await beat_of(rt, "default.s2", lambda b: b.authenticated and b.scan_api)
        assert beat.agent_id == "a1"

        # New keys for s1: its agent reconnects with them (and the scanner refuses them).
        write(path, emulator_url, "s1", "s2", secret="0" * 64)
        await reload(rt, path)
        await beat_of(rt, "default.s1", lambda b: b.reachable and not b.authenticated)
        assert fleet.agents["default.s1"].scanner.auth.secret_key == "0" * 64

        # A scanner with work in hand is not cut off; it is let go once idle.
        write(path, emulator_url, "s1")
        fleet.agents["default.s2"].work["busy-task"] = object()  # type: ignore[assignment]
        fleet.reload()
        await fleet.apply()
        assert "default.s2" in fleet.agents
        del fleet.agents["default.s2"].work["busy-task"]
        await fleet.apply()
        assert set(fleet.agents) == {"default.s1"}

        # A broken file keeps the scanners being served.
        path.write_text("pools: [not a mapping")
        fleet.reload()
        await fleet.apply()
        assert set(fleet.agents) == {"default.s1"}
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert fleet.agents == {}


async def test_a_crashed_instance_agent_is_restarted(runtime: Runtime, emulator_url: str, tmp_path: Path) -> None:
    rt = runtime
    path = tmp_path / "scanners.yaml"
    write(path, emulator_url, "s1")
    await reload(rt, path)
    await capacity.ensure_limit(rt.capacity, "default.s1", 2)
    instances, _ = select(load_fleet(path), None)
    fleet = AgentFleet(
        rt, instances, agent_id="a1", credentials=credential_resolver(rt.settings), load=lambda: load_fleet(path)
    )
    await fleet.apply()
    first = fleet.agents["default.s1"]
    crashed = fleet.tasks["default.s1"]

    async def boom() -> Any:
        raise RuntimeError("agent bug")

    crashed.cancel()
    await asyncio.gather(crashed, return_exceptions=True)
    fleet.tasks["default.s1"] = asyncio.create_task(boom())
    await asyncio.gather(fleet.tasks["default.s1"], return_exceptions=True)
    await fleet.apply()
    assert fleet.agents["default.s1"] is not first
    assert not fleet.tasks["default.s1"].done()
    await fleet.stop_all()
