"""Scan history for a client: schedules, rescans, rollovers, the diff between two runs, past runs.

Every scan this module starts goes through ``Gateway.submit`` with the caller's scope; schedules
are checked against the scope when created and again by the janitor at each firing.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import msgspec

from scanfleet.common import client_tasks, contract
from scanfleet.common.clients import Role
from scanfleet.common.findings import decode_finding, decode_hosts, iter_frames
from scanfleet.common.messages import Priority, ScanType, utcnow
from scanfleet.common.registry import read_fleet_meta
from scanfleet.common.scan_diff import Key, RunView, Seen, counts, diff, not_comparable_hosts, top
from scanfleet.common.schedule_times import InvalidSchedule, Missed, Recurrence
from scanfleet.common.schedules import Schedule, ScheduleStore
from scanfleet.common.scope import Submission
from scanfleet.common.targets import InvalidTarget, parse_targets
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.gateway.access import Caller
from scanfleet.gateway.core import BeforeQueue, Gateway, Lineage, SubmitScan
from scanfleet.gateway.errors import GatewayError

MAX_TOP = 25
MAX_HISTORY_SCAN = 500
FIX_CHARS = 160
ROLLOVER_STATES = frozenset({TaskState.CANCELLED, TaskState.TIMEOUT})


class ScheduleScan(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A recurring scan; credentials only by ``credential_ref`` (no inline secret is ever stored)."""

    targets: str | list[str]
    name: str
    cron: str | None = None
    rrule: str | None = None
    timezone: str = "UTC"
    scan_type: ScanType = "untrusted"
    credential_ref: str | None = None
    description: str = ""
    scanner_pool: str | None = None
    scanner_instance: str | None = None
    missed: Missed = "run_once"
    auto_rollover: bool = False
    priority: Priority = "normal"


