"""One task's life on one Nessus scanner: create (or adopt), launch, poll, export.

Each step is written to the task record before the next begins; a rerun after a crash
reads the record and continues from where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from scanfleet.agent.nessus import (
    NessusApiUnavailable,
    NessusAuthError,
    NessusClient,
    NessusConflict,
    NessusError,
    NessusNotFound,
    NessusRejected,
    NessusTransientError,
)
from scanfleet.common import contract
from scanfleet.common.bus import put_object_stream
from scanfleet.common.messages import Assignment, ExportEvent, encode, utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import ExportRef, IllegalTransition, TaskRecord, TaskState
from scanfleet.common.telemetry import inject_headers

log = logging.getLogger("scanfleet.agent")

T = TypeVar("T")

NESSUS_FAILED = {"canceled", "aborted", "stopped"}
ADVANCED_SCAN = "ad629e16-03b6-8c1d-cef6-ef8c9dd3c658d24bd260ef5f9e66"


class PermanentFailure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def nessus_scan_name(task_id: str) -> str:
    """Unique per task, so a scan created just before a crash can be found and adopted."""
    return f"scanfleet-{task_id}"


def expected_hosts(targets: list[str]) -> int:
    """Targets that name one host each; a CIDR or range counts once (alive hosts are unknown)."""
    return len(targets)


async def with_retries(
    call: Callable[[], Awaitable[T]], *, what: str, attempts: int = 6, base: float = 1.0, cap: float = 30.0
) -> T:
    """Retry transient scanner errors with exponential backoff and jitter; map the rest."""
    for attempt in range(attempts):
        try:
            return await call()
        except NessusTransientError as exc:
            if attempt == attempts - 1:
                raise PermanentFailure("scanner_unreachable", f"{what}: {exc} (after {attempts} attempts)") from exc
            delay = min(cap, base * 2**attempt) * (0.5 + random.random() / 2)
            log.warning("%s: transient error %s; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
        except NessusApiUnavailable as exc:
            raise PermanentFailure("scan_api_unavailable", f"{what}: {exc}") from exc
        except NessusAuthError as exc:
            raise PermanentFailure("scanner_auth", f"{what}: {exc}") from exc
        except NessusRejected as exc:
            raise PermanentFailure("rejected_by_scanner", f"{what}: {exc}") from exc
    raise AssertionError("unreachable")


class Lifecycle:
    def __init__(
        self,
        rt: Runtime,
        client: NessusClient,
        assignment: Assignment,
        *,
        poll_interval: float,
    ) -> None:
        self.rt = rt
        self.client = client
        self.assignment = assignment
        self.task_id = assignment.task_id
        self.poll_interval = poll_interval

    async def run(self) -> None:
        record = await self.rt.tasks.get(self.task_id)
        if record is None:
            raise PermanentFailure("unknown_task", "assignment for a task that has no record")
        if record.state.terminal:
            raise IllegalTransition(self.task_id, record.state, TaskState.RUNNING)
        if record.nessus_scan_id is None:
            record = await self._create(record)
        if record.state is TaskState.DISPATCHED:
            record = await self._launch(record)
        if record.state is TaskState.RUNNING:
            await self._poll(record)
            record = await self.rt.tasks.transition(self.task_id, TaskState.EXPORTING)
            await self.rt.publish_event(record, "exporting")
        if record.state is TaskState.EXPORTING:
            await self._export(record)

    async def _create(self, record: TaskRecord) -> TaskRecord:
        name = nessus_scan_name(self.task_id)
        existing = await with_retries(lambda: self.client.find_scans_by_name(name), what="list scans")
        if existing:
            scan_id = existing[0].id
            log.info("adopting Nessus scan %s created before a restart", scan_id)
        else:
            request = self.assignment.request
            scan_id = await with_retries(
                lambda: self.client.create_scan(
                    name=name,
                    targets=request.targets,
                    template_uuid=ADVANCED_SCAN,
                    description=request.description or request.name,
                ),
                what="create scan",
            )

        def remember(r: TaskRecord) -> None:
            r.nessus_scan_id = scan_id
            r.nessus_scan_name = name

        return await self.rt.tasks.update(self.task_id, remember)

    async def _launch(self, record: TaskRecord) -> TaskRecord:
        scan_id = self._scan_id(record)
        details = await with_retries(lambda: self.client.scan_details(scan_id), what="scan details")
        if details.status in ("empty", "canceled", "aborted", "imported"):
            try:
                await with_retries(lambda: self.client.launch(scan_id), what="launch")
            except NessusConflict:
                log.info("scan %s already running; adopting it", scan_id)
        record = await self.rt.tasks.transition(self.task_id, TaskState.RUNNING)
        await self.rt.publish_event(record, "running", detail=f"nessus scan {scan_id}")
        return record

    async def _poll(self, record: TaskRecord) -> None:
        scan_id = self._scan_id(record)
        last_progress = record.progress
        while True:
            try:
                details = await with_retries(lambda: self.client.scan_details(scan_id), what="poll scan")
            except NessusNotFound as exc:
                raise PermanentFailure("scan_vanished", f"Nessus scan {scan_id} disappeared") from exc
            if details.status == "completed":
                return
            if details.status in NESSUS_FAILED:
                raise PermanentFailure("scan_" + details.status, f"Nessus reports the scan {details.status}")
            progress = int(details.progress)
            if progress != last_progress:
                last_progress = progress

                def set_progress(r: TaskRecord, p: int = progress) -> None:
                    r.progress = p

                await self.rt.tasks.update(self.task_id, set_progress)
            await asyncio.sleep(self.poll_interval)

    async def _export(self, record: TaskRecord) -> None:
        scan_id = self._scan_id(record)
        handle = await with_retries(lambda: self.client.export_request(scan_id), what="request export")
        deadline = asyncio.get_running_loop().time() + self.rt.settings.export_timeout
        while True:
            status = await with_retries(lambda: self.client.export_status(handle), what="export status")
            if status == "ready":
                break
            if status == "error":
                raise PermanentFailure("export_error", f"Nessus failed to build the export of scan {scan_id}")
            if asyncio.get_running_loop().time() > deadline:
                raise PermanentFailure("export_timeout", f"export not ready after {self.rt.settings.export_timeout}s")
            await asyncio.sleep(min(self.poll_interval, 2.0))
        name = contract.export_object_name(self.task_id)
        try:
            stored = await put_object_stream(
                self.rt.js, contract.EXPORTS_OBJECTS, name, self.client.export_stream(handle)
            )
        except NessusError as exc:
            raise PermanentFailure("export_download", f"download of the export failed: {exc}") from exc

        def exported(r: TaskRecord) -> None:
            r.export = ExportRef(object_name=stored.name, size=stored.size, sha256=stored.sha256)
            r.progress = 100

        record = await self.rt.tasks.update(self.task_id, exported)
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
        headers = inject_headers({contract.HDR_MSG_ID: f"export:{self.task_id}:{stored.sha256[:16]}"})
        await self.rt.js.publish(contract.event_subject(self.task_id, "exported"), encode(event), headers=headers)
        log.info("export stored: %d bytes, sha256 %s", stored.size, stored.sha256)

    @staticmethod
    def _scan_id(record: TaskRecord) -> int:
        assert record.nessus_scan_id is not None
        return record.nessus_scan_id
