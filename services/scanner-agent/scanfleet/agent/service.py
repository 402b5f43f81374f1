"""The scanner agent: owns the assignments of its scanner instances and drives Nessus.

An assignment stays unacknowledged for the whole scan, refreshed by in-progress acks, so
if the agent dies the server redelivers it. Every step records what it did in the task
record first (the Nessus scan id above all), so a redelivered assignment adopts the scan
already on the scanner instead of launching a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import msgspec
from nats.aio.msg import Msg

from scanfleet.agent.lifecycle import Lifecycle, PermanentFailure
from scanfleet.agent.nessus import NessusClient, NessusError
from scanfleet.common import capacity, contract
from scanfleet.common.config import FleetConfig, ScannerConfig, Settings, load_fleet
from scanfleet.common.contract import instance_key
from scanfleet.common.logs import task_context
from scanfleet.common.messages import Assignment, Heartbeat, decode, encode, utcnow
from scanfleet.common.runtime import (
    Runtime,
    dead_letter_for,
    keep_in_progress,
    pull,
    run,
    service_runtime,
    wait_stopping,
)
from scanfleet.common.tasks import IllegalTransition, TaskState
from scanfleet.common.telemetry import extract_context, tracer

log = logging.getLogger("scanfleet.agent")
_tracer = tracer("scanfleet.agent")


def client_for(scanner: ScannerConfig) -> NessusClient:
    verify: bool | str = scanner.ca_bundle or scanner.tls_verify
    return NessusClient(
        scanner.url,
        access_key=scanner.auth.access_key,
        secret_key=scanner.auth.secret_key,
        username=scanner.auth.username,
        password=scanner.auth.password,
        verify=verify,
    )


class InstanceAgent:
    """Serves one scanner instance: its heartbeat lease and its assignment consumer."""

    def __init__(self, rt: Runtime, pool: str, scanner: ScannerConfig, agent_id: str) -> None:
        self.rt = rt
        self.pool = pool
        self.scanner = scanner
        self.agent_id = agent_id
        self.key = instance_key(pool, scanner.id)
        self.running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        async with client_for(self.scanner) as client:
            self.client = client
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._heartbeat_loop())
                tg.create_task(self._consume_loop())

    async def probe(self) -> Heartbeat:
        beat = Heartbeat(
            pool=self.pool,
            instance=self.scanner.id,
            agent_id=self.agent_id,
            at=utcnow(),
            reachable=False,
            authenticated=False,
            scan_api=False,
        )
        try:
            props = await self.client.server_properties()
        except NessusError as exc:
            beat.reachable = exc.status_code is not None
            beat.error = str(exc)
            return beat
        beat.reachable = beat.authenticated = True
        beat.scan_api = props.scan_api
        beat.version = props.version
        if not props.scan_api:
            beat.error = "scan API not available on this scanner (licence); launches are not routed here"
        return beat

    async def _heartbeat_loop(self) -> None:
        beat = await self.probe()
        probed = asyncio.get_running_loop().time()
        while True:
            if not self.scanner.enabled:
                beat.error = "disabled in scanners.yaml"
            beat.at = utcnow()
            await self.rt.agents.put(self.key, encode(beat))
            await asyncio.sleep(contract.AGENT_HEARTBEAT_INTERVAL)
            if asyncio.get_running_loop().time() - probed > 30.0 or not beat.scan_api:
                beat = await self.probe()
                probed = asyncio.get_running_loop().time()

    async def _consume_loop(self) -> None:
        durable = contract.agent_consumer_name(self.pool, self.scanner.id)
        async for msgs in pull(self.rt, contract.ASSIGNMENTS_STREAM, durable, batch=10):
            for msg in msgs:
                task = asyncio.create_task(self.handle(msg))
                self.running.add(task)
                task.add_done_callback(self.running.discard)

    async def handle(self, msg: Msg) -> None:
        try:
            assignment = decode(msg.data, Assignment)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            await self._give_up(msg, None, None, "unparseable", f"cannot decode assignment: {exc}")
            return
        keepalive = asyncio.create_task(keep_in_progress(msg, contract.AGENT_ACK_WAIT / 4))
        try:
            with (
                task_context(assignment.task_id, assignment.trace_id),
                _tracer.start_as_current_span(
                    "run scan",
                    context=extract_context(msg.headers),
                    attributes={"scanfleet.task_id": assignment.task_id, "scanfleet.scanner": self.key},
                ),
            ):
                await self._run(msg, assignment)
        finally:
            keepalive.cancel()

    async def _run(self, msg: Msg, assignment: Assignment) -> None:
        lifecycle = Lifecycle(self.rt, self.client, assignment, poll_interval=self.rt.settings.poll_interval)
        try:
            await lifecycle.run()
        except PermanentFailure as exc:
            await self._fail(msg, assignment, exc.reason, str(exc))
            return
        except IllegalTransition as exc:
            log.info("task moved to %s elsewhere; dropping assignment", exc.current)
            if exc.current.terminal:
                await capacity.release(self.rt.capacity, self.key, assignment.task_id)
        await msg.ack()

    async def _fail(self, msg: Msg, assignment: Assignment, reason: str, error: str) -> None:
        log.error("scan failed: %s", error)

        def failed(record: object) -> None:
            record.error = error  # type: ignore[attr-defined]
            record.error_reason = reason  # type: ignore[attr-defined]

        with contextlib.suppress(IllegalTransition):
            record = await self.rt.tasks.transition(assignment.task_id, TaskState.FAILED, failed)
            await self.rt.publish_event(record, "failed", detail=error)
        await capacity.release(self.rt.capacity, self.key, assignment.task_id)
        await self._give_up(msg, assignment.task_id, assignment.trace_id, reason, error)

    async def _give_up(self, msg: Msg, task_id: str | None, trace_id: str | None, reason: str, error: str) -> None:
        """Dead-letter first, then terminate: +TERM removes the message from the work queue."""
        await self.rt.dead_letter(
            dead_letter_for(
                msg, stage="agent", reason=reason, error=error, task_id=task_id, trace_id=trace_id, keep_original=True
            )
        )
        if msg.reply:
            await self.rt.nc.publish(msg.reply, f"+TERM {reason}".encode())


def selected_instances(fleet: FleetConfig, selector: str | None) -> list[tuple[str, ScannerConfig]]:
    """``pool/instance`` names separated by commas, or every configured instance."""
    instances = fleet.instances()
    if not selector:
        return instances
    wanted = {s.strip() for s in selector.split(",") if s.strip()}
    chosen = [(p, s) for p, s in instances if f"{p}/{s.id}" in wanted]
    unknown = wanted - {f"{p}/{s.id}" for p, s in chosen}
    if unknown:
        valid = ", ".join(f"{p}/{s.id}" for p, s in instances)
        raise SystemExit(f"unknown scanner instances {sorted(unknown)}; valid: {valid}")
    return chosen


async def serve(settings: Settings) -> None:
    fleet = load_fleet(settings.require_scanners_file())
    instances = selected_instances(fleet, settings.agent_instances)
    agent_id = uuid.uuid4().hex[:12]
    async with service_runtime("agent", settings, topology=fleet.topology()) as rt:
        workers = [asyncio.create_task(InstanceAgent(rt, p, s, agent_id).run()) for p, s in instances]
        log.info("agent %s serving %s", agent_id, ", ".join(f"{p}/{s.id}" for p, s in instances))
        await wait_stopping(rt, *workers)


def main() -> int:
    return run("agent", serve)
