"""The validator: turns each stored export into a verdict and the task's results.

It reads export events from SCAN_EVENTS (a limits stream, so an operator can rewind the
consumer to re-validate old exports), parses the object in a worker thread with bounded
memory, and ends the task. Hostile or broken exports fail the task with the reason and a
dead letter; the service itself keeps running.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from scanfleet.common import contract, ops_http
from scanfleet.common.bus import dead_letter_for, keep_in_progress, pull
from scanfleet.common.config import Settings
from scanfleet.common.contract import EventKind
from scanfleet.common.logs import task_context
from scanfleet.common.messages import ExportEvent, decode, utcnow
from scanfleet.common.runtime import Runtime, run, service_runtime, wait_stopping
from scanfleet.common.task_ops import end_task
from scanfleet.common.tasks import FindingsRef, TaskRecord, TaskState
from scanfleet.common.telemetry import consumer_span
from scanfleet.validator import metrics, revalidation
from scanfleet.validator.parallel import ParsePool
from scanfleet.validator.parsing import ExportRejected
from scanfleet.validator.results import Verdict, judge, no_hosts
from scanfleet.validator.store import FindingsSpool, publish_findings

log = logging.getLogger("scanfleet.validator")


def default_parse_workers() -> int:
    """Parse worker processes: one per core, at most two (a third adds memory, not speed), none on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if cores < 2 else 2


