"""Recurring scans in KV ``scan_schedules`` and the claims that make each occurrence fire once.

A schedule belongs to the client that created it (key ``<owner>.<schedule_id>``) and holds no
secret: an authenticated schedule names a ``credential_ref``. ``cursor`` is the last occurrence
dealt with; it only moves forward, by compare-and-set. Firing an occurrence starts by creating
its claim in ``scan_schedule_runs`` (``<schedule_id>.<utc seconds>``): only one janitor's create
succeeds. The claim names the task id before the task exists, so a janitor that finds a claim
left unfinished (its holder crashed) takes it over by CAS and creates that same task, never a
second one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

import msgspec
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from scanfleet.common import contract
from scanfleet.common.bus import kv_create, kv_get, kv_items
from scanfleet.common.messages import Priority, ScanType, utcnow
from scanfleet.common.schedule_times import Missed, Recurrence

ClaimOutcome = Literal["claimed", "fired", "refused"]
CLAIM_TIMEOUT = timedelta(seconds=60)


class Schedule(msgspec.Struct, kw_only=True):
    v: int = 1
    schedule_id: str
    owner: str
    name: str
    description: str = ""
    targets: list[str]
    scan_type: ScanType = "untrusted"
    pool: str | None = None
    scanner_instance: str | None = None
    credential_ref: str | None = None
    priority: Priority = "normal"
    cron: str | None = None
    rrule: str | None = None
    timezone: str = "UTC"
    missed: Missed = "run_once"
    auto_rollover: bool = False
    paused: bool = False
    created_at: datetime
    updated_at: datetime
    cursor: datetime | None = None
    last_task_id: str | None = None
    last_fired_at: datetime | None = None
    last_refusal: str | None = None
    fired: int = 0

    def recurrence(self) -> Recurrence:
        return Recurrence.parse(cron=self.cron, rrule=self.rrule, timezone=self.timezone, start=self.created_at)

    @property
    def key(self) -> str:
        return contract.schedule_key(self.owner, self.schedule_id)


class Claim(msgspec.Struct, kw_only=True):
    schedule_id: str
    occurrence: datetime
    task_id: str
    claimed_by: str
    claimed_at: datetime
    outcome: ClaimOutcome = "claimed"
    code: str | None = None

    def stale(self, now: datetime) -> bool:
        return self.outcome == "claimed" and now - self.claimed_at > CLAIM_TIMEOUT


_decode = msgspec.json.Decoder(Schedule).decode
_decode_claim = msgspec.json.Decoder(Claim).decode


class ScheduleStore:
    def __init__(self, kv: KeyValue, runs: KeyValue) -> None:
        self.kv = kv
        self.runs = runs

    async def create(self, schedule: Schedule) -> None:
        await kv_create(self.kv, schedule.key, msgspec.json.encode(schedule))

    async def read(self, key: str) -> tuple[Schedule, int] | None:
        entry = await kv_get(self.kv, key)
        if entry is None or entry.value is None:
            return None
        return _decode(entry.value), int(entry.revision or 0)

    async def listing(self, owner: str | None = None) -> list[Schedule]:
        items = await kv_items(self.kv, contract.schedules_prefix(owner))
        return sorted((_decode(v) for v in items.values()), key=lambda s: s.schedule_id)

    async def find(self, schedule_id: str) -> Schedule | None:
        """A schedule by id alone (ids are unique), for callers that may see others' schedules."""
        return next((s for s in await self.listing() if s.schedule_id == schedule_id), None)

    async def delete(self, schedule: Schedule) -> None:
        await self.kv.purge(schedule.key)

    async def update(self, key: str, mutate: Callable[[Schedule], None]) -> Schedule | None:
        """Read-modify-write with CAS, retried on conflict; None when the schedule is gone."""
        for _ in range(50):
            found = await self.read(key)
            if found is None:
                return None
            schedule, revision = found
            mutate(schedule)
            schedule.updated_at = utcnow()
            try:
                await self.kv.update(key, msgspec.json.encode(schedule), last=revision)
            except KeyWrongLastSequenceError:
                continue
            return schedule
        raise RuntimeError(f"schedule {key}: too much contention")

    # Claims -------------------------------------------------------------------------------

    async def claim(self, key: str, claim: Claim) -> Claim | None:
        """Create the claim; None if this caller won it, else the claim that exists (maybe stale)."""
        try:
            await self.runs.create(key, msgspec.json.encode(claim))
            return None
        except KeyWrongLastSequenceError:
            pass
        entry = await kv_get(self.runs, key)
        if entry is None or entry.value is None:
            await kv_create(self.runs, key, msgspec.json.encode(claim))
            return None
        return _decode_claim(entry.value)

    async def take_over(self, key: str, holder: str, now: datetime) -> Claim | None:
        """Take a stale claim (its holder crashed mid-fire) by CAS; None if it is not stale or was taken."""
        entry = await kv_get(self.runs, key)
        if entry is None or entry.value is None:
            return None
        claim = _decode_claim(entry.value)
        if not claim.stale(now):
            return None
        claim.claimed_by, claim.claimed_at = holder, now
        try:
            await self.runs.update(key, msgspec.json.encode(claim), last=entry.revision)
        except KeyWrongLastSequenceError:
            return None
        return claim

    async def settle(self, key: str, claim: Claim) -> None:
        await self.runs.put(key, msgspec.json.encode(claim))

    async def claims(self, schedule_id: str) -> list[Claim]:
        items = await kv_items(self.runs, f"{schedule_id}.")
        return sorted((_decode_claim(v) for v in items.values()), key=lambda c: c.occurrence)
