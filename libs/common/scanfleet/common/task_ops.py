"""The two steps that start and end a task's course, shared by every service.

``enqueue`` puts a task's scan request on SCAN_REQUESTS (a new submission, or an operator's
retry); ``end_task`` moves a task to a terminal state. Every service goes through these, so
a rule about who may start or end a task has exactly one place to go.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NoReturn

from nats.js.errors import APIError

from scanfleet.common import capacity, client_tasks, contract
from scanfleet.common.bus import publish
from scanfleet.common.messages import SealedCredentials, encode
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import IllegalTransition, Mutation, TaskNotFound, TaskRecord, TaskState, request_of

log = logging.getLogger("scanfleet.tasks")


class EnqueueFailed(Exception):
    """The request could not be published; the task has been marked ``failed`` (``enqueue_failed``)."""


async def enqueue(
    rt: Runtime,
    record: TaskRecord,
    *,
    credentials: SealedCredentials | None = None,
    credential_ref: str | None = None,
    if_absent: bool = False,
    fail_task: bool = True,
) -> str:
    """Publish the request of a ``queued`` task; returns its ``Nats-Msg-Id``.

    The message id counts the task's retries (``contract.request_msg_id``), so a retried
    task is a new message to the dispatcher and a repeated publish of the same try is not.
    A failed publish fails the task, so no record waits forever for a request that never went;
    with ``fail_task=False`` the task stays queued for a retry to complete (a submission with an
    idempotency key: its retry publishes the request if the stream has none, and the janitor
    fails it as ``request_lost`` if no retry comes). Either way ``EnqueueFailed`` is raised.

    ``if_absent``: publish only when the task has no request in the stream (a repair after a
    crash; the duplicate window alone would not cover a request older than the window).

    ``fail_task=False``: a failed publish raises ``EnqueueFailed`` and leaves the task queued,
    for a first try whose client resends it with its idempotency key: that retry publishes the
    request (``if_absent``) and the scan runs once. A failed task would have answered the retry
    as a repeat, so the scan was lost though the client did what it was told; and a publish
    that timed out may well have been stored. Without a retry the janitor fails the task
    (``request_lost``) once its grace has passed.
    """
    request = request_of(record, credentials=credentials, credential_ref=credential_ref)
    msg_id = contract.request_msg_id(record.task_id, record.retries)
    headers = {contract.HDR_MSG_ID: msg_id, contract.HDR_TASK_ID: record.task_id}
    if if_absent:
        headers[contract.HDR_EXPECTED_LAST_SUBJECT_SEQ] = "0"
    try:
        await publish(rt.js, contract.request_subject(record.pool, record.task_id), encode(request), headers)
    except APIError as exc:
        if if_absent and exc.err_code == contract.ERR_WRONG_LAST_SEQUENCE:
            return msg_id
        await _fail_enqueue(rt, record, exc, fail_task)
    except Exception as exc:
        await _fail_enqueue(rt, record, exc, fail_task)
    return msg_id


async def _fail_enqueue(rt: Runtime, record: TaskRecord, exc: Exception, fail_task: bool) -> NoReturn:
    error = f"could not enqueue: {exc}"
    if not fail_task:
        log.warning("request of task %s not published (%s); left queued for a retry", record.task_id, exc)
        raise EnqueueFailed(error) from exc

    def failed(r: TaskRecord) -> None:
        r.error = error
        r.error_reason = "enqueue_failed"

    ended = await rt.tasks.transition(record.task_id, TaskState.FAILED, failed)
    await _release_client_slot(rt, ended)
    raise EnqueueFailed(error) from exc


async def end_task(
    rt: Runtime,
    task_id: str,
    target: TaskState,
    *,
    error: str | None = None,
    reason: str | None = None,
    detail: str | None = None,
    mutate: Mutation | None = None,
    still: Callable[[TaskRecord], bool] | None = None,
    fallback: TaskState | None = None,
    slot: str | None = None,
) -> TaskRecord | None:
    """Move a task to the terminal ``target`` (CAS), release its slot, publish the terminal event.

    ``error``/``reason`` are recorded when given; ``mutate`` adds the caller's own fields.
    ``still`` re-checks the freshly read record inside the CAS loop, so a task that moved on
    between the caller's check and the write is left alone. ``fallback`` is the state to end in
    when ``target`` is not allowed from the current one. The slot goes back before the event, so
    the dispatcher can fill it while the event is on its way: ``slot`` names the instance key
    the caller knows holds it (released whatever the outcome: an ended task holds no slot);
    without it the holder is looked up, and only a task this call ended loses its slot.
    The event's detail is ``detail``, else ``error``.

    Returns the ended record, or None when the task is gone or its state forbids the move.
    """

    def end(record: TaskRecord) -> None:
        if still is not None and not still(record):
            raise IllegalTransition(record.task_id, record.state, target)
        if error is not None:
            record.error = error
            record.error_reason = reason
        if mutate is not None:
            mutate(record)

    try:
        ended: TaskRecord | None = await rt.tasks.transition(task_id, target, end, fallback=fallback)
    except (IllegalTransition, TaskNotFound) as exc:
        log.info("task %s not ended %s: %s", task_id, target, exc)
        ended = None
    holder = slot if slot is not None or ended is None else await capacity.holder_of(rt.capacity, task_id)
    if holder is not None:
        await capacity.release(rt.capacity, holder, task_id)
    if ended is None:
        return None
    await _release_client_slot(rt, ended)
    await rt.publish_event(ended, contract.EventKind(ended.state), detail=detail if detail is not None else error)
    log.info("task ended %s: %s", ended.state, detail if detail is not None else error)
    return ended


async def _release_client_slot(rt: Runtime, record: TaskRecord) -> None:
    """An ended task no longer counts against its client's limit of active tasks."""
    if record.submitted_by is not None:
        await client_tasks.release_active(rt.client_tasks, record.submitted_by, record.task_id)
