"""One task's life on one Nessus scanner: claim, create (or adopt), launch, watch, export.

Each step is written to the task record (CAS) before the next begins, so a rerun after a
crash reads the record and continues where it stopped: the Nessus scan id is recorded
before launch, a scan is only launched while Nessus reports it ``empty`` (never run), and a
create whose reply was lost is found again by its unique name before any retry.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from scanfleet.agent import hygiene
from scanfleet.agent.circuit import Breaker, NullBreaker
from scanfleet.agent.nessus import (
    ExportHandle,
    NessusApiUnavailable,
    NessusAuthError,
    NessusClient,
    NessusConflict,
    NessusError,
    NessusNotFound,
    NessusRejected,
    NessusTransientError,
    ScanDetails,
    SSHCredential,
)
from scanfleet.agent.secrets import CredentialResolver, to_nessus
from scanfleet.common import capacity, contract
from scanfleet.common.aio import honour_cancel
from scanfleet.common.bus import StoredObject, publish, put_object_stream
from scanfleet.common.config import Settings
from scanfleet.common.contract import EventKind
from scanfleet.common.credentials import CredentialError
from scanfleet.common.messages import Assignment, ExportEvent, ScanType, encode, utcnow
from scanfleet.common.registry import read_fleet_meta
from scanfleet.common.rollover import split_hosts
from scanfleet.common.runtime import Runtime
from scanfleet.common.task_ops import end_task
from scanfleet.common.tasks import ExportRef, IllegalTransition, TaskRecord, TaskState
from scanfleet.common.windows import Hold, ScanWindows

log = logging.getLogger("scanfleet.agent")

T = TypeVar("T")

NESSUS_ENDED = {"canceled", "aborted", "stopped"}
UUID_LEN = 52


class PermanentFailure(Exception):
    """Retrying cannot help: the task fails with ``reason`` and is dead-lettered."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Stopped(Exception):
    """The task must end as ``cancelled`` or ``timeout`` after its Nessus scan is stopped."""

    def __init__(self, target: TaskState, reason: str, message: str) -> None:
        super().__init__(message)
        self.target = target
        self.reason = reason


class TaskGone(Exception):
    """Another writer ended the task (or it moved on to validation): nothing left to do here."""


class HandBack(Exception):
    """Before launch: the scan goes back to the queue (for another scanner, or after a window)."""


def nessus_scan_name(task_id: str, retries: int = 0) -> str:
    """Unique per task and attempt, so a scan created just before a crash can be found and
    adopted, while an operator's retry never adopts the scan of the attempt that failed."""
    return f"scanfleet-{task_id}" if retries == 0 else f"scanfleet-{task_id}-retry{retries}"


