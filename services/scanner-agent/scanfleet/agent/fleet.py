"""The instance agents of one agent process, kept in step with scanners.yaml while it runs.

``scanfleet reload`` (or SIGHUP to the dispatcher) rewrites the registry in KV; every agent
process watches the registry and then re-reads its own scanners.yaml (SIGHUP to the agent
does the same). A new scanner gets an agent at once. A scanner whose connection settings
(url, keys, TLS) changed gets a fresh agent once it holds no work, so no scan is cut off;
other changes (enabled, labels) apply in place. A scanner dropped from the file is let go
once it holds no work: the registry keeps a draining scanner until its scans have ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from scanfleet.agent.engine import Engines
from scanfleet.agent.instance import InstanceAgent
from scanfleet.agent.secrets import CredentialResolver
from scanfleet.common.aio import cancel_and_wait
from scanfleet.common.config import ConfigError, FleetConfig, ScannerConfig
from scanfleet.common.contract import instance_key
from scanfleet.common.mirror import KvMirror
from scanfleet.common.runtime import Runtime

log = logging.getLogger("scanfleet.agent")

Selection = tuple[list[tuple[str, ScannerConfig]], set[str]]

# How often finished agents are restarted and deferred changes retried without a reload.
TICK = 5.0


def select(fleet: FleetConfig, selector: str | None) -> Selection:
    """The ``pool/instance`` names (comma-separated) this process serves, or all; and the
    selected names the file does not have."""
    instances = fleet.instances()
    if not selector:
        return instances, set()
    wanted = {s.strip() for s in selector.split(",") if s.strip()}
    chosen = [(p, s) for p, s in instances if f"{p}/{s.id}" in wanted]
    return chosen, wanted - {f"{p}/{s.id}" for p, s in chosen}


def connection_of(scanner: ScannerConfig) -> tuple[object, ...]:
    return (scanner.url, scanner.auth, scanner.tls_verify, scanner.ca_bundle)


class AgentFleet:
    def __init__(
        self,
        rt: Runtime,
        instances: list[tuple[str, ScannerConfig]],
        *,
        agent_id: str,
        credentials: CredentialResolver,
        load: Callable[[], FleetConfig],
        selector: str | None = None,
    ) -> None:
        self.rt = rt
        self.agent_id = agent_id
        self.credentials = credentials
        self.load = load
        self.selector = selector
        self.agents: dict[str, InstanceAgent] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.wanted: dict[str, tuple[str, ScannerConfig]] = {}
        self.reload_requested = asyncio.Event()
        self.engines = Engines()
        self._want(instances)

    def current(self) -> list[InstanceAgent]:
        return list(self.agents.values())

    async def run(self) -> None:
        # Every sync rewrites the fleet key, so even a change the registry does not hold
        # (keys, TLS) reaches the agents.
        registry: KvMirror[bytes] = KvMirror(self.rt.registry, bytes)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(registry.run())
                tg.create_task(self._forward(registry.changed))
                while True:
                    await self.apply()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(TICK):
                            await self.reload_requested.wait()
                    if self.reload_requested.is_set():
                        self.reload_requested.clear()
                        self.reload()
        finally:
            await self.stop_all()

    async def _forward(self, changed: asyncio.Event) -> None:
        while True:
            await changed.wait()
            changed.clear()
            self.reload_requested.set()

    def reload(self) -> None:
        """Re-read scanners.yaml; a broken file keeps the current fleet."""
        try:
            fleet = self.load()
        except (ConfigError, OSError) as exc:
            log.error("scanners.yaml not reloaded, keeping the current scanners: %s", exc)
            return
        instances, unknown = select(fleet, self.selector)
        if unknown:
            log.warning("selected scanners not in scanners.yaml (let go once idle): %s", sorted(unknown))
        self._want(instances)

    def _want(self, instances: list[tuple[str, ScannerConfig]]) -> None:
        self.wanted = {instance_key(pool, scanner.id): (pool, scanner) for pool, scanner in instances}

    async def apply(self) -> None:
        """Start, update, restart and let go of agents to match ``wanted``; what would cut off
        work in hand waits for a later round."""
        for key, task in list(self.tasks.items()):
            if task.done():
                error = None if task.cancelled() else task.exception()
                log.error("agent for %s stopped (%r); restarting it", key, error)
                del self.tasks[key], self.agents[key]
        for key, (pool, scanner) in self.wanted.items():
            agent = self.agents.get(key)
            if agent is None:
                self._start(pool, scanner)
            elif connection_of(agent.scanner) != connection_of(scanner):
                if agent.work:
                    log.info("%s: connection settings changed; reconnecting once its scans end", key)
                    continue
                log.info("%s: connection settings changed; reconnecting", key)
                await self._let_go(key)
                self._start(pool, scanner)
            elif agent.scanner != scanner:
                agent.scanner = scanner
                agent.beat_now.set()
        for key in set(self.agents) - set(self.wanted):
            if not self.agents[key].work:
                log.info("%s is no longer in scanners.yaml; its agent stops", key)
                await self._let_go(key)

    def _start(self, pool: str, scanner: ScannerConfig) -> None:
        agent = InstanceAgent(self.rt, pool, scanner, self.agent_id, self.credentials, self.engines)
        self.agents[agent.key] = agent
        self.tasks[agent.key] = asyncio.create_task(agent.run(), name=f"agent-{agent.key}")
        log.info("serving %s/%s", pool, scanner.id)

    async def _let_go(self, key: str) -> None:
        """Stop one agent and wait until it has (its pull subscription goes with it)."""
        self.agents.pop(key)
        await cancel_and_wait(self.tasks.pop(key))

    async def stop_all(self) -> None:
        tasks, self.tasks, self.agents = self.tasks, {}, {}
        await cancel_and_wait(*tasks.values())
        self.engines.close()
