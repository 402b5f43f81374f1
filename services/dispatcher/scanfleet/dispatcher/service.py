"""The dispatcher: holds each pool's waiting requests and hands them to scanners with free slots.

Requests stay unacknowledged in SCAN_REQUESTS while they wait (kept alive by in-progress
acks), so a dispatcher crash loses nothing: the server redelivers them to the next one.
The order of writes makes every step safe to repeat after a crash:
reserve slot (CAS) → task queued→dispatched (CAS) → publish assignment (msg id) → ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import msgspec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout

from scanfleet.common import capacity, contract
from scanfleet.common.config import Settings, load_fleet
from scanfleet.common.contract import instance_key
from scanfleet.common.logs import task_context
from scanfleet.common.messages import Assignment, ScanRequest, decode, encode, utcnow
from scanfleet.common.registry import fleet_view, sync_registry
from scanfleet.common.runtime import Runtime, dead_letter_for, pull, run, service_runtime, wait_stopping
from scanfleet.common.tasks import IllegalTransition, TaskRecord, TaskState
from scanfleet.common.telemetry import extract_context, inject_headers, tracer
from scanfleet.dispatcher.routing import Candidate, Decision, Waiting, plan

log = logging.getLogger("scanfleet.dispatcher")
_tracer = tracer("scanfleet.dispatcher")


@dataclass
class Held:
    msg: Msg
    request: ScanRequest
    seq: int


class PoolDispatcher:
    def __init__(self, rt: Runtime, pool: str) -> None:
        self.rt = rt
        self.pool = pool
        self.waiting: dict[str, Held] = {}
        self.wake = asyncio.Event()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._fetch_loop())
            tg.create_task(self._keepalive_loop())
            tg.create_task(self._schedule_loop())

    async def _fetch_loop(self) -> None:
        durable = contract.dispatch_consumer_name(self.pool)
        async for msgs in pull(self.rt, contract.REQUESTS_STREAM, durable, batch=100):
            for msg in msgs:
                await self._accept(msg)
            self.wake.set()

    async def _accept(self, msg: Msg) -> None:
        try:
            request = decode(msg.data, ScanRequest)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            await self._reject(msg, None, "unparseable", f"cannot decode scan request: {exc}")
            return
        with task_context(request.task_id, request.trace_id):
            record = await self.rt.tasks.get(request.task_id)
            if record is None:
                await self._reject(msg, request.task_id, "unknown_task", "no task record for this request")
                return
            if record.state is TaskState.DISPATCHED and record.instance:
                await self._publish_assignment(record, request)
                await msg.ack()
                return
            if record.state is not TaskState.QUEUED:
                log.info("dropping request of task in state %s", record.state)
                await msg.ack()
                return
            seq = msg.metadata.sequence.stream if msg.metadata else 0
            self.waiting[request.task_id] = Held(msg, request, seq)

    async def _reject(self, msg: Msg, task_id: str | None, reason: str, error: str) -> None:
        log.error("dead-lettering request: %s", error)
        await self.rt.dead_letter(
            dead_letter_for(msg, stage="dispatch", reason=reason, error=error, task_id=task_id, keep_original=True)
        )
        await msg.term()

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(contract.DISPATCH_ACK_WAIT / 4)
            for held in list(self.waiting.values()):
                with contextlib.suppress(Exception):
                    await held.msg.in_progress()

    async def _schedule_loop(self) -> None:
        watcher = await self.rt.capacity.watchall(include_history=False)
        beats = await self.rt.agents.watchall(include_history=False)
        watchers = [
            asyncio.create_task(self._wake_on(watcher)),
            asyncio.create_task(self._wake_on(beats)),
        ]
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=1.0)
                self.wake.clear()
                if self.waiting:
                    await self._schedule_once()
        finally:
            for t in watchers:
                t.cancel()
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
                await beats.stop()  # type: ignore[no-untyped-call]

    async def _wake_on(self, watcher: object) -> None:
        while True:
            try:
                await watcher.updates(timeout=5.0)  # type: ignore[attr-defined]
            except (NatsTimeout, TimeoutError):
                continue
            self.wake.set()

    async def _schedule_once(self) -> None:
        views = [v for v in await fleet_view(self.rt.registry, self.rt.capacity, self.rt.agents)]
        views = [v for v in views if v.entry.pool == self.pool]
        holders = {t: v.entry.instance for v in views for t in v.slots.tasks}
        candidates = [
            Candidate(
                instance=v.entry.instance,
                limit=v.slots.limit,
                active=v.slots.active,
                usable=v.usable,
                last_assigned_at=v.slots.last_assigned_at.timestamp() if v.slots.last_assigned_at else 0.0,
            )
            for v in views
        ]
        waiting = [
            Waiting(task_id=t, seq=h.seq, instance=h.request.scanner_instance, held_by=holders.get(t))
            for t, h in self.waiting.items()
        ]
        for decision in plan(waiting, candidates):
            if not await self._assign(decision):
                self.wake.set()
                return

    async def _assign(self, decision: Decision) -> bool:
        held = self.waiting[decision.task_id]
        request = held.request
        key = instance_key(self.pool, decision.instance)
        with task_context(request.task_id, request.trace_id):
            if not decision.already_reserved and not await capacity.reserve(self.rt.capacity, key, request.task_id):
                return False

            def dispatched(record: TaskRecord) -> None:
                record.instance = decision.instance
                record.dispatch_attempts += 1

            with _tracer.start_as_current_span(
                "dispatch scan",
                context=extract_context(held.msg.headers),
                attributes={"scanfleet.pool": self.pool},
            ):
                try:
                    record = await self.rt.tasks.transition(request.task_id, TaskState.DISPATCHED, dispatched)
                except IllegalTransition as exc:
                    log.info("task left the queue before dispatch (%s); releasing its slot", exc.current)
                    await capacity.release(self.rt.capacity, key, request.task_id)
                    await held.msg.ack()
                    self.waiting.pop(request.task_id, None)
                    return True
                await self._publish_assignment(record, request)
                await held.msg.ack()
                self.waiting.pop(request.task_id, None)
                await self.rt.publish_event(record, "dispatched", detail=decision.instance)
                log.info("assigned to %s", key)
            return True

    async def _publish_assignment(self, record: TaskRecord, request: ScanRequest) -> None:
        assert record.instance is not None
        assignment = Assignment(
            task_id=record.task_id,
            trace_id=record.trace_id,
            pool=record.pool,
            instance=record.instance,
            request=request,
            assigned_at=utcnow(),
        )
        headers = inject_headers(
            {
                contract.HDR_MSG_ID: f"assign:{record.task_id}:{record.dispatch_attempts}",
                contract.HDR_TASK_ID: record.task_id,
            }
        )
        await self.rt.js.publish(
            contract.assignment_subject(record.pool, record.instance, record.task_id),
            encode(assignment),
            headers=headers,
        )


async def serve(settings: Settings) -> None:
    fleet = load_fleet(settings.require_scanners_file())
    async with service_runtime("dispatcher", settings, topology=fleet.topology()) as rt:
        await sync_registry(rt.registry, rt.capacity, fleet)
        workers = [asyncio.create_task(PoolDispatcher(rt, pool).run()) for pool in fleet.pool_names]
        log.info("dispatching for pools %s", ", ".join(fleet.pool_names))
        await wait_stopping(rt, *workers)


def main() -> int:
    return run("dispatcher", serve)
