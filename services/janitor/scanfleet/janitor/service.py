"""The janitor: watches what failed for good.

It reads every dead letter (and logs it for operators), and turns the server's
max-deliveries advisories into dead letters: the original message is copied into SCAN_DLQ
and removed from its work queue, where it would otherwise sit until it aged out.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from scanfleet.common import contract
from scanfleet.common.config import Settings
from scanfleet.common.logs import task_context
from scanfleet.common.messages import DeadLetter, decode, utcnow
from scanfleet.common.runtime import Runtime, pull, run, service_runtime, wait_stopping

log = logging.getLogger("scanfleet.janitor")


async def consume(rt: Runtime, stream: str, durable: str, handler: Callable[[Msg], Awaitable[None]]) -> None:
    async for msgs in pull(rt, stream, durable, batch=20):
        for msg in msgs:
            await handler(msg)


async def on_dead_letter(msg: Msg) -> None:
    try:
        letter = decode(msg.data, DeadLetter)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        log.error("unreadable dead letter on %s: %s", msg.subject, exc)
        await msg.ack()
        return
    with task_context(letter.task_id, letter.trace_id):
        log.warning(
            "dead letter",
            extra={
                "stage": letter.stage,
                "reason": letter.reason,
                "error": letter.error,
                "attempts": letter.attempts,
            },
        )
    await msg.ack()


class AdvisoryHandler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def __call__(self, msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
        except ValueError:
            await msg.ack()
            return
        if advisory.get("type", "").endswith("max_deliver"):
            await self._rescue(advisory)
        await msg.ack()

    async def _rescue(self, advisory: dict[str, object]) -> None:
        stream, seq = str(advisory["stream"]), int(advisory["stream_seq"])  # type: ignore[call-overload]
        try:
            original = await self.rt.js.get_msg(stream, seq)
        except NotFoundError:
            return
        task_id = (original.headers or {}).get(contract.HDR_TASK_ID) or (original.subject or "").rsplit(".", 1)[-1]
        await self.rt.dead_letter(
            DeadLetter(
                task_id=task_id,
                stage="delivery",
                reason="max_deliveries",
                error=f"{advisory.get('consumer')} gave up after {advisory.get('deliveries')} deliveries",
                attempts=int(advisory.get("deliveries", 0)),  # type: ignore[call-overload]
                failed_at=utcnow(),
                original_subject=original.subject,
                original=original.data,
            )
        )
        await self.rt.js.delete_msg(stream, seq)
        log.warning("moved %s seq %d to the DLQ after max deliveries", stream, seq)


async def serve(settings: Settings) -> None:
    async with service_runtime("janitor", settings) as rt:
        workers = [
            asyncio.create_task(consume(rt, contract.DLQ_STREAM, contract.JANITOR_DLQ_CONSUMER, on_dead_letter)),
            asyncio.create_task(
                consume(rt, contract.ADVISORIES_STREAM, contract.JANITOR_ADVISORIES_CONSUMER, AdvisoryHandler(rt))
            ),
        ]
        await wait_stopping(rt, *workers)


def main() -> int:
    return run("janitor", serve)
