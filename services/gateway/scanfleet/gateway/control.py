"""Cancel, pause and resume: the gateway records the operator's wish, the agent applies it.

A queued task is cancelled on the spot: the record moves to ``cancelled`` (CAS), then its
request is deleted from SCAN_REQUESTS so queue depth and positions stop counting it at
once, and any slot it holds is released. The dispatcher may still hold the deleted
request unacked; it reads the record before reserving anything, drops the task, and its
late ack is a no-op. Once dispatched, only the agent holding the task can stop, pause or
resume its Nessus scan, so the gateway writes the request into the record (CAS) and the
agent, which re-reads the record at every poll, carries it out and records what holds
(``paused``, or the final ``cancelled`` with its slot released).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from nats.js.errors import BadRequestError, NotFoundError, ServerError

from scanfleet.common import contract
from scanfleet.common.task_ops import end_task
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.gateway import views
from scanfleet.gateway.access import Caller
from scanfleet.gateway.core import Gateway
from scanfleet.gateway.errors import GatewayError

NO_MESSAGE_FOUND = 10057  # JetStream: the message to delete is gone already

log = logging.getLogger("scanfleet.gateway")

Action = Literal["cancel", "pause", "resume"]
IN_FLIGHT = frozenset({TaskState.DISPATCHED, TaskState.RUNNING, TaskState.EXPORTING})
MAX_REASON = 500


def refusal(action: Action, record: TaskRecord) -> str | None:
    """Why ``action`` makes no sense for the task as it stands; None when it may go ahead."""
    state = record.state
    if state.terminal:
        return f"the scan has already ended ({state}); there is nothing left to {action}"
    if action == "cancel":
        if state is TaskState.VALIDATING:
            return "the scan has finished on Nessus and its results are being validated; it can no longer be cancelled"
        return None
    if record.cancel_requested:
        return f"a cancel is already under way ({record.cancel_requested})"
    if action == "pause":
        if state in (TaskState.QUEUED, TaskState.DISPATCHED):
            return "the scan has not started on Nessus yet; pause it once get_scan_status shows running"
        if state is not TaskState.RUNNING:
            return "the scan has finished on Nessus; there is nothing left to pause"
        return None
    if state is not TaskState.RUNNING:
        return "only a paused running scan can be resumed"
    if not record.pause_requested:
        return "the scan is not paused"
    return None


class _Refused(Exception):
    pass


class ScanControl:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.rt = gateway.rt

    async def cancel(self, caller: Caller, task_id: str, reason: str = "") -> dict[str, Any]:
        why = (reason.strip() or f"cancelled by {caller.id}")[:MAX_REASON]
        record = await self.gateway.record(caller, task_id)
        if record.state is TaskState.QUEUED:
            cancelled = await self._cancel_queued(caller, task_id, why)
            if cancelled is not None:
                return _answer(cancelled, "Cancelled before dispatch; it has left the queue.")

        def request(r: TaskRecord) -> None:
            if not r.cancel_requested:
                r.cancel_requested = why
                r.cancelled_by = caller.id

        record = await self._update(caller, task_id, "cancel", request)
        return _answer(record, "Cancel requested; the agent stops the Nessus scan and frees its slot.")

    async def pause(self, caller: Caller, task_id: str) -> dict[str, Any]:
        def request(r: TaskRecord) -> None:
            r.pause_requested = True
            r.paused_by = caller.id

        record = await self._update(caller, task_id, "pause", request)
        if record.paused:
            return _answer(record, "The scan is already paused.")
        return _answer(record, "Pause requested; get_scan_status shows paused: true once Nessus has paused the scan.")

    async def resume(self, caller: Caller, task_id: str) -> dict[str, Any]:
        def request(r: TaskRecord) -> None:
            r.pause_requested = False

        record = await self._update(caller, task_id, "resume", request)
        return _answer(record, "Resume requested; get_scan_status shows paused: false once Nessus runs it again.")

    async def _cancel_queued(self, caller: Caller, task_id: str, why: str) -> TaskRecord | None:
        """End a task that is still queued; None when the dispatcher took it first."""

        # Re-checked on every CAS retry: a task dispatched meanwhile needs its agent to stop it.
        record = await end_task(
            self.rt,
            task_id,
            TaskState.CANCELLED,
            error=why,
            reason="cancelled",
            still=lambda r: r.state is TaskState.QUEUED,
            mutate=lambda r: setattr(r, "cancelled_by", caller.id),
        )
        if record is not None:
            await self._withdraw_request(record)
        return record

    async def _withdraw_request(self, record: TaskRecord) -> None:
        """Delete the waiting request; the dispatcher may have dropped (acked) it meanwhile,
        on the cancelled event, which the server reports as 'no message found'."""
        subject = contract.request_subject(record.pool, record.task_id)
        try:
            msg = await self.rt.js.get_last_msg(contract.REQUESTS_STREAM, subject)
            if msg.seq is not None:
                await self.rt.js.delete_msg(contract.REQUESTS_STREAM, msg.seq)
        except (NotFoundError, BadRequestError, ServerError) as exc:
            if isinstance(exc, ServerError) and exc.err_code != NO_MESSAGE_FOUND:
                raise
            log.info("request of cancelled task %s already gone: %s", record.task_id, exc)

    async def _update(self, caller: Caller, task_id: str, action: Action, change: Any) -> TaskRecord:
        def guarded(r: TaskRecord) -> None:
            if refusal(action, r) is not None:
                raise _Refused
            change(r)

        await self.gateway.record(caller, task_id)
        try:
            return await self.rt.tasks.update(task_id, guarded)
        except _Refused:
            record = await self.gateway.record(caller, task_id)
            why = refusal(action, record) or "the task changed state meanwhile; try again"
            raise GatewayError(
                409, f"cannot_{action}", f"task {task_id} is {record.state}: {why}", state=str(record.state)
            ) from None


def _answer(record: TaskRecord, message: str) -> dict[str, Any]:
    return {**views.status(record), "message": message}
