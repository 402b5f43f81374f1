"""A scan's status as tools, REST and MCP Tasks give it: the record's view, its queue place,
the digest once it ended, and an optional wait for the next state change.

The wait is a JetStream KV watch on the task's key: the call returns when the scan ends (or, if
asked, at its next state change), or when the bound passes, so a model asks once or twice
instead of polling; nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
from nats.js.kv import KeyValue

from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.gateway import views
from scanfleet.gateway.access import Caller
from scanfleet.gateway.core import Gateway
from scanfleet.gateway.results import Results

MAX_WAIT_SECONDS = 50.0
"""Below common tool-call timeouts (60 s), so a waiting call never looks hung to its client."""

OnUpdate = Callable[[TaskRecord], Awaitable[None]]
WaitUntil = Literal["end", "change"]


async def wait_for_change(
    kv: KeyValue, record: TaskRecord, within: float, on_update: OnUpdate | None = None, *, until_end: bool = True
) -> tuple[TaskRecord, bool]:
    """The record once the scan ended (or, ``until_end=False``, once its state differs from
    ``record``'s): True; or the latest record at the bound: False.

    ``on_update`` sees every other change (progress, intermediate states) meanwhile.
    """
    latest = record
    watcher = await kv.watch(record.task_id)
    try:
        async with asyncio.timeout(within):
            while True:
                entry = await watcher.updates(timeout=within)  # type: ignore[no-untyped-call]
                if entry is None or not entry.value:
                    continue
                seen = msgspec.json.decode(entry.value, type=TaskRecord)
                if seen.state.terminal or (not until_end and seen.state is not record.state):
                    return seen, True
                if on_update is not None and (seen.progress, seen.state) != (latest.progress, latest.state):
                    await on_update(seen)
                latest = seen
    except TimeoutError:
        return latest, False
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]


class StatusView:
    def __init__(self, gateway: Gateway, results: Results) -> None:
        self.gateway = gateway
        self.results = results

    async def status(
        self,
        caller: Caller,
        task_id: str,
        wait_seconds: float = 0,
        on_update: OnUpdate | None = None,
        *,
        until: WaitUntil = "end",
    ) -> dict[str, Any]:
        record = await self.gateway.record(caller, task_id)
        changed = None
        if wait_seconds > 0 and not record.state.terminal:
            within = min(float(wait_seconds), MAX_WAIT_SECONDS)
            kv = self.gateway.rt.tasks.kv
            record, changed = await wait_for_change(kv, record, within, on_update, until_end=until == "end")
        out = await self.view(record)
        if changed is not None:
            out["changed"] = changed
        return out

    async def view(self, record: TaskRecord) -> dict[str, Any]:
        out = views.status(record)
        if record.state is TaskState.QUEUED:
            out.update(await self.gateway.queue.placement(record.pool, record.task_id, record=record))
        summary = await self.results.digest(record)
        if summary is not None:
            out["digest"] = summary
        return out

    async def remaining_seconds(self, record: TaskRecord) -> float | None:
        """How long until the scan likely ends, from the pool's moving average; ``None`` if unknown."""
        stats = await self.gateway.queue.avg_duration(record.pool)
        if stats is None:
            return None
        left = stats.avg_duration_s * (1 - min(record.progress, 100) / 100)
        if record.state is TaskState.QUEUED:
            placement = await self.gateway.queue.placement(record.pool, record.task_id, record=record)
            left = (placement.get("estimated_wait_seconds") or 0) + stats.avg_duration_s
        return max(left, 0.0)
