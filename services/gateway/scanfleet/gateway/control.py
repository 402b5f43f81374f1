"""Cancel, pause and resume: the gateway records the operator's wish, the agent applies it.

A queued task is cancelled on the spot (the dispatcher drops requests whose task left the
queue and frees any slot). Once dispatched, only the agent holding the task can stop,
pause or resume its Nessus scan, so the gateway writes the request into the task record
(CAS) and the agent, which re-reads the record at every poll, carries it out and records
what holds (``paused``, or the final ``cancelled``).
"""

from __future__ import annotations

from typing import Any

from scanfleet.common.tasks import IllegalTransition, TaskRecord, TaskState
from scanfleet.gateway import views
from scanfleet.gateway.core import Gateway, GatewayError

IN_FLIGHT = frozenset({TaskState.DISPATCHED, TaskState.RUNNING, TaskState.EXPORTING})
MAX_REASON = 500


class _Refused(Exception):
    def __init__(self, state: TaskState) -> None:
        self.state = state


def _refuse(action: str, record: TaskRecord, why: str) -> GatewayError:
    return GatewayError(
        409, f"cannot_{action}", f"task {record.task_id} is {record.state}: {why}", state=str(record.state)
    )


class ScanControl:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.tasks = gateway.rt.tasks

    async def cancel(self, task_id: str, reason: str = "") -> dict[str, Any]:
        record = await self.gateway.record(task_id)
        why = (reason.strip() or "cancelled by operator")[:MAX_REASON]
        if record.state is TaskState.QUEUED:
            try:
                record = await self.tasks.transition(task_id, TaskState.CANCELLED, _ended(why))
            except IllegalTransition:
                record = await self.gateway.record(task_id)
            else:
                await self.gateway.rt.publish_event(record, "cancelled", detail=why)
                return _answer(record, "Cancelled before dispatch.")
        if record.state not in IN_FLIGHT:
            raise _refuse("cancel", record, "only queued, dispatched, running or exporting scans can be cancelled")

        def request(r: TaskRecord) -> None:
            if r.state not in IN_FLIGHT:
                raise _Refused(r.state)
            r.cancel_requested = r.cancel_requested or why

        record = await self._update(task_id, "cancel", request)
        return _answer(record, "Cancel requested; the agent stops the Nessus scan and frees its slot.")

    async def pause(self, task_id: str) -> dict[str, Any]:
        def request(r: TaskRecord) -> None:
            if r.state is not TaskState.RUNNING or r.cancel_requested:
                raise _Refused(r.state)
            r.pause_requested = True

        record = await self._update(task_id, "pause", request)
        return _answer(record, "Pause requested; status shows paused once Nessus has paused the scan.")

    async def resume(self, task_id: str) -> dict[str, Any]:
        def request(r: TaskRecord) -> None:
            if r.state is not TaskState.RUNNING or not r.pause_requested:
                raise _Refused(r.state)
            r.pause_requested = False

        record = await self._update(task_id, "resume", request)
        return _answer(record, "Resume requested; status shows paused false once Nessus runs the scan again.")

    async def _update(self, task_id: str, action: str, change: Any) -> TaskRecord:
        record = await self.gateway.record(task_id)
        try:
            return await self.tasks.update(task_id, change)
        except _Refused:
            record = await self.gateway.record(task_id)
            why = {
                "cancel": "only in-flight scans can be cancelled",
                "pause": "only a running scan that is not being cancelled can be paused",
                "resume": "only a paused (or pausing) running scan can be resumed",
            }[action]
            raise _refuse(action, record, why) from None


def _ended(why: str) -> Any:
    def apply(r: TaskRecord) -> None:
        r.error = why
        r.error_reason = "cancelled"

    return apply


def _answer(record: TaskRecord, message: str) -> dict[str, Any]:
    return {**views.status(record), "message": message}