class Validator:
    def __init__(
        self,
        rt: Runtime,
        *,
        version: str = revalidation.VALIDATOR_VERSION,
        parse_workers: int | None = None,
    ) -> None:
        self.rt = rt
        self.version = version
        if parse_workers is None:
            parse_workers = rt.settings.validator_parse_workers
        self.parser = ParsePool(default_parse_workers() if parse_workers is None else parse_workers)

    async def run(self) -> None:
        starting = asyncio.create_task(asyncio.to_thread(self.parser.start))
        try:
            async for msgs in pull(self.rt.js, contract.EVENTS_STREAM, contract.VALIDATOR_CONSUMER, batch=4):
                for msg in msgs:
                    try:
                        await self.handle(msg)
                    except Exception:
                        # A NATS outage mid-validation: the event is redelivered and validated again.
                        log.exception("validating %s was interrupted; it will be redelivered", msg.subject)
        finally:
            await asyncio.gather(starting, return_exceptions=True)
            await asyncio.to_thread(self.parser.close)

    async def handle(self, msg: Msg) -> None:
        try:
            event = decode(msg.data, ExportEvent)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            await self._dead_letter(msg, None, None, "unparseable", f"cannot decode export event: {exc}")
            await msg.term()
            return
        keepalive = asyncio.create_task(keep_in_progress(msg, contract.VALIDATOR_ACK_WAIT / 4))
        try:
            with (
                task_context(event.task_id, event.trace_id),
                consumer_span(
                    msg, "validate export", trace_id=event.trace_id, attributes={"scanfleet.task_id": event.task_id}
                ),
            ):
                await self._validate(msg, event)
        finally:
            keepalive.cancel()

    async def _validate(self, msg: Msg, event: ExportEvent) -> None:
        record = await self.rt.tasks.get(event.task_id)
        if record is None:
            await msg.ack()
            return
        if record.state.terminal:
            await self._revalidate(msg, event, record)
            return
        if record.state is TaskState.EXPORTING:
            record = await self.rt.tasks.transition(event.task_id, TaskState.VALIDATING)
            await self.rt.publish_event(record, EventKind.VALIDATING)
        verdict, findings, digest = await self._judge(event)
        if verdict.dead_letter:
            # Before the terminal event, so whoever sees the task fail also finds its dead letter.
            await self._dead_letter(msg, event.task_id, event.trace_id, verdict.reason or "invalid", verdict.message)
        await self._finish(record, event, verdict, findings, digest)
        await msg.ack()

    async def _revalidate(self, msg: Msg, event: ExportEvent, record: TaskRecord) -> None:
        """An export event for an ended task: a rewound consumer, or a plain redelivery."""
        skip = revalidation.skip_reason(record, self.version, await self._stored_sha256(event))
        if skip is not None:
            log.info("export event for a task that ended %s: %s", record.state, skip)
            await msg.ack()
            return
        state = record.state
        verdict, findings, digest = await self._judge(event)
        if verdict.dead_letter:
            await self._dead_letter(msg, event.task_id, event.trace_id, verdict.reason or "invalid", verdict.message)

        def apply(r: TaskRecord) -> None:
            revalidation.apply_revalidation(
                r, state=state, verdict=verdict, findings=findings, version=self.version, sha256=digest, now=utcnow()
            )

        try:
            record = await self.rt.tasks.update(event.task_id, apply)
        except revalidation.StateChanged as exc:
            log.info("re-validation not recorded: %s", exc)
        else:
            await self.rt.publish_event(
                record, EventKind.REVALIDATED, detail=f"validator {self.version}: {verdict.message}"
            )
            log.info("re-validated by validator %s: %s", self.version, verdict.message)
        await msg.ack()

    async def _stored_sha256(self, event: ExportEvent) -> str | None:
        """The stored export's SHA-256 from its object info (no download); ``None`` if it is gone."""
        store = await self.rt.js.object_store(contract.EXPORTS_OBJECTS)
        try:
            info = await store.get_info(event.object_name)
        except NotFoundError:
            return None
        digest = info.digest or ""
        if not digest.startswith("SHA-256="):
            return ""
        return base64.urlsafe_b64decode(digest.removeprefix("SHA-256=") + "==").hex()

    async def _judge(self, event: ExportEvent) -> tuple[Verdict, FindingsRef | None, str]:
        """Parse once, spooling findings to disk; store them only if the export was usable.

        Also returns the SHA-256 of the export as downloaded, for the record's validation stamp.
        """
        store = await self.rt.js.object_store(contract.EXPORTS_OBJECTS)
        with tempfile.TemporaryDirectory(prefix="scanfleet-validate-") as tmp:
            path = Path(tmp) / "export.nessus"
            with path.open("wb") as sink:
                await store.get(event.object_name, writeinto=sink)
            digest = await asyncio.to_thread(_sha256, path)
            if digest != event.sha256:
                message = f"export sha256 {digest} != announced {event.sha256}"
                return Verdict.rejected("checksum_mismatch", message), None, digest
            spool = FindingsSpool(Path(tmp) / "findings.bin")
            try:
                summary = await asyncio.to_thread(self.parser.parse, path, spool, expected_hosts=event.expected_hosts)
            except ExportRejected as exc:
                if exc.reason == "no_hosts":
                    return no_hosts(event.scan_type, export_size=event.size), None, digest
                return Verdict.rejected(exc.reason, exc.message), None, digest
            finally:
                spool.close()
            path.unlink()
            findings = await publish_findings(self.rt.js, event.task_id, spool, summary)
        metrics.FINDINGS_STORED.inc(findings.count)
        return judge(summary, event.scan_type, export_size=event.size), findings, digest

    async def _finish(
        self, record: TaskRecord, event: ExportEvent, verdict: Verdict, findings: FindingsRef | None, digest: str
    ) -> None:
        target = TaskState.COMPLETED if verdict.ok else TaskState.FAILED

        def apply(r: TaskRecord) -> None:
            r.results = verdict.summary
            r.findings = findings
            r.validation = revalidation.first_stamp(verdict, self.version, digest, utcnow())
            r.warnings = list(verdict.warnings)
            r.troubleshooting = dict(verdict.troubleshooting)

        ended = await end_task(
            self.rt,
            event.task_id,
            target,
            error=None if verdict.ok else verdict.message,
            reason=None if verdict.ok else verdict.reason,
            detail=verdict.message,
            mutate=apply,
            slot=contract.instance_key(event.pool, event.instance),
        )
        if ended is not None:
            log.info("validation %s: %s", "passed" if verdict.ok else "failed", verdict.message)
            _count(event, verdict)

    async def _dead_letter(self, msg: Msg, task_id: str | None, trace_id: str | None, reason: str, error: str) -> None:
        await self.rt.dead_letter(
            dead_letter_for(
                msg,
                stage="validator",
                reason=reason,
                error=error,
                task_id=task_id,
                trace_id=trace_id,
                keep_original=True,
            )
        )


def _count(event: ExportEvent, verdict: Verdict) -> None:
    metrics.VALIDATIONS.labels(pool=event.pool, result="success" if verdict.ok else "failed").inc()
    if not verdict.ok:
        metrics.VALIDATION_FAILURES.labels(pool=event.pool, reason=verdict.reason or "unknown").inc()
    if verdict.reason == "auth_failed":
        metrics.AUTH_FAILURES.labels(pool=event.pool, scan_type=event.scan_type).inc()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def serve(settings: Settings) -> None:
    async with (
        service_runtime("validator", settings) as rt,
        ops_http.serving(rt, checks={"exports_store": exports_store(rt)}),
    ):
        await wait_stopping(rt, asyncio.create_task(Validator(rt).run()))


def exports_store(rt: Runtime) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        await rt.js.object_store(contract.EXPORTS_OBJECTS)
        return True

    return check


def main() -> int:
    return run("validator", serve)
