"""Fires due schedule occurrences and automatic rollovers, each exactly once across janitors.

Every janitor ticks; a due occurrence is claimed by creating its key in ``scan_schedule_runs``
(``schedules.ScheduleStore.claim``), so however many janitors run, one fires it. The scan is
admitted with the owner's current scope (``scanfleet.common.admit``) and audited as the owner
with interface ``schedule`` (or ``rollover``). A refusal is final for that occurrence: recorded
on the claim and the schedule, audited, and the next occurrence is tried afresh.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from pathlib import Path

from scanfleet.common import admit, contract
from scanfleet.common.aio import honour_cancel
from scanfleet.common.clients import ClientDirectory
from scanfleet.common.messages import utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.schedule_times import InvalidSchedule, due, occurrence_token
from scanfleet.common.schedules import Claim, Schedule, ScheduleStore
from scanfleet.common.tasks import TaskRecord, TaskState, new_task_id
from scanfleet.common.windows import WINDOW_STOPPED

log = logging.getLogger("scanfleet.janitor.scheduler")


class ClaimHeld(Exception):
    """Another janitor holds this work's claim unfinished; look again after ``CLAIM_TIMEOUT``."""


class Scheduler:
    def __init__(self, rt: Runtime, directory: ClientDirectory | None = None, holder: str | None = None) -> None:
        self.rt = rt
        path = rt.settings.clients_file
        self.directory = directory or ClientDirectory(Path(path) if path else None)
        self.store = ScheduleStore(rt.schedules, rt.schedule_runs)
        self.holder = holder or uuid.uuid4().hex[:12]

    async def tick(self, now: datetime | None = None) -> list[str]:
        """Fire what is due; returns the task ids this janitor queued."""
        now = now or utcnow()
        queued = []
        for schedule in await self.store.listing():
            if schedule.paused:
                continue
            try:
                task_id = await self._tick_one(schedule, now)
            except InvalidSchedule as exc:
                log.warning("schedule %s is invalid and never fires: %s", schedule.schedule_id, exc)
                continue
            if task_id is not None:
                queued.append(task_id)
        return queued

    async def _tick_one(self, schedule: Schedule, now: datetime) -> str | None:
        to_fire, cursor = due(schedule.recurrence(), schedule.cursor or schedule.created_at, now, schedule.missed)
        task_id = None
        settled = True
        if to_fire is not None:
            task_id, settled = await self._fire(schedule, to_fire, now)
        if cursor is not None and settled:

            def advance(s: Schedule) -> None:
                if s.cursor is None or s.cursor < cursor:
                    s.cursor = cursor

            await self.store.update(schedule.key, advance)
        return task_id

    async def _fire(self, schedule: Schedule, occurrence: datetime, now: datetime) -> tuple[str | None, bool]:
        """Claim and fire one occurrence: (task queued by this janitor, whether the occurrence is settled)."""
        key = contract.occurrence_key(schedule.schedule_id, occurrence_token(occurrence))
        mine = Claim(
            schedule_id=schedule.schedule_id,
            occurrence=occurrence,
            task_id=new_task_id(),
            claimed_by=self.holder,
            claimed_at=now,
        )
        held, settled = await self._hold(key, mine, now)
        if held is None:
            return None, settled
        mine = held
        spec = admit.OnBehalf(
            owner=schedule.owner,
            name=schedule.name,
            description=schedule.description,
            targets=schedule.targets,
            scan_type=schedule.scan_type,
            pool=schedule.pool,
            scanner_instance=schedule.scanner_instance,
            credential_ref=schedule.credential_ref,
            priority=schedule.priority,
            schedule_id=schedule.schedule_id,
            auto_rollover=schedule.auto_rollover,
        )
        refusal = None
        try:
            await admit.submit(
                self.rt, self.directory, spec, task_id=mine.task_id, interface="schedule", action="schedule_fire"
            )
            mine.outcome = "fired"
        except admit.Refused as exc:
            log.warning("schedule %s refused: %s", schedule.schedule_id, exc.message)
            mine.outcome, mine.code, refusal = "refused", exc.code, f"{exc.code}: {exc.message}"
        await self.store.settle(key, mine)

        def record(s: Schedule) -> None:
            s.last_refusal = refusal
            if refusal is None:
                s.last_task_id, s.last_fired_at, s.fired = mine.task_id, now, s.fired + 1

        await self.store.update(schedule.key, record)
        return (mine.task_id if refusal is None else None), True

    async def _hold(self, key: str, mine: Claim, now: datetime) -> tuple[Claim | None, bool]:
        """The claim this janitor now holds: its own, or one a crashed janitor left unfinished
        (taken over by CAS, with the task id it had chosen, so the work is never done twice).
        Holding none: whether the work is settled, or only held by another janitor for now."""
        existing = await self.store.claim(key, mine)
        if existing is None:
            return mine, False
        if existing.outcome != "claimed":
            return None, True
        taken = await self.store.take_over(key, self.holder, now)
        if taken is not None:
            log.info("taking over claim %s (task %s) from %s", key, taken.task_id, existing.claimed_by)
        return taken, False

    # Rollovers ----------------------------------------------------------------------------

    async def rollover(self, record: TaskRecord, now: datetime | None = None) -> str | None:
        """Queue the automatic rollover of a timed-out task for the hosts it did not reach, once.

        A task asks for it (``auto_rollover``), or a scan window stopped it (``window_stopped``:
        the window is configured to stop running scans with a rollover; the dispatcher then holds
        the rollover until the window ends). Raises ``ClaimHeld`` while another janitor holds the
        claim unfinished: the caller looks again once that claim may be stale, so a crash between
        claim and queue loses nothing.
        """
        if record.state is not TaskState.TIMEOUT or not record.hosts_left or record.submitted_by is None:
            return None
        window_stopped = record.error_reason == WINDOW_STOPPED
        if not (record.auto_rollover or window_stopped):
            return None
        if record.rollover_of is not None and not window_stopped:
            return None  # one generation: a rollover that times out again is left to its owner
        key = contract.rollover_claim_key(record.task_id)
        now = now or utcnow()
        mine = Claim(
            schedule_id="rollover",
            occurrence=now,
            task_id=new_task_id(),
            claimed_by=self.holder,
            claimed_at=now,
        )
        held, settled = await self._hold(key, mine, now)
        if held is None:
            if settled:
                return None
            raise ClaimHeld(key)
        mine = held
        spec = admit.OnBehalf(
            owner=record.submitted_by,
            name=f"{record.name} (rollover)"[:200],
            description=record.description,
            targets=list(record.hosts_left),
            scan_type=record.scan_type,
            pool=record.pool,
            credential_ref=record.credential_ref,
            priority=record.priority,
            rollover_of=record.task_id,
            schedule_id=record.schedule_id,
        )
        try:
            await admit.submit(
                self.rt, self.directory, spec, task_id=mine.task_id, interface="rollover", action="rollover_scan"
            )
            mine.outcome = "fired"
        except admit.Refused as exc:
            mine.outcome, mine.code = "refused", exc.code
        await self.store.settle(key, mine)
        return mine.task_id if mine.outcome == "fired" else None


async def schedule_forever(scheduler: Scheduler, every: float) -> None:
    while True:
        honour_cancel()
        try:
            await scheduler.tick()
        except Exception:
            log.exception("schedule tick failed; trying again next round")
        await asyncio.sleep(every)
