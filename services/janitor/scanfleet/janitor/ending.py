"""Ending a task nobody will move on any more: CAS transition, lifecycle event, slot release."""

from __future__ import annotations

import logging
from collections.abc import Callable

from scanfleet.common import capacity
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TRANSITIONS, IllegalTransition, TaskRecord, TaskState

log = logging.getLogger("scanfleet.janitor")


async def end_task(
    rt: Runtime,
    task_id: str,
    *,
    reason: str,
    error: str,
    target: TaskState = TaskState.FAILED,
    still: Callable[[TaskRecord], bool] | None = None,
) -> TaskRecord | None:
    """Move a live task to ``target`` (``failed`` when that move is not allowed from its state).

    ``still`` re-checks the freshly read record inside the CAS loop, so a task that moved on
    between the check and the write is left alone. Returns the ended record, or None.
    """

    def end(record: TaskRecord) -> None:
        if still is not None and not still(record):
            raise IllegalTransition(record.task_id, record.state, target)
        record.error = error
        record.error_reason = reason

    record = await rt.tasks.get(task_id)
    if record is None or record.state.terminal:
        return None
    try:
        chosen = target if target in TRANSITIONS[record.state] else TaskState.FAILED
        ended = await rt.tasks.transition(task_id, chosen, end)
    except IllegalTransition:
        return None
    await rt.publish_event(ended, str(ended.state), detail=error)
    holder = await capacity.holder_of(rt.capacity, task_id)
    if holder is not None:
        await capacity.release(rt.capacity, holder, task_id)
    log.warning("task ended %s: %s", ended.state, error)
    return ended