def expected_hosts(targets: list[str]) -> int:
    """Targets that name one host each; a CIDR or range counts once (alive hosts are unknown)."""
    return len(targets)


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 1.0
    cap: float = 30.0
    attempts: int = 6

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.retry_base, settings.retry_cap, max(1, settings.retry_attempts))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential (base, 2·base, 4·base…) capped, with jitter in [50 %, 100 %]; never below Retry-After.

        The exponent is bounded: a poll that waits out a long outage counts past 1023 attempts,
        where 2.0**attempt overflows.
        """
        backoff = min(self.cap, self.base * 2.0 ** min(attempt, 64)) * (0.5 + random.random() / 2)
        return max(backoff, min(retry_after or 0.0, self.cap))


# The task-level reason for a scanner error, first match wins; a transient error only ends
# a task once its retries are spent.
REASONS: Mapping[type[NessusError], str] = {
    NessusTransientError: "scanner_unreachable",
    NessusApiUnavailable: "scan_api_unavailable",
    NessusAuthError: "scanner_auth",
    NessusRejected: "rejected_by_scanner",
    NessusNotFound: "scan_vanished",
    NessusError: "scanner_error",
}


def reason_for(exc: NessusError, overrides: Mapping[type[NessusError], str]) -> str:
    return next(reason for kind, reason in (*overrides.items(), *REASONS.items()) if isinstance(exc, kind))


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    breaker: Breaker,
    policy: RetryPolicy | None = None,
    passthrough: tuple[type[NessusError], ...] = (),
    reasons: Mapping[type[NessusError], str] | None = None,
    on_transient: Callable[[], None] | None = None,
    forever: bool = False,
) -> T:
    """Retry transient scanner errors with backoff and jitter; any other scanner error ends the task.

    Every attempt counts on ``breaker``. ``passthrough`` errors reach the caller as is;
    ``reasons`` takes precedence over ``REASONS``. ``on_transient`` runs after each transient
    error, before the wait, and may raise to stop; with ``forever`` only it can (a deadline).
    """
    policy = policy or RetryPolicy()
    overrides = reasons or {}
    attempt = 0
    while True:
        try:
            result = await call()
        except passthrough:
            raise
        except NessusTransientError as exc:
            breaker.failure()
            if on_transient is not None:
                on_transient()
            if not forever and attempt >= policy.attempts - 1:
                message = f"{what}: {exc} (after {policy.attempts} attempts)"
                raise PermanentFailure(reason_for(exc, overrides), message) from exc
            delay = policy.delay(attempt, exc.retry_after)
            attempt += 1
            log.warning("%s: transient error %s; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
        except NessusError as exc:
            raise PermanentFailure(reason_for(exc, overrides), f"{what}: {exc}") from exc
        else:
            breaker.success()
            return result


def _seconds(since: datetime | None, now: datetime) -> float:
    return (now - since).total_seconds() if since is not None else 0.0


def running_seconds(record: TaskRecord, now: datetime) -> float:
    """Time the scan has been running, not counting time spent paused by an operator."""
    paused = record.paused_seconds + (_seconds(record.paused_at, now) if record.paused else 0.0)
    return _seconds(record.started_at, now) - paused


class Lifecycle:
    def __init__(
        self,
        rt: Runtime,
        client: NessusClient,
        assignment: Assignment,
        *,
        agent_id: str,
        credentials: CredentialResolver,
        breaker: Breaker,
    ) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.client = client
        self.assignment = assignment
        self.task_id = assignment.task_id
        self.agent_id = agent_id
        self.credentials = credentials
        self.breaker = breaker
        self.policy = RetryPolicy.from_settings(rt.settings)
        self.poll_interval = rt.settings.poll_interval
        self.slot = contract.instance_key(assignment.pool, assignment.instance)
        self.host_progress: dict[str, int] = {}

    async def _retry(
        self,
        call: Callable[[], Awaitable[T]],
        what: str,
        *passthrough: type[NessusError],
        reasons: Mapping[type[NessusError], str] | None = None,
        on_transient: Callable[[], None] | None = None,
        forever: bool = False,
    ) -> T:
        return await with_retries(
            call,
            what=what,
            breaker=self.breaker,
            policy=self.policy,
            passthrough=passthrough,
            reasons=reasons,
            on_transient=on_transient,
            forever=forever,
        )

    async def run(self) -> None:
        """Drive the task to ``validating`` (export published) or to cancelled/timeout."""
        try:
            record = await self._fresh()
            if record.state is TaskState.QUEUED:
                await self._republish(record)  # handed back, then interrupted before the request went
                return
            created = False
            # Handed back only while surely never launched: before any scan exists, or right
            # after this run created it (a rerun may find a launch whose transition was lost).
            try:
                if record.nessus_scan_id is None:
                    if record.state is TaskState.DISPATCHED:
                        await self._launchable(record)
                    record, created = await self._create(record)
                if created and record.state is TaskState.DISPATCHED:
                    await self._launchable(record)
            except HandBack as back:
                await self._hand_back(str(back))
                return
            except PermanentFailure as exc:
                unlaunched = record.nessus_scan_id is None or created
                held = self.breaker.state != "closed" or self.breaker.starting
                if exc.reason != "scanner_unreachable" or not held or not unlaunched:
                    raise
                why = "is starting up" if self.breaker.starting else "opened its circuit"
                await self._hand_back(f"{self.slot} {why} before launch ({exc})")
                return
            if record.state is TaskState.DISPATCHED:
                record = await self._launch(record, created=created)
            if record.state is TaskState.RUNNING:
                await self._watch(record)
                record = await self.rt.tasks.transition(self.task_id, TaskState.EXPORTING)
                await self.rt.publish_event(record, EventKind.EXPORTING)
            if record.state is TaskState.EXPORTING:
                await self._export(record)
        except Stopped as stop:
            await self._end(stop)
        except (TaskGone, IllegalTransition) as exc:
            log.info("task ended elsewhere; nothing left to do (%s)", exc)

    # Hand back -------------------------------------------------------------------------

    async def _launchable(self, record: TaskRecord) -> None:
        """Raise HandBack when this scanner's circuit is open, it is starting up (Nessus loading
        its plugins), or a scan window holds the targets."""
        if self.breaker.state == "open":
            raise HandBack(f"the circuit of {self.slot} is open")
        if self.breaker.starting:
            raise HandBack(f"{self.slot} is starting up (loading its plugins)")
        hold = (await self._windows()).held(record.pool, record.targets, self.rt.now())
        if hold is not None:
            raise HandBack(f"scan window {hold.window} holds the targets until {hold.until.isoformat()}")

    async def _hand_back(self, why: str) -> None:
        """Undo the dispatch: the task is queued again (CAS), the slot freed, the request republished.

        In that order: a request seen by a dispatcher while the task is still dispatched would be
        taken for a lost assignment. A crash after the CAS is repaired on redelivery (``run``)."""

        def queued(r: TaskRecord) -> None:
            r.instance = None
            r.claimed_by = None
            r.nessus_scan_id = None
            r.nessus_scan_name = None

        record = await self.rt.tasks.transition(self.task_id, TaskState.QUEUED, queued)
        await capacity.release(self.rt.capacity, self.slot, self.task_id)
        await self._republish(record)
        await self.rt.publish_event(record, EventKind.QUEUED, detail=f"handed back to the queue: {why}")
        log.warning("handed the scan back to the queue: %s", why)

    async def _republish(self, record: TaskRecord) -> None:
        request = self.assignment.request
        headers = {
            contract.HDR_MSG_ID: contract.returned_msg_id(self.task_id, record.retries, record.dispatch_attempts),
            contract.HDR_TASK_ID: self.task_id,
        }
        await publish(self.rt.js, contract.request_subject(record.pool, self.task_id), encode(request), headers)

    async def _windows(self) -> ScanWindows:
        meta = await read_fleet_meta(self.rt.registry)
        return meta.rules.scan_windows() if meta is not None else ScanWindows()

    async def _fresh(self) -> TaskRecord:
        """The current record; raises Stopped when an operator asked to cancel, TaskGone when it ended."""
        record = await self.rt.tasks.get(self.task_id)
        if record is None:
            raise PermanentFailure("unknown_task", "assignment for a task that has no record")
        if record.state.terminal or record.state is TaskState.VALIDATING:
            raise TaskGone(f"task is {record.state}")
        if record.cancel_requested is not None:
            raise Stopped(TaskState.CANCELLED, "cancelled", f"cancelled: {record.cancel_requested}")
        return record

    # Create -----------------------------------------------------------------------------

    async def _template(self, scan_type: ScanType) -> str:
        wanted = getattr(self.settings, f"template_{scan_type}")
        if len(wanted) == UUID_LEN and wanted.count("-") == 4:
            return str(wanted)
        templates = await self._retry(self.client.templates, "list templates")
        for template in templates:
            if wanted in (template.name, template.title, template.uuid):
                return template.uuid
        names = sorted(t.name for t in templates)
        raise PermanentFailure("template_not_found", f"no Nessus template {wanted!r} for {scan_type}; has {names}")

    async def _create(self, record: TaskRecord) -> tuple[TaskRecord, bool]:
        """Create the Nessus scan, or adopt the one an earlier run made; True if created now."""
        name = nessus_scan_name(self.task_id, record.retries)
        ssh = self._ssh_credential()
        template = await self._template(self.assignment.request.scan_type)
        claimed_before = await self._claim()
        scan_id, created = await self._create_or_adopt(name, template, ssh, may_exist=claimed_before)
        await hygiene.remember(self.rt, self.assignment.pool, self.assignment.instance, self.task_id, name, scan_id)

        def remember(r: TaskRecord) -> None:
            r.nessus_scan_id = scan_id
            r.nessus_scan_name = name

        return await self.rt.tasks.update(self.task_id, remember), created

    def _ssh_credential(self) -> SSHCredential | None:
        try:
            target_credential = self.credentials.resolve(self.assignment.request)
        except CredentialError as exc:
            raise PermanentFailure("credentials_unavailable", str(exc)) from None
        return to_nessus(target_credential) if target_credential is not None else None

    async def _claim(self) -> bool:
        """Write the claim before any scan is created; True if an agent had claimed the task before.

        A task nobody claimed before has no scan to adopt, so only a task claimed before pays
        for listing the scanner's scans.
        """
        previous: list[str | None] = []

        def claim(r: TaskRecord) -> None:
            previous.append(r.claimed_by)
            if r.claimed_by not in (None, self.agent_id):
                log.info("taking over from agent %s", r.claimed_by)
            r.claimed_by = self.agent_id

        await self.rt.tasks.update(self.task_id, claim)
        return previous[-1] is not None

    async def _create_or_adopt(
        self, name: str, template: str, ssh: SSHCredential | None, *, may_exist: bool
    ) -> tuple[int, bool]:
        """The id of the scan named ``name``, created unless it may exist and is found; True if created."""
        request = self.assignment.request

        async def attempt() -> tuple[int, bool]:
            if may_exist:
                existing = await self._retry(lambda: self.client.find_scans_by_name(name), "list scans")
                if existing:
                    scan_id = min(s.id for s in existing)
                    log.info("adopting Nessus scan %s found by name", scan_id)
                    return scan_id, False
            try:
                scan_id = await self.client.create_scan(
                    name=name,
                    targets=request.targets,
                    template_uuid=template,
                    description=request.description or request.name,
                    credentials=ssh,
                )
            except ValueError as exc:
                raise PermanentFailure("invalid_targets", str(exc)) from exc
            return scan_id, True

        def reply_lost() -> None:
            # The scan may exist although the reply was lost: look it up by name before retrying.
            nonlocal may_exist
            may_exist = True

        return await self._retry(
            attempt, "create scan", reasons={NessusRejected: "targets_rejected"}, on_transient=reply_lost
        )

    # Launch -----------------------------------------------------------------------------

    async def _launch(self, record: TaskRecord, *, created: bool) -> TaskRecord:
        """Launch once. ``created``: this run made the scan just now, so it is surely unlaunched;
        otherwise (a rerun, an adopted scan) Nessus says whether it already runs."""
        scan_id = self._scan_id(record)
        await self._fresh()
        status = "empty"
        if not created:
            status = (await self._retry(lambda: self.client.scan_details(scan_id), "scan details")).status
        if status == "empty":
            try:
                # A launch whose reply was lost is retried and answered 409: adopted, never run twice.
                await self._retry(lambda: self.client.launch(scan_id), "launch", NessusConflict)
            except NessusConflict:
                log.info("scan %s is already running; adopting it", scan_id)
        elif status in NESSUS_ENDED:
            raise PermanentFailure("scan_" + status, f"Nessus scan {scan_id} is {status}")
        else:
            log.info("Nessus scan %s already launched (%s); adopting it", scan_id, status)
        record = await self.rt.tasks.transition(self.task_id, TaskState.RUNNING)
        await self.rt.publish_event(record, EventKind.RUNNING, detail=f"nessus scan {scan_id}")
        return record

    # Watch ------------------------------------------------------------------------------

    async def _watch(self, record: TaskRecord) -> None:
        """Poll until Nessus reports completed; apply pause/resume/cancel and the deadlines."""
        scan_id = self._scan_id(record)
        written_at = 0.0
        written: tuple[int, dict[str, int]] = (record.progress, dict(record.host_progress))
        loop = asyncio.get_running_loop()

        windows = await self._windows()
        hold: Hold | None = None

        async def poll() -> ScanDetails:
            nonlocal record, hold
            honour_cancel()
            hold = windows.held(record.pool, record.targets, self.rt.now())
            if hold is not None and hold.on_running == "stop":
                raise Stopped(
                    TaskState.TIMEOUT,
                    "window_stopped",
                    f"stopped by scan window {hold.window} (until {hold.until.isoformat()}); "
                    "its unscanned hosts are recorded for a rollover",
                )
            record = await self._apply_pause(await self._fresh(), scan_id, hold)
            return await self.client.scan_details(scan_id)

        def outage() -> None:
            # A long scan survives a scanner outage: keep polling until a deadline ends it.
            self._check_deadlines(record, None)

        while True:
            details = await self._retry(poll, f"poll scan {scan_id}", on_transient=outage, forever=True)
            if details.status == "completed":
                return
            if details.status in NESSUS_ENDED:
                raise PermanentFailure("scan_" + details.status, f"Nessus reports the scan {details.status}")
            self._check_deadlines(record, details.status)
            progress = (int(details.progress), {h.hostname: h.progress for h in details.hosts})
            self.host_progress = progress[1]
            if progress != written and loop.time() - written_at >= self.settings.progress_interval:
                await self._write_progress(*progress)
                written, written_at = progress, loop.time()
            await asyncio.sleep(self._poll_delay(windows, record, hold))

    def _poll_delay(self, windows: ScanWindows, record: TaskRecord, hold: Hold | None) -> float:
        """The poll interval, cut short so a window's start or end is acted on when it comes."""
        now = self.rt.now()
        change = hold.until if hold is not None else windows.next_start(record.pool, record.targets, now)
        if change is None:
            return self.poll_interval
        return max(0.05, min(self.poll_interval, (change - now).total_seconds()))

    def _check_deadlines(self, record: TaskRecord, status: str | None) -> None:
        now = utcnow()
        if status == "pending" and _seconds(record.started_at, now) > self.settings.pending_timeout:
            raise Stopped(
                TaskState.TIMEOUT,
                "pending_timeout",
                f"the scan stayed pending on Nessus for over {self.settings.pending_timeout:g}s",
            )
        if running_seconds(record, now) > self.settings.running_timeout:
            raise Stopped(
                TaskState.TIMEOUT,
                "running_timeout",
                f"the scan ran for over {self.settings.running_timeout:g}s without completing",
            )

    async def _write_progress(self, progress: int, hosts: dict[str, int]) -> None:
        def apply(r: TaskRecord) -> None:
            r.progress = progress
            r.host_progress = hosts

        await self.rt.tasks.update(self.task_id, apply)

    async def _apply_pause(self, record: TaskRecord, scan_id: int, hold: Hold | None = None) -> TaskRecord:
        """Bring Nessus in line with what the operator asked for and the scan windows (a
        blackout pauses it, its end resumes it unless the operator paused it too), then
        record what holds."""
        window = hold.window if hold is not None else None
        pausing = record.pause_requested or window is not None
        if pausing == record.paused:
            if record.window != window and (window is not None or record.window is not None):
                return await self.rt.tasks.update(self.task_id, functools.partial(_set_window, hold=hold))
            return record
        action = self.client.pause if pausing else self.client.resume
        try:
            await self._retry(lambda: action(scan_id), "pause" if pausing else "resume", NessusConflict)
        except NessusConflict as exc:
            log.info("scan %s: %s refused by Nessus (%s)", scan_id, action.__name__, exc)
            if pausing and not record.pause_requested:
                return record  # a window met a scan that is no longer running (it just completed)
        now = utcnow()

        def apply(r: TaskRecord) -> None:
            if pausing:
                r.paused, r.paused_at = True, now
            else:
                r.paused_seconds += _seconds(r.paused_at, now)
                r.paused, r.paused_at = False, None
            _set_window(r, hold)

        record = await self.rt.tasks.update(self.task_id, apply)
        why = f"scan window {window}" if window is not None else (record.window or "operator")
        await self.rt.publish_event(
            record, EventKind.PAUSED if pausing else EventKind.RESUMED, detail=f"nessus scan {scan_id} ({why})"
        )
        return record

    # Export -----------------------------------------------------------------------------

    async def _store_export(self, scan_id: int, started: datetime) -> StoredObject:
        """Copy the scan's export into the object store; an interrupted download asks for a new export."""

        async def attempt() -> StoredObject:
            handle = await self._retry(lambda: self.client.export_request(scan_id), "request export")
            await self._export_ready(scan_id, handle, started)
            return await put_object_stream(
                self.rt.js,
                contract.EXPORTS_OBJECTS,
                contract.export_object_name(self.task_id),
                self.client.export_stream(handle),
            )

        return await with_retries(
            attempt,
            what="download of the export",
            # Requesting and polling the export count on the circuit in their own retries;
            # an interrupted download stream does not.
            breaker=NullBreaker(),
            policy=self.policy,
            reasons={NessusError: "export_download"},
        )

    async def _export_ready(self, scan_id: int, handle: ExportHandle, started: datetime) -> None:
        status_of = functools.partial(self.client.export_status, handle)
        while True:
            honour_cancel()
            await self._fresh()
            if _seconds(started, utcnow()) > self.settings.export_timeout:
                raise Stopped(
                    TaskState.TIMEOUT,
                    "export_timeout",
                    f"the export was not ready after {self.settings.export_timeout:g}s",
                )
            status = await self._retry(status_of, "export status")
            if status == "ready":
                return
            if status == "error":
                raise PermanentFailure("export_error", f"Nessus failed to build the export of scan {scan_id}")
            await asyncio.sleep(min(self.poll_interval, 2.0))

    async def _export(self, record: TaskRecord) -> None:
        scan_id = self._scan_id(record)
        stored = await self._store_export(scan_id, record.exporting_at or utcnow())
        await self._fresh()  # a cancel that came during the download wins over validation

        def exported(r: TaskRecord) -> None:
            r.export = ExportRef(object_name=stored.name, size=stored.size, sha256=stored.sha256)
            r.progress = 100

        record = await self.rt.tasks.update(self.task_id, exported)
        # The scanner is idle once its export is stored: its slot goes back now, not after validation.
        await capacity.release(self.rt.capacity, self.slot, self.task_id)
        request = self.assignment.request
        event = ExportEvent(
            task_id=self.task_id,
            trace_id=record.trace_id,
            pool=self.assignment.pool,
            instance=self.assignment.instance,
            scan_type=request.scan_type,
            expected_hosts=expected_hosts(request.targets),
            object_name=stored.name,
            size=stored.size,
            sha256=stored.sha256,
            nessus_scan_id=scan_id,
            exported_at=utcnow(),
        )
        headers = {contract.HDR_MSG_ID: contract.export_msg_id(self.task_id, stored.sha256)}
        await publish(self.rt.js, contract.event_subject(self.task_id, EventKind.EXPORTED), encode(event), headers)
        log.info("export stored: %d bytes, sha256 %s", stored.size, stored.sha256)

    # End --------------------------------------------------------------------------------

    async def _end(self, stop: Stopped) -> None:
        """Stop the Nessus scan (best effort: it may already be over), note which hosts it reached,
        then end the task."""
        record = await self.rt.tasks.get(self.task_id)
        reached: tuple[list[str], list[str]] | None = None
        if record is not None and record.nessus_scan_id is not None:
            scan_id = record.nessus_scan_id
            try:
                await self._retry(lambda: self.client.stop(scan_id), "stop scan", NessusConflict, NessusNotFound)
                log.info("stopped Nessus scan %s (%s)", scan_id, stop.reason)
            except (NessusConflict, NessusNotFound):
                log.info("Nessus scan %s was not running; nothing to stop", scan_id)
            except PermanentFailure as exc:
                log.warning("could not stop Nessus scan %s: %s", scan_id, exc)
            reached = await self._hosts_reached(scan_id, record.targets)

        def note_hosts(r: TaskRecord) -> None:
            if reached is not None:
                r.hosts_done, r.hosts_left = reached
                if stop.reason == "window_stopped":
                    r.unscanned = list(reached[1])

        if reached is None and stop.reason == "window_stopped":
            done = [h for h, progress in self.host_progress.items() if progress >= 100]
            reached = (done, [t for t in self.assignment.request.targets if t not in done])
        await end_task(
            self.rt, self.task_id, stop.target, error=str(stop), reason=stop.reason, slot=self.slot, mutate=note_hosts
        )

    async def _hosts_reached(self, scan_id: int, targets: list[str]) -> tuple[list[str], list[str]] | None:
        """(done, left) per Nessus's per-host status of the stopped scan; None if Nessus cannot say."""
        try:
            details = await self._retry(lambda: self.client.scan_details(scan_id), "scan details")
        except PermanentFailure as exc:
            log.warning("no per-host status of Nessus scan %s: %s", scan_id, exc)
            return None
        return split_hosts(targets, {h.hostname: h.progress for h in details.hosts})

    @staticmethod
    def _scan_id(record: TaskRecord) -> int:
        assert record.nessus_scan_id is not None
        return record.nessus_scan_id


def _set_window(record: TaskRecord, hold: Hold | None) -> None:
    record.window = hold.window if hold is not None else None
    record.window_until = hold.until if hold is not None else None
