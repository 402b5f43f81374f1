"""Where a request stands in its pool's queue, how long it may wait, and pool load.

Positions come from the waiting order the dispatcher publishes (``queue_order``: by priority
and fair share, as its policy will start them; one bounded KV value whatever the depth); a task
it has not listed yet, such as one just submitted, is placed by replaying the policy over that
snapshot. With no live snapshot (no dispatcher running) they come from SCAN_REQUESTS itself: a
request just queued is the pool's last, at the depth its durable dispatch consumer counts (one
small reply), so submitting never lists the queue; asking later for a waiting task's position
lists the pool's subjects (task ids sort by submission time), a read off the intake path. Wait
estimates use the
pool's usable capacity, its free slots and the moving average of recent scan durations
that the dispatcher keeps in KV ``scan_pool_stats``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.js.errors import NotFoundError

from scanfleet.common import contract, queue_order
from scanfleet.common.bus import kv_get
from scanfleet.common.client_tasks import active_tasks
from scanfleet.common.clients import Role
from scanfleet.common.messages import utcnow
from scanfleet.common.registry import ScannerView, fleet_view
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskRecord
from scanfleet.gateway import views
from scanfleet.gateway.access import Caller, can_see_pool, can_see_task


class PoolStats(msgspec.Struct, kw_only=True):
    avg_duration_s: float
    samples: int


def estimate_wait(position: int | None, free: int, capacity: int, avg_duration: float | None) -> float | None:
    """Seconds until the request at ``position`` (1-based) starts; None when nothing is known.

    The first ``free`` requests start at once; after that each full turn of the pool's usable
    capacity costs one average scan duration.
    """
    if position is None:
        return None
    if position <= free:
        return 0.0
    if avg_duration is None or capacity <= 0:
        return None
    return math.ceil((position - free) / capacity) * avg_duration


def placed(order: queue_order.QueueOrder, task_id: str, record: TaskRecord | None) -> tuple[int | None, int]:
    """(position, depth) of a task from a published order: its index when listed, else where
    the policy would put it as a newcomer (the order does not count it yet, unless truncated)."""
    position = queue_order.position_of(order, task_id)
    if position is not None or record is None:
        return position, order.depth
    listed = len(order.tasks)
    position = queue_order.place(order, record.submitted_by or "", record.priority, record.weight)
    if order.depth > listed:
        return max(position, listed + 1), order.depth
    return position, order.depth + 1


FleetSource = Callable[[], Awaitable[list[ScannerView]]]


class QueueView:
    def __init__(self, rt: Runtime, fleet: FleetSource | None = None) -> None:
        self.rt = rt
        self.fleet: FleetSource = fleet or (lambda: fleet_view(rt.registry, rt.capacity, rt.agents))

    async def depth(self, pool: str) -> int | None:
        """Requests waiting in the pool, counted by its dispatch consumer; None without one."""
        try:
            info = await self.rt.js.consumer_info(contract.REQUESTS_STREAM, contract.dispatch_consumer_name(pool))
        except NotFoundError:
            return None
        return (info.num_pending or 0) + (info.num_ack_pending or 0)

    async def waiting(self, pool: str) -> list[str]:
        """Task ids waiting in the pool, oldest first."""
        info = await self.rt.js.stream_info(
            contract.REQUESTS_STREAM, subjects_filter=contract.pool_request_filter(pool)
        )
        return sorted(filter(None, map(contract.task_of_subject, info.state.subjects or {})))

    async def _depth(self, pool: str) -> int:
        depth = await self.depth(pool)
        return len(await self.waiting(pool)) if depth is None else depth

    async def avg_duration(self, pool: str) -> PoolStats | None:
        entry = await kv_get(self.rt.pool_stats, pool)
        if entry is None or entry.value is None:
            return None
        return msgspec.json.decode(entry.value, type=PoolStats)

    async def published_order(self, pool: str) -> queue_order.QueueOrder | None:
        """The pool's waiting order as the dispatcher last published it; None if none is live."""
        entry = await kv_get(self.rt.pool_stats, contract.pool_order_key(pool))
        if entry is None or not entry.value:
            return None
        try:
            order = queue_order.decode(entry.value)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        return order if (utcnow() - order.at).total_seconds() <= queue_order.STALE_AFTER_S else None

    async def placement(
        self,
        pool: str,
        task_id: str,
        fleet: list[ScannerView] | None = None,
        *,
        record: TaskRecord | None = None,
        just_queued: bool = False,
    ) -> dict[str, Any]:
        """``queue_position`` and ``estimated_wait_seconds`` for a task still in the queue.

        ``record`` (its client, priority, weight) places a task the published order does not
        list yet. ``just_queued``: its request was published a moment ago, so without a live
        order it is last in line, at the pool's depth; nothing is listed.
        """
        fleet = fleet if fleet is not None else await self.fleet()
        members = [v for v in fleet if v.entry.pool == pool and v.usable]
        order = await self.published_order(pool)
        if order is not None and not just_queued and queue_order.position_of(order, task_id) is None:
            # Submitted since the dispatcher last published: several such tasks would all get the
            # newcomer's estimate, so count them in submission order until they are listed.
            order = None
        depth = await self.depth(pool) if order is None and just_queued else None
        if order is not None:
            position, depth = placed(order, task_id, record)
        elif depth is not None:
            position = max(depth, 1)
        else:
            waiting = await self.waiting(pool)
            position = waiting.index(task_id) + 1 if task_id in waiting else None
            depth = len(waiting)
        stats = await self.avg_duration(pool)
        wait = estimate_wait(
            position,
            free=sum(v.slots.free for v in members),
            capacity=sum(v.slots.limit for v in members),
            avg_duration=stats.avg_duration_s if stats else None,
        )
        return {
            "queue_position": position,
            "queue_depth": depth,
            "estimated_wait_seconds": None if wait is None else round(wait, 1),
            "estimate_basis": (
                f"moving average of {stats.samples} recent scan(s) in this pool: {stats.avg_duration_s:.0f}s"
                if stats
                else "no scan has completed in this pool yet"
            ),
        }

    async def pool_status(self, caller: Caller, pool: str | None) -> dict[str, Any]:
        fleet = [v for v in await self.fleet() if can_see_pool(caller, v.entry.pool)]
        names = views.pools_of(fleet) if pool is None else [pool]
        out = []
        for name in names:
            members = [v for v in fleet if v.entry.pool == name]
            stats = await self.avg_duration(name)
            out.append(
                {
                    **views.pool_summary(name, members),
                    "queue_depth": await self._depth(name),
                    "avg_scan_duration_s": round(stats.avg_duration_s, 1) if stats else None,
                    "scanners": [views.scanner_load(v) for v in members],
                }
            )
        return {"pools": out}

    async def queue_status(self, caller: Caller, pool: str | None, limit: int = 5) -> dict[str, Any]:
        """Depth of every pool the caller may use; the waiting tasks listed are only those it may see."""
        fleet = [v for v in await self.fleet() if can_see_pool(caller, v.entry.pool)]
        names = views.pools_of(fleet) if pool is None else [pool]
        dlq = await self.rt.js.stream_info(contract.DLQ_STREAM)
        own = None if caller.role is not Role.AGENT else set(await active_tasks(self.rt.client_tasks, caller.id))
        out = []
        for name in names:
            waiting = await self.waiting(name)
            shown = [(p, t) for p, t in enumerate(waiting, start=1) if own is None or t in own]
            next_tasks = []
            for position, task_id in shown[: max(0, limit)]:
                record = await self.rt.tasks.get(task_id)
                if record is None or not can_see_task(caller, record):
                    continue
                next_tasks.append(
                    {
                        "task_id": task_id,
                        "position": position,
                        "name": record.name,
                        "scan_type": record.scan_type,
                        "targets": record.targets,
                        "scanner_instance": record.requested_instance,
                        "queued_at": record.created_at.isoformat(),
                        "submitted_by": record.submitted_by,
                    }
                )
            out.append({"pool": name, "queue_depth": len(waiting), "next_tasks": next_tasks})
        return {"pools": out, "dlq_depth": dlq.state.messages}