def schedule_view(schedule: Schedule, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    upcoming = []
    try:
        for occurrence in schedule.recurrence().after(max(now, schedule.cursor or now)):
            upcoming.append(occurrence.isoformat())
            if len(upcoming) == 3:
                break
    except InvalidSchedule:
        pass
    out = msgspec.to_builtins(schedule)
    out.pop("v", None)
    return {**out, "next_runs": upcoming}


class History:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.rt = gateway.rt
        self.store = ScheduleStore(self.rt.schedules, self.rt.schedule_runs)

    # Schedules ----------------------------------------------------------------------------

    async def schedule(self, caller: Caller, body: ScheduleScan) -> dict[str, Any]:
        name = body.name.strip()
        if not name or len(name) > 200:
            raise GatewayError(422, "invalid_name", "name must be 1 to 200 characters")
        if body.scan_type != "untrusted" and body.credential_ref is None:
            raise GatewayError(
                422, "invalid_credentials", "an authenticated schedule needs a credential_ref (never inline secrets)"
            )
        now = utcnow()
        try:
            Recurrence.parse(cron=body.cron, rrule=body.rrule, timezone=body.timezone, start=now)
        except InvalidSchedule as exc:
            raise GatewayError(422, "invalid_schedule", str(exc)) from None
        try:
            parsed = parse_targets(body.targets)
        except InvalidTarget as exc:
            raise GatewayError(422, "invalid_targets", str(exc)) from None
        fleet = await self.gateway.fleet()
        probe = SubmitScan(
            targets=body.targets,
            name=name,
            scanner_pool=body.scanner_pool,
            scanner_instance=body.scanner_instance,
            scan_type=body.scan_type,
            credential_ref=body.credential_ref,
            priority=body.priority,
        )
        meta = await read_fleet_meta(self.gateway.rt.registry)
        pool = await self.gateway.resolve_pool(caller, probe, fleet, parsed, meta)
        wanted = Submission(parsed, body.scan_type, pool, body.credential_ref, body.priority)
        await self.gateway.admission.check(caller, parsed, wanted, fleet)
        schedule = Schedule(
            schedule_id=f"sch-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}",
            owner=caller.id,
            name=name,
            description=body.description,
            targets=[t.text for t in parsed],
            scan_type=body.scan_type,
            pool=pool,
            scanner_instance=body.scanner_instance,
            credential_ref=body.credential_ref,
            priority=body.priority,
            cron=body.cron,
            rrule=body.rrule,
            timezone=body.timezone,
            missed=body.missed,
            auto_rollover=body.auto_rollover,
            created_at=now,
            updated_at=now,
            cursor=now,
        )
        await self.store.create(schedule)
        return schedule_view(schedule, now)

    async def _own(self, caller: Caller, schedule_id: str) -> Schedule:
        found = await self.store.find(schedule_id) if contract.NAME_RE.match(schedule_id) else None
        if found is None or not (caller.role is Role.ADMIN or found.owner == caller.id):
            raise GatewayError(404, "schedule_not_found", f"no schedule {schedule_id!r} (among this client's)")
        return found

    async def list_schedules(self, caller: Caller) -> dict[str, Any]:
        owner = None if caller.role is Role.ADMIN else caller.id
        schedules = await self.store.listing(owner)
        now = utcnow()
        return {"schedules": [schedule_view(s, now) for s in schedules], "count": len(schedules)}

    async def delete_schedule(self, caller: Caller, schedule_id: str) -> dict[str, Any]:
        schedule = await self._own(caller, schedule_id)
        await self.store.delete(schedule)
        return {"schedule_id": schedule_id, "deleted": True}

    async def set_paused(self, caller: Caller, schedule_id: str, paused: bool) -> dict[str, Any]:
        schedule = await self._own(caller, schedule_id)

        def apply(s: Schedule) -> None:
            s.paused = paused
            if not paused:
                s.cursor = max(s.cursor or utcnow(), utcnow())  # what was missed while paused is not fired

        updated = await self.store.update(schedule.key, apply)
        if updated is None:
            raise GatewayError(404, "schedule_not_found", f"no schedule {schedule_id!r}")
        return schedule_view(updated)

    # Rescan and rollover -------------------------------------------------------------------

    async def rescan(self, caller: Caller, task_id: str, before_queue: BeforeQueue) -> dict[str, Any]:
        original = await self.gateway.record(caller, task_id)
        out = await self._again(caller, original, original.targets, before_queue, Lineage(rescan_of=task_id))
        return {**out, "rescan_of": task_id}

    async def rollover(self, caller: Caller, task_id: str, before_queue: BeforeQueue) -> dict[str, Any]:
        original = await self.gateway.record(caller, task_id)
        if original.state not in ROLLOVER_STATES:
            raise GatewayError(
                409, "not_rollable", f"the scan is {original.state}; only a cancelled or timed-out scan rolls over"
            )
        if original.hosts_left is None:
            raise GatewayError(409, "no_host_status", "scanfleet did not get the per-host status of this scan")
        if not original.hosts_left:
            raise GatewayError(409, "nothing_left", "every host of this scan was scanned")
        out = await self._again(caller, original, original.hosts_left, before_queue, Lineage(rollover_of=task_id))
        return {**out, "rollover_of": task_id}

    async def _again(
        self, caller: Caller, original: TaskRecord, targets: list[str], before_queue: BeforeQueue, lineage: Lineage
    ) -> dict[str, Any]:
        """The original's request again, as this caller may make it now (its priority lowered,
        not refused, when the caller's scope no longer allows it)."""
        if original.scan_type != "untrusted" and original.credential_ref is None:
            raise GatewayError(
                422, "credentials_inline", "the scan used inline credentials, which scanfleet never keeps; submit anew"
            )
        submit = SubmitScan(
            targets=targets,
            name=original.name,
            description=original.description,
            scanner_pool=original.pool,
            scan_type=original.scan_type,
            credential_ref=original.credential_ref,
            priority=caller.scope.capped_priority(original.priority),
        )
        return await self.gateway.submit(caller, submit, before_queue, lineage=lineage)

    # Diff and history ----------------------------------------------------------------------

    async def _view(self, caller: Caller, task_id: str) -> tuple[TaskRecord, RunView]:
        record = await self.gateway.record(caller, task_id)
        if record.findings is None:
            raise GatewayError(
                409, "no_results", f"the scan is {record.state} without stored findings", state=str(record.state)
            )
        store = await self.rt.js.object_store(contract.FINDINGS_OBJECTS)
        hosts = decode_hosts((await store.get(record.findings.hosts_object)).data or b"")
        data = (await store.get(record.findings.findings_object)).data or b""
        findings: dict[Key, Seen] = {}
        for offset, length in iter_frames(data):
            f = decode_finding(memoryview(data)[offset : offset + length])
            key = Key(f.host, f.plugin_id, f.port, f.protocol)
            if key not in findings or f.severity > findings[key].severity:
                findings[key] = Seen(f.severity, f.plugin_name, f.solution)
        return record, RunView(record.scan_type, findings, {h.name: h.auth for h in hosts.hosts})

    async def compare(
        self, caller: Caller, base_task_id: str, task_id: str, limit: int = 10, min_severity: int = 1
    ) -> dict[str, Any]:
        limit = max(0, min(limit, MAX_TOP))
        base_record, base = await self._view(caller, base_task_id)
        record, run = await self._view(caller, task_id)
        entries = diff(base, run)
        skipped = not_comparable_hosts(base, run)

        def line(e: Any) -> dict[str, Any]:
            out = {"host": e.key.host, "port": e.key.port, "plugin_id": e.key.plugin_id, "severity": e.severity}
            out["plugin_name"] = e.plugin_name
            if e.change == "new" and e.solution:
                out["fix"] = e.solution[:FIX_CHARS]
            return out

        return {
            "base": _run_line(base_record),
            "run": _run_line(record),
            "counts": counts(entries),
            "not_comparable_hosts": dict(list(skipped.items())[:50]),
            "not_comparable_reason": {
                "login_failed_in_base": "the login failed on this host in the base run: its local checks did not run",
                "login_failed_in_run": "the login failed on this host in this run: what vanished is not fixed",
                "not_scanned_in_base": "the host was not scanned in the base run",
                "not_scanned_in_run": "the host was not scanned in this run",
            }
            if skipped
            else {},
            "top_new": [line(e) for e in top(entries, "new", limit, min_severity=min_severity)],
            "top_fixed": [line(e) for e in top(entries, "fixed", limit, min_severity=min_severity)],
            "top_still_open": [line(e) for e in top(entries, "still_open", min(limit, 5), min_severity=3)],
        }

    async def scan_history(self, caller: Caller, targets: str | list[str], limit: int = 5) -> dict[str, Any]:
        try:
            wanted = sorted(t.text for t in parse_targets(targets))
        except InvalidTarget as exc:
            raise GatewayError(422, "invalid_targets", str(exc)) from None
        runs = []
        ids = (await client_tasks.submitted(self.rt.client_tasks, caller.id))[:MAX_HISTORY_SCAN]
        for task_id in ids:
            record = await self.rt.tasks.get(task_id)
            if record is None or sorted(record.targets) != wanted or record.results is None:
                continue
            runs.append(
                {
                    **_run_line(record),
                    "severity_counts": msgspec.to_builtins(record.results.severity_counts),
                    "auth_status": record.results.auth_status,
                }
            )
            if len(runs) >= max(1, min(limit, 20)):
                break
        return {"targets": wanted, "runs": runs}


def _run_line(record: TaskRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "task_id": record.task_id,
        "state": str(record.state),
        "scan_type": record.scan_type,
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
    }
    if record.results is not None:
        out["hosts_scanned"] = record.results.hosts_scanned
    for link in ("schedule_id", "rescan_of", "rollover_of"):
        if getattr(record, link):
            out[link] = getattr(record, link)
    return out
