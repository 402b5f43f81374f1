"""One scanner's container as its agent keeps it: what the engine says of it, and its restarts.

The agent serving a scanner is the only part of scanfleet that talks to its engine. Operators
ask it over NATS (``contract.scanner_restart_subject``, request-reply: the gateway's admin
route and ``scanfleet scanners restart`` record the call in the audit trail); it answers with
the outcome once the engine has restarted the container. It also restarts on its own when
``containers.auto_restart_due`` says so, recorded in the audit trail as done by ``system``.

The time and author of the last restart attempt travel in the heartbeat, so a restarted
agent carries them over and the once-per-period rule holds across agent restarts too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import msgspec
from nats.aio.msg import Msg

from scanfleet.agent.containers import auto_restart_due, container_status, restart_refusal, unreachable
from scanfleet.agent.engine import EngineError, Engines
from scanfleet.common import audit, contract
from scanfleet.common.config import ContainerConfig
from scanfleet.common.messages import (
    ContainerStatus,
    RestartOutcome,
    RestartRefusal,
    RestartRequest,
    RestartResult,
    decode,
    encode,
    utcnow,
)
from scanfleet.common.runtime import Runtime

log = logging.getLogger("scanfleet.agent")


class ContainerKeeper:
    """``config`` reads the scanner's current ``container`` block (a reload may change it);
    ``busy`` lists the tasks in hand on the scanner; ``stopping`` runs as a restart begins (the
    scanner's failed calls stop counting) and ``restarted`` after every restart the engine
    carried out (the agent resets the circuit and watches the start-up)."""

    def __init__(
        self,
        rt: Runtime,
        pool: str,
        instance: str,
        engines: Engines,
        *,
        config: Callable[[], ContainerConfig | None],
        busy: Callable[[], Awaitable[list[str]]],
        stopping: Callable[[], None],
        restarted: Callable[[], None],
    ) -> None:
        self.rt = rt
        self.pool = pool
        self.instance = instance
        self.engines = engines
        self.config = config
        self.busy = busy
        self.stopping = stopping
        self.restarted = restarted
        self.status: ContainerStatus | None = None
        self.restarting = False
        self.restarted_at: datetime | None = None
        self.restarted_by: str | None = None
        self.automatic: asyncio.Task[None] | None = None

    def restore(self, previous: ContainerStatus | None) -> None:
        if previous is not None:
            self.restarted_at, self.restarted_by = previous.restarted_at, previous.restarted_by

    def _keep(self, status: ContainerStatus) -> ContainerStatus:
        self.status = msgspec.structs.replace(status, restarted_at=self.restarted_at, restarted_by=self.restarted_by)
        return self.status

    # What the engine says ------------------------------------------------------------------

    async def refresh(self) -> ContainerStatus | None:
        """Ask the engine how the container is; an engine that cannot say is reported, not raised."""
        config = self.config()
        if config is None:
            self.status = None
            return None
        try:
            attrs = await self.engines.inspect(config.engine, config.name)
        except EngineError as exc:
            return self._keep(unreachable(config, str(exc)))
        return self._keep(container_status(attrs, name=config.name, engine=config.engine))

    async def _restart(self, config: ContainerConfig, by: str) -> ContainerStatus:
        """The attempt counts (time and author) whether or not it works; raises ``EngineError``."""
        self.restarting = True
        self.restarted_at, self.restarted_by = utcnow(), by
        if self.status is not None:
            self._keep(self.status)  # heartbeats during the restart already name it
        log.warning("%s/%s: restarting container %s for %s", self.pool, self.instance, config.name, by)
        self.stopping()
        try:
            attrs = await self.engines.restart(config.engine, config.name, config.stop_timeout_seconds)
        finally:
            self.restarting = False
        status = self._keep(container_status(attrs, name=config.name, engine=config.engine))
        self.restarted()
        return status

    async def watch(self, every: float) -> None:
        """Keep ``status`` fresh on its own schedule, so a slow engine never holds up a heartbeat."""
        while True:
            await asyncio.sleep(every)
            await self.refresh()

    # Operators' requests --------------------------------------------------------------------

    async def serve(self) -> None:
        """Answer restart requests for this scanner until cancelled."""
        subject = contract.scanner_restart_subject(self.pool, self.instance)
        sub = await self.rt.nc.subscribe(subject, queue=contract.SCANNER_CONTROL_QUEUE)
        try:
            # One task per request: a second request during a restart is answered at once.
            async with asyncio.TaskGroup() as tg:
                async for msg in sub.messages:
                    tg.create_task(self._answer(msg))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _answer(self, msg: Msg) -> None:
        try:
            request = decode(msg.data, RestartRequest)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            log.warning("unreadable restart request on %s: %s", msg.subject, exc)
            return
        try:
            result = await self.handle(request)
        except Exception as exc:  # answer, and keep serving: an agent must not fall over on one request
            log.exception("restart request for %s/%s not handled", self.pool, self.instance)
            why = f"the agent could not handle the request: {type(exc).__name__}: {exc}"
            result = self._result("failed", why, "restart_failed")
        if msg.reply:
            await self.rt.nc.publish(msg.reply, encode(result))

    def _result(
        self, outcome: RestartOutcome, message: str, code: RestartRefusal | None = None, tasks: list[str] | None = None
    ) -> RestartResult:
        return RestartResult(
            pool=self.pool,
            instance=self.instance,
            outcome=outcome,
            code=code,
            message=message,
            tasks=tasks or [],
            container=self.status,
            at=utcnow(),
        )

    async def handle(self, request: RestartRequest) -> RestartResult:
        config = self.config()
        busy = await self.busy() if config is not None else []
        refusal = restart_refusal(config, restarting=self.restarting, busy=busy, force=request.force)
        if refusal is not None or config is None:
            code, message = refusal or ("not_container_managed", "no container")
            return self._result("refused", message, code, busy)
        try:
            status = await self._restart(config, request.requested_by)
        except EngineError as exc:
            return self._result("failed", str(exc), exc.code)
        aborted = f"; {len(busy)} scan(s) in hand were cut off" if busy else ""
        message = f"container {config.name} restarted ({status.state}); the scanner is starting up{aborted}"
        return self._result("restarted", message, None, busy)

    # The system's own restarts ---------------------------------------------------------------

    def consider(self, circuit_opened_at: datetime | None) -> None:
        """Start an automatic restart when one is due (never two at once)."""
        if self.automatic is not None and not self.automatic.done():
            return
        due = auto_restart_due(
            self.config(),
            circuit_opened_at=circuit_opened_at,
            last_restart_at=self.restarted_at,
            restarting=self.restarting,
            now=utcnow(),
        )
        if due and circuit_opened_at is not None:
            self.automatic = asyncio.create_task(self._auto_restart(circuit_opened_at))

    async def _auto_restart(self, opened_at: datetime) -> None:
        config = self.config()
        if config is None or self.restarting:
            return
        minutes = (utcnow() - opened_at).total_seconds() / 60
        why = f"circuit open for {minutes:.1f} min (auto_restart_after_minutes: {config.auto_restart_after_minutes:g})"
        code: str | None = None
        try:
            status = await self._restart(config, contract.SYSTEM_ACTOR)
            outcome = f"restarted ({status.state})"
        except EngineError as exc:
            code, outcome = exc.code, f"failed: {exc}"
        log.warning("%s/%s: automatic restart of %s: %s", self.pool, self.instance, config.name, outcome)
        record = audit.AuditRecord(
            client=contract.SYSTEM_ACTOR,
            interface="agent",
            action=contract.SCANNER_RESTART_ACTION,
            decision="allow",
            code=code,
            reason=f"automatic restart of container {config.name}: {why}; {outcome}",
            pool=self.pool,
            scanner=self.instance,
        )
        try:
            await audit.append(self.rt.js, record)
        except Exception as exc:  # the restart happened; say so in the log at least
            log.error("automatic restart of %s/%s not recorded in the audit trail: %s", self.pool, self.instance, exc)
