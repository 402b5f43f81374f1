"""Dead letters: log each one, and turn the server's delivery advisories into dead letters.

A MAX_DELIVERIES advisory means a message was tried too often; it stays in its work queue,
so the janitor copies it into SCAN_DLQ, ends its task with the reason, releases the task's
slot and deletes the original. A MSG_TERMINATED advisory follows a ``+TERM``; the service
that terminated normally dead-lettered the message first, and both letters carry the same
``Nats-Msg-Id`` (``contract.dead_letter_msg_id``), so the janitor's copy only lands when
nobody else wrote one (an operator's ``nats consumer next --term``, say).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from scanfleet.common import contract
from scanfleet.common.logs import task_context
from scanfleet.common.messages import DeadLetter, decode, utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.task_ops import end_task
from scanfleet.common.tasks import TaskState

log = logging.getLogger("scanfleet.janitor")

WORK_QUEUES = frozenset({contract.REQUESTS_STREAM, contract.ASSIGNMENTS_STREAM})


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
            extra={"stage": letter.stage, "reason": letter.reason, "error": letter.error, "attempts": letter.attempts},
        )
    await msg.ack()


def stage_of(consumer: str) -> str:
    """The pipeline stage a consumer belongs to, named as the services name their own letters."""
    if consumer.startswith("dispatch-"):
        return "dispatch"
    if consumer.startswith("agent-"):
        return "agent"
    if consumer == contract.VALIDATOR_CONSUMER:
        return "validator"
    return "janitor"


@dataclass(frozen=True)
class Advisory:
    kind: str  # "max_deliveries" or "terminated"
    stream: str
    consumer: str
    stream_seq: int
    deliveries: int
    reason: str | None

    @classmethod
    def parse(cls, data: bytes) -> Advisory | None:
        try:
            raw = json.loads(data)
            kind = str(raw.get("type", ""))
            if not kind.endswith(("max_deliver", "terminated")):
                return None
            return cls(
                kind="max_deliveries" if kind.endswith("max_deliver") else "terminated",
                stream=str(raw["stream"]),
                consumer=str(raw["consumer"]),
                stream_seq=int(raw["stream_seq"]),
                deliveries=int(raw.get("deliveries", 0)),
                reason=raw.get("reason") or None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def identify(original: RawStreamMsg | None) -> tuple[str | None, str | None]:
    """Task id and trace id of an original message, from its header, body or subject."""
    if original is None:
        return None, None
    body: Any = None
    with contextlib.suppress(ValueError):
        body = json.loads(original.data or b"")
    body = body if isinstance(body, dict) else {}
    task_id = (original.headers or {}).get(contract.HDR_TASK_ID) or body.get("task_id")
    if task_id is None and original.subject:
        task_id = contract.task_of_subject(original.subject)
    trace_id = body.get("trace_id")
    return (str(task_id) if task_id else None), (str(trace_id) if trace_id else None)


def letter_for(advisory: Advisory, original: RawStreamMsg | None) -> DeadLetter:
    task_id, trace_id = identify(original)
    if advisory.kind == "max_deliveries":
        error = f"{advisory.consumer} gave up after {advisory.deliveries} deliveries"
    else:
        error = f"{advisory.consumer} terminated the message: {advisory.reason or 'no reason given'}"
        if original is None:
            error += " (the original was already removed from its work queue)"
    return DeadLetter(
        task_id=task_id,
        trace_id=trace_id,
        stage=stage_of(advisory.consumer),
        reason=advisory.kind,
        error=error,
        attempts=advisory.deliveries,
        failed_at=utcnow(),
        original_subject=original.subject if original else None,
        original=original.data if original else None,
        original_stream=advisory.stream,
        original_seq=advisory.stream_seq,
    )


class AdvisoryHandler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def __call__(self, msg: Msg) -> None:
        advisory = Advisory.parse(msg.data)
        if advisory is not None:
            await self.handle(advisory)
        await msg.ack()

    async def handle(self, advisory: Advisory) -> DeadLetter:
        try:
            original: RawStreamMsg | None = await self.rt.js.get_msg(advisory.stream, advisory.stream_seq)
        except NotFoundError:
            original = None
        letter = letter_for(advisory, original)
        with task_context(letter.task_id, letter.trace_id):
            await self.rt.dead_letter(letter)
            if advisory.kind == "max_deliveries":
                if letter.task_id is not None:
                    await end_task(
                        self.rt, letter.task_id, TaskState.FAILED, reason="max_deliveries", error=letter.error
                    )
                if original is not None and advisory.stream in WORK_QUEUES:
                    await self.rt.js.delete_msg(advisory.stream, advisory.stream_seq)
                log.warning("moved %s seq %d to the DLQ after max deliveries", advisory.stream, advisory.stream_seq)
        return letter
