"""Stale work: tasks nobody moves on, slots nobody gives back, ended tasks without a lease.

The sweep runs every ``housekeeping_interval``. It reads scanfleet's own records only: the
janitor holds no scanner credentials and never talks to a scanner, so a scan somebody made
by hand on a Nessus scanner is out of its reach by construction.

- A live task whose state outlasted its limit (``stale_<state>_after``) is ended with the
  reason ``stale_<state>``, dead-lettered so an operator can retry it, and its slot freed.
  A paused task is never stale: pausing is someone's decision.
- A slot is released only once its task is accounted for: the record is gone or ended, the
  task runs on another scanner, or it was requeued while this scanner's agent is dead.
  A task still dispatched or running on a dead agent's scanner keeps its slot: its
  assignment is redelivered when the agent returns, or the task goes stale and is ended.
- A queued task whose request never reached SCAN_REQUESTS (its gateway died between writing
  the record and publishing the request, and nobody retried with the idempotency key) is
  failed with the reason ``request_lost`` and dead-lettered, once it is ``REQUEST_GRACE``
  old. Only records younger than ``REQUEST_CHECK_UNTIL`` are checked, one direct read each,
  so a deep queue costs the sweep no more than the recent submissions; an older one that a
  stopped janitor missed is left to the stale limit.
- An ended task without an expiry lease (its terminal event predates the janitor, or a
  marker was missed) gets one, counted from when it ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from nats.js.errors import NotFoundError

from scanfleet.common import capacity, contract, expiry
from scanfleet.common.bus import kv_items
from scanfleet.common.config import Settings
from scanfleet.common.logs import task_context
from scanfleet.common.messages import DeadLetter, encode, utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.task_ops import end_task
from scanfleet.common.tasks import TRANSITIONS, TaskRecord, TaskState, request_of
from scanfleet.janitor import metrics

log = logging.getLogger("scanfleet.janitor")

_S = TaskState


REQUEST_GRACE = 60.0
REQUEST_CHECK_UNTIL = 3600.0

REQUEST_LOST = "request_lost"


def request_check_due(record: TaskRecord, now: datetime) -> bool:
    """A queued first try old enough that its request must be in the stream, young enough to look."""
    if record.state is not _S.QUEUED or record.paused or record.retries != 0:
        return False
    return REQUEST_GRACE < (now - record.created_at).total_seconds() <= REQUEST_CHECK_UNTIL


@dataclass(frozen=True)
class Stale:
    target: TaskState
    reason: str
    message: str


def limits_from(settings: Settings) -> dict[TaskState, float]:
    return {
        _S.QUEUED: settings.stale_queued_after,
        _S.DISPATCHED: settings.stale_dispatched_after,
        _S.RUNNING: settings.stale_running_after,
        _S.EXPORTING: settings.stale_exporting_after,
        _S.VALIDATING: settings.stale_validating_after,
    }


def entered(record: TaskRecord) -> datetime:
    """When the record entered its current state, as far as the record tells."""
    by_state = {
        _S.DISPATCHED: record.dispatched_at,
        _S.RUNNING: record.started_at,
        _S.EXPORTING: record.exporting_at,
    }
    return by_state.get(record.state) or record.updated_at


def stale_reason(record: TaskRecord, now: datetime, limits: dict[TaskState, float]) -> Stale | None:
    if record.state.terminal or record.paused or record.state not in limits:
        return None
    age = (now - entered(record)).total_seconds()
    limit = limits[record.state]
    if age <= limit:
        return None
    target = _S.TIMEOUT if _S.TIMEOUT in TRANSITIONS[record.state] else _S.FAILED
    return Stale(
        target=target,
        reason=f"stale_{record.state}",
        message=f"stuck in {record.state} for {age:.0f}s (limit {limit:.0f}s); ended by the janitor",
    )


def slot_release_reason(instance: str, record: TaskRecord | None, agent_alive: bool) -> str | None:
    """Why a slot on ``instance`` held by this task may go back, or None to keep it."""
    if record is None:
        return "task record is gone"
    if record.state.terminal:
        return f"task is {record.state}"
    if record.instance is not None and record.instance != instance and record.state is not _S.QUEUED:
        return f"task runs on {record.instance}"
    if record.state is _S.QUEUED and not agent_alive:
        return "task is queued again and this scanner's agent is dead"
    return None


class SweepReport(msgspec.Struct, kw_only=True):
    ended: dict[str, str] = {}
    released: dict[str, list[str]] = {}
    armed: list[str] = []
    scanned: int = 0


@dataclass
class Sweeper:
    rt: Runtime
    limits: dict[TaskState, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.limits = self.limits or limits_from(self.rt.settings)

    async def sweep(self) -> SweepReport:
        report = SweepReport()
        records = {k: msgspec.json.decode(v, type=TaskRecord) for k, v in (await kv_items(self.rt.tasks.kv)).items()}
        report.scanned = len(records)
        now = utcnow()
        metrics.observe_tasks(records.values(), now, entered)
        for task_id, record in records.items():
            if record.state.terminal:
                if await expiry.arm(self.rt.js, record, self.rt.settings):
                    report.armed.append(task_id)
                continue
            stale = stale_reason(record, now, self.limits)
            if stale is None and request_check_due(record, now) and not await self._has_request(record):
                stale = Stale(_S.FAILED, REQUEST_LOST, "queued, but its request never reached the queue")
            if stale is not None and await self._end(record, stale):
                report.ended[task_id] = stale.reason
        report.released = await self._release_slots()
        if report.ended or report.released:
            log.warning("sweep: ended %s, released %s", report.ended, report.released)
        return report

    async def _has_request(self, record: TaskRecord) -> bool:
        try:
            subject = contract.request_subject(record.pool, record.task_id)
            await self.rt.js.get_last_msg(contract.REQUESTS_STREAM, subject)
        except NotFoundError:
            return False
        return True

    def _still(self, stale: Stale) -> Callable[[TaskRecord], bool]:
        if stale.reason == REQUEST_LOST:
            return lambda fresh: fresh.state is _S.QUEUED and fresh.retries == 0 and not fresh.paused
        return lambda fresh: stale_reason(fresh, utcnow(), self.limits) is not None

    async def _end(self, record: TaskRecord, stale: Stale) -> bool:
        with task_context(record.task_id, record.trace_id):
            ended = await end_task(
                self.rt,
                record.task_id,
                stale.target,
                reason=stale.reason,
                error=stale.message,
                fallback=TaskState.FAILED,
                still=self._still(stale),
            )
            if ended is None:
                return False
            await self.rt.dead_letter(
                DeadLetter(
                    task_id=ended.task_id,
                    trace_id=ended.trace_id,
                    stage="janitor",
                    reason=stale.reason,
                    error=stale.message,
                    attempts=max(1, ended.dispatch_attempts),
                    failed_at=utcnow(),
                    original_subject=contract.request_subject(ended.pool, ended.task_id),
                    original=encode(request_of(ended)),
                )
            )
            return True

    async def _release_slots(self) -> dict[str, list[str]]:
        released: dict[str, list[str]] = {}
        alive = set((await kv_items(self.rt.agents)).keys())
        for key, slots in (await capacity.read_all(self.rt.capacity)).items():
            instance = contract.instance_of_key(key)
            for task_id in list(slots.tasks):
                record = await self.rt.tasks.get(task_id)
                why = slot_release_reason(instance, record, key in alive)
                if why is not None and await capacity.release(self.rt.capacity, key, task_id):
                    released.setdefault(key, []).append(task_id)
                    log.info("released slot of task %s on %s: %s", task_id, key, why)
        return released
