"""What the gateway does, independent of how it is asked (MCP tool or REST call)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from typing import Any

import msgspec
from nats.js.errors import KeyWrongLastSequenceError

from scanfleet.common import contract
from scanfleet.common.bus import kv_get
from scanfleet.common.contract import EventKind
from scanfleet.common.credentials import CredentialError, TargetCredential
from scanfleet.common.logs import task_context
from scanfleet.common.messages import ScanType, utcnow
from scanfleet.common.metrics import SCANS
from scanfleet.common.mirror import FleetMirror
from scanfleet.common.registry import ScannerView, fleet_view, read_fleet_meta
from scanfleet.common.runtime import Runtime
from scanfleet.common.targets import InvalidTarget, parse_targets
from scanfleet.common.task_ops import EnqueueFailed, enqueue
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.common.telemetry import current_trace_id, tracer
from scanfleet.gateway import views
from scanfleet.gateway.queue import QueueView
from scanfleet.gateway.sealing import CredentialSealer

log = logging.getLogger("scanfleet.gateway")
_tracer = tracer("scanfleet.gateway")


class GatewayError(Exception):
    """A refusal the caller can act on; ``status`` maps to HTTP, ``details`` helps fix it."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class SubmitScan(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    targets: str | list[str]
    name: str
    description: str = ""
    scanner_pool: str | None = None
    scanner_instance: str | None = None
    idempotency_key: str | None = None
    scan_type: ScanType = "untrusted"
    credential_ref: str | None = None
    credentials: TargetCredential | None = None


class IdempotencyClaim(msgspec.Struct, kw_only=True):
    task_id: str
    request_hash: str


MAX_NAME = 200
MAX_DESCRIPTION = 2000


def new_task_id() -> str:
    """Sortable by submission time, unique, and safe as a subject token."""
    return f"{utcnow():%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}"


def request_hash(submit: SubmitScan, targets: list[str], pool: str) -> str:
    """What makes two submissions the same request; never the scanner routing picked."""
    canonical = msgspec.json.encode(
        [
            submit.scan_type,
            sorted(targets),
            submit.name,
            submit.description,
            pool,
            submit.scanner_instance,
            submit.credential_ref,
        ]
    )
    return hashlib.sha256(canonical).hexdigest()


