"""A moving average of scan durations per pool, for queue wait estimates.

The origin system assumed 15 minutes per queue position. Here every terminal task that
ran updates its pool's exponentially weighted average, kept in KV ``scan_pool_stats`` so
the gateway can estimate waits without asking the dispatcher.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import msgspec
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyWrongLastSequenceError

from scanfleet.common import contract
from scanfleet.common.aio import honour_cancel
from scanfleet.common.bus import UNANSWERED, kv_create, kv_get
from scanfleet.common.contract import EventKind
from scanfleet.common.messages import utcnow
from scanfleet.common.runtime import Runtime

log = logging.getLogger("scanfleet.dispatcher")

ALPHA = 0.2


class PoolStats(msgspec.Struct, kw_only=True):
    avg_duration_s: float
    samples: int
    updated_at: datetime


def updated(current: PoolStats | None, duration: float) -> PoolStats:
    if current is None or current.samples == 0:
        return PoolStats(avg_duration_s=duration, samples=1, updated_at=utcnow())
    average = ALPHA * duration + (1 - ALPHA) * current.avg_duration_s
    return PoolStats(avg_duration_s=average, samples=current.samples + 1, updated_at=utcnow())


async def read_pool_stats(rt: Runtime, pool: str) -> PoolStats | None:
    entry = await kv_get(rt.pool_stats, pool)
    return msgspec.json.decode(entry.value, type=PoolStats) if entry is not None and entry.value else None


async def record_duration(rt: Runtime, pool: str, duration: float) -> None:
    for _ in range(10):
        entry = await kv_get(rt.pool_stats, pool)
        current = msgspec.json.decode(entry.value, type=PoolStats) if entry is not None and entry.value else None
        value = msgspec.json.encode(updated(current, duration))
        try:
            if entry is None:
                await kv_create(rt.pool_stats, pool, value)
            else:
                await rt.pool_stats.update(pool, value, last=entry.revision)
            return
        except KeyWrongLastSequenceError:
            continue


class PoolStatsTracker:
    """Follows completions from now on (an ephemeral ordered consumer) and folds in durations.

    Only completed scans count: a cancelled or failed scan says little about how long the
    next one will hold a slot. ``active`` tells a standby dispatcher not to double-count.
    """

    def __init__(self, rt: Runtime, active: Callable[[], bool]) -> None:
        self.rt = rt
        self.active = active

    async def run(self) -> None:
        sub = await self.rt.js.subscribe(
            contract.kind_events_filter(EventKind.COMPLETED), ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        while True:
            honour_cancel()
            try:
                msg = await sub.next_msg(timeout=30)
            except (NatsTimeout, TimeoutError):
                continue
            if not self.active():
                continue
            try:
                await self._fold_in(msg.subject)
            except UNANSWERED as exc:
                # A cluster electing a leader: one sample less, never a dead dispatcher.
                log.warning("scan duration not recorded (%s)", type(exc).__name__)

    async def _fold_in(self, subject: str) -> None:
        task_id = contract.task_of_event(subject)
        record = await self.rt.tasks.get(task_id) if task_id else None
        if record is None or record.dispatched_at is None or record.finished_at is None:
            return
        duration = (record.finished_at - record.dispatched_at).total_seconds()
        await record_duration(self.rt, record.pool, duration)
