"""The janitor: scanfleet's operations service.

- dead letters: logs each one; turns max-deliveries and terminated advisories into letters;
- TTL housekeeping: arms an expiry lease when a task ends, deletes the task and its stored
  results when the lease's MaxAge marker arrives (``housekeeping``);
- stale work: ends tasks stuck past their state's limit and frees slots whose tasks are
  accounted for (``stale``);
- schedules: fires due occurrences and automatic rollovers, once each (``scheduler``).

With ``SCANFLEET_SERVICE_PORT`` set it serves /health, /ready and /metrics (``janitor/metrics.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

from scanfleet.common import contract, ops_http
from scanfleet.common.aio import honour_cancel
from scanfleet.common.bus import pull
from scanfleet.common.config import Settings
from scanfleet.common.runtime import Runtime, run, service_runtime, wait_stopping
from scanfleet.common.telemetry import consumer_span
from scanfleet.janitor import metrics
from scanfleet.janitor.deadletters import AdvisoryHandler, on_dead_letter
from scanfleet.janitor.housekeeping import Housekeeper
from scanfleet.janitor.scheduler import Scheduler, schedule_forever
from scanfleet.janitor.stale import Sweeper

log = logging.getLogger("scanfleet.janitor")


async def consume(rt: Runtime, stream: str, durable: str, handler: Callable[[Msg], Awaitable[None]]) -> None:
    async for msgs in pull(rt.js, stream, durable, batch=20, wait=1.0):
        for msg in msgs:
            try:
                with consumer_span(msg, f"janitor {durable}"):
                    await handler(msg)
            except Exception:
                log.exception("handling %s failed; it will be redelivered", msg.subject)


async def sweep_forever(sweeper: Sweeper, every: float) -> None:
    while True:
        honour_cancel()
        try:
            report = await sweeper.sweep()
            for reason in report.ended.values():
                metrics.STALE_ENDED.labels(reason=reason).inc()
        except Exception:
            log.exception("sweep failed; trying again next round")
        await asyncio.sleep(every)


def workers(rt: Runtime) -> list[asyncio.Task[None]]:
    scheduler = Scheduler(rt)
    keeper = Housekeeper(rt, scheduler)
    return [
        asyncio.create_task(consume(rt, contract.DLQ_STREAM, contract.JANITOR_DLQ_CONSUMER, on_dead_letter)),
        asyncio.create_task(
            consume(rt, contract.ADVISORIES_STREAM, contract.JANITOR_ADVISORIES_CONSUMER, AdvisoryHandler(rt))
        ),
        asyncio.create_task(
            consume(rt, contract.EVENTS_STREAM, contract.JANITOR_TERMINAL_CONSUMER, keeper.on_terminal_event)
        ),
        asyncio.create_task(
            consume(rt, contract.EXPIRY_STREAM, contract.JANITOR_EXPIRY_CONSUMER, keeper.on_lease_message)
        ),
        asyncio.create_task(sweep_forever(Sweeper(rt), rt.settings.housekeeping_interval)),
        asyncio.create_task(schedule_forever(scheduler, rt.settings.schedule_interval)),
    ]


async def serve(settings: Settings) -> None:
    async with service_runtime("janitor", settings) as rt:
        census = metrics.DlqCensus(rt.js)
        async with ops_http.serving(rt, refresh=[census.refresh]):
            await wait_stopping(rt, *workers(rt))


def main() -> int:
    return run("janitor", serve)
