"""The validator: turns each stored export into a verdict and the task's results.

It reads export events from SCAN_EVENTS (a limits stream, so an operator can rewind the
consumer to re-validate old exports), parses the object in a worker thread with bounded
memory, and ends the task. Hostile or broken exports fail the task with the reason and a
dead letter; the service itself keeps running.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from pathlib import Path

import msgspec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import FetchTimeoutError

from scanfleet.common import capacity, contract
from scanfleet.common.config import Settings
from scanfleet.common.logs import task_context
from scanfleet.common.messages import ExportEvent, decode
from scanfleet.common.runtime import (
    Runtime,
    dead_letter_for,
    keep_in_progress,
    run,
    service_runtime,
    wait_stopping,
)
from scanfleet.common.tasks import FindingsRef, IllegalTransition, TaskRecord, TaskState
from scanfleet.common.telemetry import extract_context, tracer
from scanfleet.validator import metrics
from scanfleet.validator.parsing import ExportRejected, parse_export
from scanfleet.validator.results import Verdict, judge
from scanfleet.validator.store import FindingsSpool, publish_findings

log = logging.getLogger("scanfleet.validator")
_tracer = tracer("scanfleet.validator")


class Validator:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def run(self) -> None:
        sub = await self.rt.js.pull_subscribe_bind(durable=contract.VALIDATOR_CONSUMER, stream=contract.EVENTS_STREAM)
        while True:
            try:
                msgs = await sub.fetch(batch=4, timeout=2.0)
            except (NatsTimeout, FetchTimeoutError, TimeoutError):
                continue
            for msg in msgs:
                await self.handle(msg)

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
                _tracer.start_as_current_span(
                    "validate export",
                    context=extract_context(msg.headers),
                    attributes={"scanfleet.task_id": event.task_id},
                ),
            ):
                await self._validate(msg, event)
        finally:
            keepalive.cancel()

    async def _validate(self, msg: Msg, event: ExportEvent) -> None:
        record = await self.rt.tasks.get(event.task_id)
        if record is None or record.state.terminal:
            await msg.ack()
            return
        if record.state is TaskState.EXPORTING:
            record = await self.rt.tasks.transition(event.task_id, TaskState.VALIDATING)
            await self.rt.publish_event(record, "validating")
        verdict, findings = await self._judge(event)
        if verdict.dead_letter:
            # Before the terminal event, so whoever sees the task fail also finds its dead letter.
            await self._dead_letter(msg, event.task_id, event.trace_id, verdict.reason or "invalid", verdict.message)
        await self._finish(record, event, verdict, findings)
        await msg.ack()

    async def _judge(self, event: ExportEvent) -> tuple[Verdict, FindingsRef | None]:
        """Parse once, spooling findings to disk; store them only if the export was usable."""
        store = await self.rt.js.object_store(contract.EXPORTS_OBJECTS)
        with tempfile.TemporaryDirectory(prefix="scanfleet-validate-") as tmp:
            path = Path(tmp) / "export.nessus"
            with path.open("wb") as sink:
                await store.get(event.object_name, writeinto=sink)
            digest = await asyncio.to_thread(_sha256, path)
            if digest != event.sha256:
                return Verdict.rejected(
                    "checksum_mismatch", f"export sha256 {digest} != announced {event.sha256}"
                ), None
            spool = FindingsSpool(Path(tmp) / "findings.bin")
            try:
                summary = await asyncio.to_thread(
                    parse_export, path, on_finding=spool, expected_hosts=event.expected_hosts
                )
            except ExportRejected as exc:
                return Verdict.rejected(exc.reason, exc.message), None
            finally:
                spool.close()
            path.unlink()
            findings = await publish_findings(self.rt.js, event.task_id, spool, summary)
        metrics.FINDINGS_STORED.inc(findings.count)
        return judge(summary, event.scan_type, export_size=event.size), findings

    async def _finish(
        self, record: TaskRecord, event: ExportEvent, verdict: Verdict, findings: FindingsRef | None
    ) -> None:
        target = TaskState.COMPLETED if verdict.ok else TaskState.FAILED

        def apply(r: TaskRecord) -> None:
            r.results = verdict.summary
            r.findings = findings
            r.warnings = list(verdict.warnings)
            r.troubleshooting = dict(verdict.troubleshooting)
            if not verdict.ok:
                r.error = verdict.message
                r.error_reason = verdict.reason

        try:
            record = await self.rt.tasks.transition(event.task_id, target, apply)
        except IllegalTransition as exc:
            log.info("task already %s; nothing to record", exc.current)
        else:
            await self.rt.publish_event(record, str(target), detail=verdict.message)
            log.info("validation %s: %s", "passed" if verdict.ok else "failed", verdict.message)
            _count(event, verdict)
        await capacity.release(self.rt.capacity, contract.instance_key(event.pool, event.instance), event.task_id)

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
    metrics.VALIDATIONS.labels(outcome="completed" if verdict.ok else "failed").inc()
    if not verdict.ok:
        metrics.VALIDATION_FAILURES.labels(reason=verdict.reason or "unknown").inc()
    if verdict.reason == "auth_failed":
        metrics.AUTH_FAILURES.labels(pool=event.pool, scan_type=event.scan_type).inc()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def serve(settings: Settings) -> None:
    async with service_runtime("validator", settings) as rt:
        await wait_stopping(rt, asyncio.create_task(Validator(rt).run()))


def main() -> int:
    return run("validator", serve)