class Gateway:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.sealer = CredentialSealer.from_settings(rt.settings)
        self.mirror = FleetMirror(rt.registry, rt.capacity, rt.agents)
        self._mirroring: asyncio.Task[None] | None = None
        self.queue = QueueView(rt, self._fleet)

    async def start(self) -> None:
        """Mirror the fleet from KV watches: a submission must not re-read every bucket."""
        self._mirroring = asyncio.create_task(self.mirror.run())
        await asyncio.wait_for(self.mirror.wait_ready(), timeout=30)

    async def stop(self) -> None:
        if self._mirroring is not None:
            self._mirroring.cancel()
            await asyncio.gather(self._mirroring, return_exceptions=True)
            self._mirroring = None

    # Submission -------------------------------------------------------------------------

    async def submit(self, submit: SubmitScan) -> dict[str, Any]:
        name = submit.name.strip()
        if not name or len(name) > MAX_NAME:
            raise GatewayError(422, "invalid_name", f"name must be 1 to {MAX_NAME} characters")
        if len(submit.description) > MAX_DESCRIPTION:
            raise GatewayError(422, "invalid_description", f"description is over {MAX_DESCRIPTION} characters")
        try:
            targets = [t.text for t in parse_targets(submit.targets)]
        except InvalidTarget as exc:
            raise GatewayError(422, "invalid_targets", str(exc)) from None
        try:
            self.sealer.check(submit.scan_type, submit.credentials, submit.credential_ref)
        except CredentialError as exc:
            raise GatewayError(422, "invalid_credentials", str(exc)) from None
        views_ = await self._fleet()
        pool = await self._resolve_pool(submit, views_)
        digest = request_hash(submit, targets, pool)
        with _tracer.start_as_current_span("submit scan", attributes={"scanfleet.pool": pool}):
            trace_id = current_trace_id() or secrets.token_hex(16)
            task_id = new_task_id()
            with task_context(task_id, trace_id):
                key_hash = None
                if submit.idempotency_key:
                    key_hash = hashlib.sha256(submit.idempotency_key.encode()).hexdigest()
                    existing = await self._claim(key_hash, task_id, digest)
                    if existing is not None:
                        return existing
                record = TaskRecord(
                    task_id=task_id,
                    trace_id=trace_id,
                    scan_type=submit.scan_type,
                    pool=pool,
                    requested_instance=submit.scanner_instance,
                    targets=targets,
                    name=name,
                    description=submit.description,
                    idempotency_key_hash=key_hash,
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
                await self.rt.tasks.create(record)
                await self.rt.publish_event(record, EventKind.QUEUED)
                try:
                    await enqueue(
                        self.rt,
                        record,
                        credentials=self.sealer.seal(submit.credentials, task_id),
                        credential_ref=submit.credential_ref,
                    )
                except EnqueueFailed as exc:
                    raise GatewayError(503, "enqueue_failed", "the request could not be queued; try again") from exc
                SCANS.labels(scan_type=record.scan_type, pool=pool, status="queued").inc()
                log.info("scan queued", extra={"pool": pool, "targets": len(targets)})
                placement = await self.queue.placement(pool, task_id, views_)
        return views.submitted(record, placement, views_)

    async def _claim(self, key_hash: str, task_id: str, digest: str) -> dict[str, Any] | None:
        """Claim the idempotency key; a repeat returns the first task, a different request 409."""
        claim = msgspec.json.encode(IdempotencyClaim(task_id=task_id, request_hash=digest))
        try:
            await self.rt.idempotency.create(key_hash, claim)
            return None
        except KeyWrongLastSequenceError:
            pass
        entry = await kv_get(self.rt.idempotency, key_hash)
        if entry is None or entry.value is None:
            await self.rt.idempotency.put(key_hash, claim)
            return None
        previous = msgspec.json.decode(entry.value, type=IdempotencyClaim)
        if previous.request_hash != digest:
            raise GatewayError(
                409,
                "idempotency_conflict",
                "this idempotency_key was already used for a different request",
                task_id=previous.task_id,
            )
        record = await self.rt.tasks.get(previous.task_id)
        if record is None:
            raise GatewayError(409, "idempotency_conflict", "the task of this idempotency_key no longer exists")
        return {**views.status(record), "idempotent": True}

    async def _fleet(self) -> list[ScannerView]:
        if self._mirroring is None or self._mirroring.done():
            return await fleet_view(self.rt.registry, self.rt.capacity, self.rt.agents)
        return self.mirror.views()

    async def _resolve_pool(self, submit: SubmitScan, fleet: list[ScannerView]) -> str:
        pools = sorted({v.entry.pool for v in fleet})
        if not pools:
            raise GatewayError(503, "no_scanners", "no scanners are registered yet")
        pool = submit.scanner_pool
        if pool is None:
            meta = await read_fleet_meta(self.rt.registry)
            pool = meta.default_pool if meta and meta.default_pool else pools[0]
        if pool not in pools:
            raise GatewayError(404, "unknown_pool", f"no scanner pool named {pool!r}", valid_pools=pools)
        if submit.scanner_instance is not None:
            instances = sorted(v.entry.instance for v in fleet if v.entry.pool == pool)
            if submit.scanner_instance not in instances:
                raise GatewayError(
                    404,
                    "unknown_instance",
                    f"pool {pool!r} has no scanner named {submit.scanner_instance!r}",
                    valid_instances=instances,
                )
        return pool

    # Reads ------------------------------------------------------------------------------

    async def record(self, task_id: str) -> TaskRecord:
        if not contract.NAME_RE.match(task_id):
            raise GatewayError(404, "task_not_found", f"no task {task_id!r}")
        record = await self.rt.tasks.get(task_id)
        if record is None:
            raise GatewayError(404, "task_not_found", f"no task {task_id!r}")
        return record

    async def status(self, task_id: str) -> dict[str, Any]:
        record = await self.record(task_id)
        out = views.status(record)
        if record.state is TaskState.QUEUED:
            out.update(await self.queue.placement(record.pool, task_id))
        return out

    async def scanners(self, pool: str | None = None) -> dict[str, Any]:
        fleet = await self._fleet()
        if pool is not None and pool not in {v.entry.pool for v in fleet}:
            raise GatewayError(
                404, "unknown_pool", f"no scanner pool named {pool!r}", valid_pools=views.pools_of(fleet)
            )
        return views.scanners([v for v in fleet if pool is None or v.entry.pool == pool])

    async def pools(self) -> dict[str, Any]:
        fleet = await self._fleet()
        meta = await read_fleet_meta(self.rt.registry)
        return views.pools(fleet, meta.default_pool if meta else None)
