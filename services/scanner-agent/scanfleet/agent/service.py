"""The agent process: one InstanceAgent per scanner it serves, kept in step with scanners.yaml."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket

from scanfleet.agent.fleet import AgentFleet, select
from scanfleet.agent.instance import InstanceAgent, credential_resolver
from scanfleet.common import ops_http
from scanfleet.common.config import Settings, load_fleet
from scanfleet.common.runtime import run, service_runtime, wait_stopping

log = logging.getLogger("scanfleet.agent")


async def serve(settings: Settings) -> None:
    scanners_file = settings.require_scanners_file()
    fleet = load_fleet(scanners_file)
    instances, unknown = select(fleet, settings.agent_instances)
    if unknown:
        valid = ", ".join(f"{p}/{s.id}" for p, s in fleet.instances())
        raise SystemExit(f"unknown scanner instances {sorted(unknown)}; valid: {valid}")
    agent_id = settings.agent_id or socket.gethostname()
    async with service_runtime("agent", settings, topology=fleet.topology(settings.dispatch_ack_wait)) as rt:
        agents = AgentFleet(
            rt,
            instances,
            agent_id=agent_id,
            credentials=credential_resolver(settings),
            load=lambda: load_fleet(scanners_file),
            selector=settings.agent_instances,
        )
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, agents.reload_requested.set)
        log.info("agent %s serving %s", agent_id, ", ".join(f"{p}/{s.id}" for p, s in instances))
        async with ops_http.serving(rt, checks={"scanners_reachable": lambda: scanners_reachable(agents.current())}):
            await wait_stopping(rt, asyncio.create_task(agents.run()))


async def scanners_reachable(agents: list[InstanceAgent]) -> bool:
    """Ready once every scanner this agent serves answered its last probe."""
    return all(a.last_beat is not None and a.last_beat.reachable for a in agents)


def main() -> int:
    return run("agent", serve)
