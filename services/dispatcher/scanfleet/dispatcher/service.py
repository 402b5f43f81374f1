"""The dispatcher: holds each pool's waiting requests and hands them to scanners with free slots.

One dispatcher is active at a time (a leader lease in KV); standbys wait to take over.
Requests stay unacknowledged in SCAN_REQUESTS while they wait (kept alive by in-progress
acks), so a dispatcher crash loses nothing: the server redelivers them to the next one.
The order of writes makes every step safe to repeat after a crash:
reserve slot (CAS) → task queued→dispatched (CAS) → publish assignment (msg id) → ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from scanfleet.common import capacity, contract, ops_http, queue_order
from scanfleet.common.aio import honour_cancel
from scanfleet.common.bus import dead_letter_for, ensure_consumer, publish, pull
from scanfleet.common.config import SchedulingRules, Settings, load_fleet
from scanfleet.common.contract import EventKind, instance_key
from scanfleet.common.lease import Lease
from scanfleet.common.logs import task_context
from scanfleet.common.messages import Assignment, ScanRequest, decode, encode, utcnow
from scanfleet.common.mirror import FleetMirror
from scanfleet.common.registry import read_fleet_meta, sync_registry
from scanfleet.common.runtime import Runtime, run, service_runtime, wait_stopping
from scanfleet.common.tasks import IllegalTransition, TaskNotFound, TaskRecord, TaskState
from scanfleet.common.telemetry import consumer_span
from scanfleet.common.windows import ScanWindows
from scanfleet.dispatcher import metrics
from scanfleet.dispatcher.routing import Candidate, Decision, Waiting, order, plan_shares, snapshot
from scanfleet.dispatcher.stats import PoolStatsTracker

log = logging.getLogger("scanfleet.dispatcher")

LEASE_KEY = "dispatcher"
# The published waiting order: at most this often per pool, when it changed; re-put this often
# regardless, so the gateway tells a live snapshot from one a stopped dispatcher left.
ORDER_EVERY = 0.5
ORDER_REFRESH = queue_order.STALE_AFTER_S / 3
ORDER_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass
class Held:
    msg: Msg
    request: ScanRequest
    seq: int
    # The task record and revision read on arrival, for the dispatched CAS to start from
    # (used once: the write mutates it).
    known: tuple[TaskRecord, int] | None = None
    # Scan windows: the request may not start before ``not_before`` (epoch s); the answer
    # holds until ``recheck_at`` (a window starts or ends).
    not_before: float = 0.0
    recheck_at: float = 0.0

    planned: Waiting | None = None

    def waiting(self, task_id: str, held_by: str | None, not_before: float) -> Waiting:
        """What the policy sees of this request, built once unless its slot or window changed."""
        w = self.planned
        if w is None or w.held_by != held_by or w.not_before != not_before:
            request = self.request
            w = self.planned = Waiting(
                task_id=task_id,
                seq=self.seq,
                instance=request.scanner_instance,
                held_by=held_by,
                client=request.submitted_by or "",
                priority=request.priority,
                weight=request.weight,
                submitted=request.submitted_at.timestamp(),
                not_before=not_before,
            )
        return w


class PoolDispatcher:
    def __init__(
        self, rt: Runtime, mirror: FleetMirror, pool: str, windows: Callable[[], ScanWindows] = ScanWindows
    ) -> None:
        self.rt = rt
        self.keepalive_every = rt.settings.dispatch_ack_wait / 4
        self.mirror = mirror
        self.pool = pool
        self.windows = windows
        self._windows_seen: ScanWindows | None = None
        self.waiting: dict[str, Held] = {}
        # The submitting client of each request seen, so slots held count towards fair shares,
        # and each waiting client's virtual time (fair queueing; see routing rule (e)).
        self.clients: dict[str, str] = {}
        self.served: dict[str, float] = {}
        self.wake = asyncio.Event()
        self.woken_at: float | None = None
        # Set by each plan and whenever the waiting set changes: the order is published again.
        self.order_dirty = True

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._fetch_loop())
                tg.create_task(self._keepalive_loop())
                tg.create_task(self._schedule_loop())
                tg.create_task(self._order_loop())
        finally:
            await self._hand_back()

    async def _hand_back(self) -> None:
        """On stepping down, nak what we hold so the next dispatcher gets it at once."""
        held, self.waiting = self.waiting, {}
        for h in held.values():
            with contextlib.suppress(Exception):
                await h.msg.nak()

    async def _fetch_loop(self) -> None:
        durable = contract.dispatch_consumer_name(self.pool)
        async for msgs in pull(self.rt.js, contract.REQUESTS_STREAM, durable, batch=200, wait=1.0):
            for msg in msgs:
                await self._accept(msg)
            self.poke()

    async def _accept(self, msg: Msg) -> None:
        try:
            request = decode(msg.data, ScanRequest)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            await self._reject(msg, None, "unparseable", f"cannot decode scan request: {exc}")
            return
        with task_context(request.task_id, request.trace_id):
            try:
                record, revision = await self.rt.tasks.read(request.task_id)
            except TaskNotFound:
                await self._reject(msg, request.task_id, "unknown_task", "no task record for this request")
                return
            if record.state is TaskState.DISPATCHED and record.instance:
                await self._publish_assignment(record, request)
                await msg.ack()
                return
            if record.state is not TaskState.QUEUED:
                log.info("dropping request of task in state %s", record.state)
                if record.state.terminal:
                    await self._release_any(request.task_id)
                await msg.ack()
                return
            seq = msg.metadata.sequence.stream if msg.metadata else 0
            self.waiting[request.task_id] = Held(msg, request, seq, known=(record, revision))
            self.clients[request.task_id] = request.submitted_by or ""
            self.order_dirty = True

    async def forget(self, task_id: str) -> None:
        """A task cancelled while it waited: drop its request before it is ever planned."""
        held = self.waiting.pop(task_id, None)
        if held is not None:
            self.order_dirty = True
            log.info("task %s was cancelled while waiting; dropping its request", task_id)
            with contextlib.suppress(Exception):
                await held.msg.ack()

    async def _release_any(self, task_id: str) -> None:
        """A slot reserved just before a crash for a task that then ended must not leak."""
        for view in self.mirror.views():
            if view.entry.pool == self.pool and task_id in view.slots.tasks:
                await capacity.release(self.rt.capacity, view.key, task_id)

    async def _reject(self, msg: Msg, task_id: str | None, reason: str, error: str) -> None:
        log.error("dead-lettering request: %s", error)
        await self.rt.dead_letter(
            dead_letter_for(msg, stage="dispatch", reason=reason, error=error, task_id=task_id, keep_original=True)
        )
        await msg.term()

    async def _keepalive_loop(self) -> None:
        while True:
            honour_cancel()
            await asyncio.sleep(self.keepalive_every)
            for held in list(self.waiting.values()):
                with contextlib.suppress(Exception):
                    await held.msg.in_progress()

    def poke(self) -> None:
        """Something changed that may let a waiting request go: plan again soon."""
        if not self.wake.is_set():
            self.woken_at = time.perf_counter()
            self.wake.set()

    async def _schedule_loop(self) -> None:
        while True:
            honour_cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.wake.wait()
            self.wake.clear()
            woken_at, self.woken_at = self.woken_at or time.perf_counter(), None
            if self.waiting:
                await self._schedule_once(woken_at)

    async def _order_loop(self) -> None:
        """Publish the pool's waiting order as the policy sees it (``queue_order``), so the
        gateway places a task by priority and share without asking the dispatcher."""
        published, published_at = b"", 0.0
        while True:
            honour_cancel()
            await asyncio.sleep(ORDER_EVERY)
            fresh = time.monotonic() - published_at < ORDER_REFRESH
            if not self.order_dirty and fresh:
                continue
            self.order_dirty = False
            current = await self._order_snapshot()
            body = queue_order.encode(msgspec.structs.replace(current, at=ORDER_EPOCH))
            if body == published and fresh:
                continue
            try:
                await self.rt.pool_stats.put(contract.pool_order_key(self.pool), queue_order.encode(current))
            except Exception as exc:
                log.warning("could not publish the waiting order of pool %s: %s", self.pool, exc)
                self.order_dirty = True
                continue
            published, published_at = body, time.monotonic()

    async def _order_snapshot(self) -> queue_order.QueueOrder:
        _, holders = self._candidates()
        now = self.rt.now()
        waiting = [h.waiting(t, holders.get(t), self._not_before(h, now)) for t, h in self.waiting.items()]
        running = await self._running_clients(holders)
        ordered = order(
            waiting,
            running=running,
            served=self.served,
            now=now.timestamp(),
            aging=self.rt.settings.priority_aging,
            limit=queue_order.MAX_LISTED,
        )
        return snapshot(self.pool, ordered, depth=len(waiting), at=utcnow(), running=running, served=self.served)

    def _candidates(self) -> tuple[list[Candidate], dict[str, str]]:
        views = [v for v in self.mirror.views() if v.entry.pool == self.pool]
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
        return candidates, holders

    def _not_before(self, held: Held, now: datetime) -> float:
        """When a scan window lets the request start (0: now), cached until a window changes."""
        stamp = now.timestamp()
        windows, targets = self.windows(), held.request.targets
        if windows is not self._windows_seen:
            self._windows_seen = windows
            for h in self.waiting.values():
                h.recheck_at = 0.0
        if stamp < held.recheck_at:
            return held.not_before
        hold = windows.held(self.pool, targets, now)
        if hold is not None:
            held.not_before = held.recheck_at = hold.until.timestamp()
        else:
            nxt = windows.next_start(self.pool, targets, now)
            held.not_before = 0.0
            held.recheck_at = nxt.timestamp() if nxt is not None else stamp + 60.0
        return held.not_before

    async def _running_clients(self, holders: dict[str, str]) -> dict[str, int]:
        """Slots each client holds in the pool; clients of tasks not seen here are read once."""
        unknown = [t for t in holders if t not in self.clients]
        if unknown:
            records = await asyncio.gather(*(self.rt.tasks.get(t) for t in unknown))
            for task_id, record in zip(unknown, records, strict=True):
                self.clients[task_id] = (record.submitted_by if record else None) or ""
        if len(self.clients) > 2 * (len(holders) + len(self.waiting)) + 64:
            for task_id in [t for t in self.clients if t not in holders and t not in self.waiting]:
                del self.clients[task_id]
        running: dict[str, int] = {}
        for task_id in holders:
            client = self.clients[task_id]
            running[client] = running.get(client, 0) + 1
        return running

    async def _schedule_once(self, woken_at: float) -> None:
        """Plan over the mirror, then carry the plan out: scanners in parallel, each one's
        decisions in order (so they do not race each other for the same slot record)."""
        candidates, holders = self._candidates()
        now = self.rt.now()
        waiting = [h.waiting(t, holders.get(t), self._not_before(h, now)) for t, h in self.waiting.items()]
        running = await self._running_clients(holders)
        per_scanner: dict[str, list[Decision]] = {}
        decisions, served = plan_shares(
            waiting,
            candidates,
            running=running,
            served=self.served,
            now=now.timestamp(),
            aging=self.rt.settings.priority_aging,
        )
        started = {d.task_id for d in decisions}
        still = {w.client for w in waiting if w.task_id not in started and w.held_by is None}
        self.served = {c: v for c, v in served.items() if c in still}
        self.order_dirty = True
        for decision in decisions:
            per_scanner.setdefault(decision.instance, []).append(decision)

        async def carry_out(decisions: list[Decision]) -> bool:
            slots = self.mirror.slots_of(instance_key(self.pool, decisions[0].instance))
            for decision in decisions:
                if not await self._assign(decision, woken_at, slots):
                    return False
                slots = None  # the mirror has not seen our own write yet
            return True

        async with asyncio.TaskGroup() as tg:
            runs = [tg.create_task(carry_out(decisions)) for decisions in per_scanner.values()]
        if not all(run.result() for run in runs):
            self.poke()

    async def _assign(self, decision: Decision, woken_at: float, slots: tuple[capacity.Slots, int] | None) -> bool:
        """Reserve, mark dispatched, publish, ack: False when the slot was gone (plan again).

        A task cancelled while it waited is normally forgotten on its cancelled event; one
        whose event was missed is caught by the dispatched CAS, and its slot goes straight back."""
        held = self.waiting[decision.task_id]
        request = held.request
        key = instance_key(self.pool, decision.instance)
        with task_context(request.task_id, request.trace_id):
            if not decision.already_reserved and not await capacity.reserve(
                self.rt.capacity, key, request.task_id, known=slots
            ):
                return False

            def dispatched(record: TaskRecord) -> None:
                record.instance = decision.instance
                record.dispatch_attempts += 1
                record.claimed_by = None  # a new dispatch: no agent has claimed this one yet

            with consumer_span(
                held.msg,
                "dispatch scan",
                trace_id=request.trace_id,
                attributes={
                    "scanfleet.task_id": request.task_id,
                    "scanfleet.pool": self.pool,
                    "scanfleet.scanner": key,
                },
            ):
                known, held.known = held.known, None
                try:
                    record = await self.rt.tasks.transition(
                        request.task_id, TaskState.DISPATCHED, dispatched, known=known
                    )
                except (IllegalTransition, TaskNotFound) as exc:
                    log.info("task left the queue before dispatch (%s); releasing its slot", exc)
                    await capacity.release(self.rt.capacity, key, request.task_id)
                    with contextlib.suppress(Exception):
                        await held.msg.ack()
                    self.waiting.pop(request.task_id, None)
                    self.poke()  # the slot planned for it is free again
                    return True
                await self._publish_assignment(record, request)
                metrics.DISPATCH_LATENCY.labels(self.pool).observe(time.perf_counter() - woken_at)
                await held.msg.ack()
                self.waiting.pop(request.task_id, None)
                await self.rt.publish_event(record, EventKind.DISPATCHED, detail=decision.instance)
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
        headers = {
            contract.HDR_MSG_ID: contract.assignment_msg_id(record.task_id, record.dispatch_attempts),
            contract.HDR_TASK_ID: record.task_id,
        }
        subject = contract.assignment_subject(record.pool, record.instance, record.task_id)
        await publish(self.rt.js, subject, encode(assignment), headers)


class Dispatcher:
    """The process: registry upkeep, the leader lease, and one PoolDispatcher per pool while leading."""

    def __init__(self, rt: Runtime, settings: Settings, *, lead: bool = True) -> None:
        self.rt = rt
        self.settings = settings
        self.lead = lead
        self.mirror = FleetMirror(rt.registry, rt.capacity, rt.agents)
        self.lease_ttl = settings.dispatcher_lease_ttl
        self.lease = Lease(rt.leases, LEASE_KEY, f"dispatcher-{uuid.uuid4().hex[:8]}", ttl=self.lease_ttl)
        self.pools: dict[str, asyncio.Task[None]] = {}
        self.dispatchers: dict[str, PoolDispatcher] = {}
        self.reload_requested = asyncio.Event()
        self.windows = ScanWindows()
        self.rules = SchedulingRules()

    async def mirror_ready(self) -> bool:
        m = self.mirror
        return m.registry.ready.is_set() and m.slots.ready.is_set() and m.agents.ready.is_set()

    async def reload(self) -> None:
        """Re-read scanners.yaml: new scanners and pools, limits, enabled flags, removals."""
        fleet = load_fleet(self.settings.require_scanners_file())
        report = await sync_registry(self.rt.registry, self.rt.capacity, fleet)
        for stream, consumer in fleet.topology(self.settings.dispatch_ack_wait).consumers():
            await ensure_consumer(self.rt.js, stream, consumer)
        log.info("reloaded scanners.yaml: %s", report.describe())

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.mirror.run())
            tg.create_task(self._reload_loop())
            tg.create_task(PoolStatsTracker(self.rt, active=lambda: bool(self.pools)).run())
            await self.mirror.wait_ready()
            tg.create_task(self._lead_loop())
            tg.create_task(self._wake_loop())
            tg.create_task(self._forget_cancelled())

    async def _wake_loop(self) -> None:
        """Any change to registry, slots or leases may let a waiting request go: re-plan."""
        while True:
            await self.mirror.changed.wait()
            self.mirror.changed.clear()
            for dispatcher in self.dispatchers.values():
                dispatcher.poke()

    async def _forget_cancelled(self) -> None:
        """Follow cancelled events (core NATS: a missed one only costs the CAS fallback)."""
        sub = await self.rt.nc.subscribe(contract.kind_events_filter(EventKind.CANCELLED))
        try:
            async for msg in sub.messages:
                task_id = contract.task_of_event(msg.subject)
                if task_id is None:
                    continue
                for dispatcher in list(self.dispatchers.values()):
                    await dispatcher.forget(task_id)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _reload_loop(self) -> None:
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            try:
                await self.reload()
            except Exception as exc:
                log.error("reload failed, keeping the current fleet: %s", exc)

    async def _refresh_windows(self) -> None:
        """Scan windows as published in the registry's fleet meta (kept on a bad read)."""
        try:
            meta = await read_fleet_meta(self.rt.registry)
            if meta is not None and meta.rules != self.rules:
                self.windows, self.rules = meta.rules.scan_windows(), meta.rules
        except Exception as exc:
            log.warning("could not read the scan windows; keeping the current ones: %s", exc)

    async def _lead_loop(self) -> None:
        try:
            while True:
                honour_cancel()
                await self._refresh_windows()
                leading = await self._hold_lease()
                if leading:
                    self._ensure_pools()
                elif self.pools:
                    log.warning("lost the dispatcher lease; standing down")
                    await self._stop_pools()
                await asyncio.sleep(self.lease_ttl / 5)
        finally:
            await self._stop_pools()
            if self.lead:
                with contextlib.suppress(Exception):
                    await self.lease.release()

    async def _hold_lease(self) -> bool:
        """Renew or take the lease; while NATS does not answer (a cluster failing over), lead on
        only as long as the lease last written is surely ours."""
        if not self.lead:
            return True
        # A renewal left hanging must not outlast the lease: the pools dispatch while it hangs.
        within = max(0.5, self.lease.expires_at - self.lease.ttl / 5 - time.time()) if self.lease.held else None
        try:
            async with asyncio.timeout(within):
                return await (self.lease.renew() if self.lease.held else self.lease.try_acquire())
        except (NatsError, TimeoutError) as exc:
            ours = self.lease.still_ours()
            log.warning("dispatcher lease not renewed (%s); %s", exc, "leading on" if ours else "standing down")
            return ours

    def _ensure_pools(self) -> None:
        """Start a dispatcher for every pool, and restart any that died (logging why)."""
        for pool, task in list(self.pools.items()):
            if task.done():
                error = None if task.cancelled() else task.exception()
                log.error("pool %s dispatcher stopped (%r); restarting it", pool, error)
                del self.pools[pool]
        pools = {v.entry.pool for v in self.mirror.views()}
        for pool in sorted(pools - set(self.pools)):
            dispatcher = PoolDispatcher(self.rt, self.mirror, pool, lambda: self.windows)
            self.dispatchers[pool] = dispatcher
            self.pools[pool] = asyncio.create_task(dispatcher.run(), name=f"pool-{pool}")
            log.info("dispatching for pool %s", pool)

    async def _stop_pools(self) -> None:
        tasks, self.pools = self.pools, {}
        self.dispatchers = {}
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def serve(settings: Settings) -> None:
    fleet = load_fleet(settings.require_scanners_file())
    async with service_runtime("dispatcher", settings, topology=fleet.topology(settings.dispatch_ack_wait)) as rt:
        await sync_registry(rt.registry, rt.capacity, fleet)
        dispatcher = Dispatcher(rt, settings, lead=settings.dispatcher_lease)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, dispatcher.reload_requested.set)
        async with ops_http.serving(
            rt,
            checks={"fleet_mirror": dispatcher.mirror_ready},
            refresh=[lambda: metrics.refresh(rt, dispatcher.mirror.views())],
        ):
            await wait_stopping(rt, asyncio.create_task(dispatcher.run()))


def main() -> int:
    return run("dispatcher", serve)
