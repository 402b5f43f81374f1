"""What the gateway does, independent of how it is asked (MCP tool or REST call)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from scanfleet.common import client_tasks, contract
from scanfleet.common.credentials import CredentialError, TargetCredential
from scanfleet.common.logs import task_context
from scanfleet.common.messages import Priority, ScanType
from scanfleet.common.metrics import SCANS
from scanfleet.common.mirror import FleetMirror
from scanfleet.common.registry import FleetMeta, ScannerView, fleet_view, read_fleet_meta
from scanfleet.common.runtime import Runtime
from scanfleet.common.scope import Interval, Scope, Submission, contained, interval_of
from scanfleet.common.targets import InvalidTarget, Target, parse_targets
from scanfleet.common.task_ops import EnqueueFailed
from scanfleet.common.tasks import TaskRecord, TaskState, new_task_id, queued_record
from scanfleet.common.telemetry import current_trace_id, tracer
from scanfleet.gateway import views
from scanfleet.gateway.access import Caller, can_see_pool, can_see_task, visible_pools
from scanfleet.gateway.admission import Admission
from scanfleet.gateway.errors import GatewayError
from scanfleet.gateway.intake import Intake
from scanfleet.gateway.queue import QueueView
from scanfleet.gateway.sealing import CredentialSealer

log = logging.getLogger("scanfleet.gateway")
_tracer = tracer("scanfleet.gateway")


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
    priority: Priority = "normal"


MAX_NAME = 200
MAX_DESCRIPTION = 2000
# Bounds that keep a task record well inside NATS's 1 MB message limit, whatever a scope allows.
MAX_TARGETS_TEXT = 200_000
MAX_TARGET_ENTRIES = 4096

BeforeQueue = Callable[[str, list[Target], str, ScanType], Awaitable[None]]


def idempotency_key_hash(client: str, key: str) -> str:
    """Keys are per client: another client's key can neither collide with nor reveal a task."""
    return hashlib.sha256(f"{client}\0{key}".encode()).hexdigest()


@dataclass(frozen=True)
class Lineage:
    """Where a resubmitted scan comes from: a rescan of a task, or the rollover of its unscanned hosts."""

    rescan_of: str | None = None
    rollover_of: str | None = None


def confirmation_reason(scope: Scope, targets: list[Target], scan_type: ScanType) -> str | None:
    """Why this scan needs a human's confirmation under the client's policy, or ``None``."""
    reasons = []
    addresses = sum(t.addresses for t in targets)
    if scope.confirm_over_targets is not None and addresses > scope.confirm_over_targets:
        reasons.append(f"{addresses} addresses, over {scope.confirm_over_targets}")
    if scan_type in scope.confirm_scan_types:
        reasons.append(f"scan type {scan_type}")
    return "; ".join(reasons) or None


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
    def __init__(self, rt: Runtime, admission: Admission) -> None:
        self.rt = rt
        self.admission = admission
        self.sealer = CredentialSealer.from_settings(rt.settings)
        self.mirror = FleetMirror(rt.registry, rt.capacity, rt.agents)
        self._mirroring: asyncio.Task[None] | None = None
        self.queue = QueueView(rt, self.fleet)
        self.intake = Intake(rt)

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

    async def submit(
        self,
        caller: Caller,
        submit: SubmitScan,
        before_queue: BeforeQueue,
        *,
        confirmed: bool = False,
        lineage: Lineage | None = None,
    ) -> dict[str, Any]:
        """Check, admit, record and queue one scan; ``before_queue`` records the decision first.

        ``confirmed``: a human confirmed this scan (MCP elicitation); a scan the client's policy
        wants confirmed is refused without it, whatever the interface. ``lineage``: the scan
        this one repeats, recorded with the task from the start.
        """
        name = submit.name.strip()
        if not name or len(name) > MAX_NAME:
            raise GatewayError(422, "invalid_name", f"name must be 1 to {MAX_NAME} characters")
        if len(submit.description) > MAX_DESCRIPTION:
            raise GatewayError(422, "invalid_description", f"description is over {MAX_DESCRIPTION} characters")
        parsed = self._targets(submit)
        targets = [t.text for t in parsed]
        try:
            self.sealer.check(submit.scan_type, submit.credentials, submit.credential_ref)
        except CredentialError as exc:
            raise GatewayError(422, "invalid_credentials", str(exc)) from None
        views_ = await self.fleet()
        meta = await read_fleet_meta(self.rt.registry)
        pool = await self.resolve_pool(caller, submit, views_, parsed, meta)
        wanted = Submission(parsed, submit.scan_type, pool, submit.credential_ref, submit.priority)
        await self.admission.check(caller, parsed, wanted, views_)
        why = confirmation_reason(caller.scope, parsed, submit.scan_type)
        if why is not None and not confirmed:
            raise GatewayError(
                403,
                "confirmation_required",
                f"this client's policy needs a human to confirm this scan ({why}); use an MCP client "
                "that supports elicitation so the tool can ask",
                reason=why,
            )
        digest = request_hash(submit, targets, pool)
        with _tracer.start_as_current_span("submit scan", attributes={"scanfleet.pool": pool}):
            trace_id = current_trace_id() or secrets.token_hex(16)
            task_id = new_task_id()
            with task_context(task_id, trace_id):
                key_hash = idempotency_key_hash(caller.id, submit.idempotency_key) if submit.idempotency_key else None
                record = queued_record(
                    task_id=task_id,
                    trace_id=trace_id,
                    owner=caller.id,
                    weight=caller.scope.weight,
                    pool=pool,
                    targets=targets,
                    name=name,
                    description=submit.description,
                    scan_type=submit.scan_type,
                    requested_instance=submit.scanner_instance,
                    credential_ref=submit.credential_ref,
                    priority=submit.priority,
                    idempotency_key_hash=key_hash,
                    rescan_of=lineage.rescan_of if lineage else None,
                    rollover_of=lineage.rollover_of if lineage else None,
                )
                try:
                    record, repeat = await self.intake.queue(
                        record,
                        key_hash=key_hash,
                        digest=digest,
                        admit_active=lambda t: self._admit_active(caller, t),
                        audit=lambda t: before_queue(t, parsed, pool, submit.scan_type),
                        seal=lambda t: self.sealer.seal(submit.credentials, t),
                    )
                except EnqueueFailed as exc:
                    raise GatewayError(503, "enqueue_failed", "the request could not be queued; try again") from exc
                if repeat:
                    return {**views.status(record), "idempotent": True}
                SCANS.labels(scan_type=record.scan_type, pool=pool, status="queued").inc()
                log.info("scan queued", extra={"pool": pool, "targets": len(targets)})
                placement = await self.queue.placement(pool, record.task_id, views_, record=record, just_queued=True)
                placement.update(window_delay(meta, pool, targets, self.rt.now(), placement))
        return views.submitted(record, placement, views_)

    def _targets(self, submit: SubmitScan) -> list[Target]:
        raw = submit.targets if isinstance(submit.targets, list) else [submit.targets]
        if sum(len(t) for t in raw) > MAX_TARGETS_TEXT:
            raise GatewayError(
                413, "targets_too_long", f"the target list is over {MAX_TARGETS_TEXT} characters; split the scan"
            )
        try:
            parsed = parse_targets(submit.targets)
        except InvalidTarget as exc:
            raise GatewayError(422, "invalid_targets", str(exc)) from None
        if len(parsed) > MAX_TARGET_ENTRIES:
            raise GatewayError(
                413, "too_many_targets", f"{len(parsed)} target entries; at most {MAX_TARGET_ENTRIES} per scan"
            )
        return parsed

    async def _admit_active(self, caller: Caller, task_id: str) -> None:
        """Count the task against the client's queued-plus-running limit, atomically across gateways."""
        limit = caller.scope.max_active

        still_active = client_tasks.unended_in(self.rt.tasks)
        count = await client_tasks.claim_active(self.rt.client_tasks, caller.id, task_id, limit, still_active)
        if count is None:
            raise GatewayError(
                429,
                "too_many_active",
                f"this client already has {limit} scans queued or running; wait for one to end or cancel one",
                headers={"Retry-After": "30"},
                max_active=limit,
            )

    async def visible_fleet(self, caller: Caller) -> list[ScannerView]:
        return [v for v in await self.fleet() if can_see_pool(caller, v.entry.pool)]

    async def fleet(self) -> list[ScannerView]:
        if self._mirroring is None or self._mirroring.done():
            return await fleet_view(self.rt.registry, self.rt.capacity, self.rt.agents)
        return self.mirror.views()

    async def resolve_pool(
        self,
        caller: Caller,
        submit: SubmitScan,
        fleet: list[ScannerView],
        targets: list[Target] | None = None,
        meta: FleetMeta | None = None,
    ) -> str:
        registered = sorted({v.entry.pool for v in fleet})
        if not registered:
            raise GatewayError(503, "no_scanners", "no scanners are registered yet")
        pools = visible_pools(caller, registered)
        if not pools:
            raise GatewayError(403, "pool_not_allowed", "this client may use none of the scanner pools")
        rules = meta.rules if meta is not None else None
        if rules is not None and targets:
            excluded = rules.scan_windows().excluded([t.text for t in targets])
            if excluded is not None:
                target, exclusion = excluded
                raise GatewayError(
                    403,
                    "target_excluded",
                    f"{target} is permanently excluded from scanning: {exclusion.reason}",
                    target=target,
                    reason=exclusion.reason,
                )
        pool = submit.scanner_pool
        if pool is not None and pool not in pools:
            raise GatewayError(404, "unknown_pool", f"no scanner pool named {pool!r}", valid_pools=pools)
        reach = rules.pool_ranges() if rules is not None else {}
        addresses = [interval_of(t) for t in targets or [] if t.kind != "hostname"]
        if pool is None:
            default = meta.default_pool if meta and meta.default_pool in pools else pools[0]
            pool = route_by_network(addresses, pools, reach, default)
            if pool is None:
                raise _unreachable(addresses, pools, reach, rules.ranges if rules else {}, None)
        elif pool in reach and (missing := [a for a in addresses if not contained(a, reach[pool])]):
            raise _unreachable(missing, [pool], reach, rules.ranges if rules else {}, pool)
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

    async def record(self, caller: Caller, task_id: str) -> TaskRecord:
        """The task if this caller may see it; another client's task is as unknown as a bad id."""
        if not contract.NAME_RE.match(task_id):
            raise GatewayError(404, "task_not_found", f"no task {task_id!r}")
        record = await self.rt.tasks.get(task_id)
        if record is None or not can_see_task(caller, record):
            raise GatewayError(404, "task_not_found", f"no task {task_id!r} (among the tasks this client may see)")
        return record

    async def status(self, caller: Caller, task_id: str) -> dict[str, Any]:
        record = await self.record(caller, task_id)
        out = views.status(record)
        out["priority"] = record.priority
        if record.state is TaskState.QUEUED:
            placement = await self.queue.placement(record.pool, task_id, record=record)
            placement.update(
                window_delay(
                    await read_fleet_meta(self.rt.registry), record.pool, record.targets, self.rt.now(), placement
                )
            )
            out.update(placement)
        elif record.window is not None:
            out["scan_window"] = {
                "name": record.window,
                "until": record.window_until.isoformat() if record.window_until else None,
            }
        return out

    async def scanners(self, caller: Caller, pool: str | None = None) -> dict[str, Any]:
        fleet = await self.visible_fleet(caller)
        if pool is not None and pool not in {v.entry.pool for v in fleet}:
            raise GatewayError(
                404, "unknown_pool", f"no scanner pool named {pool!r}", valid_pools=views.pools_of(fleet)
            )
        return views.scanners([v for v in fleet if pool is None or v.entry.pool == pool])

    async def pools(self, caller: Caller) -> dict[str, Any]:
        fleet = await self.visible_fleet(caller)
        meta = await read_fleet_meta(self.rt.registry)
        return views.pools(fleet, meta.default_pool if meta else None)


def route_by_network(
    addresses: list[Interval], pools: list[str], reach: dict[str, list[Interval]], default: str
) -> str | None:
    """The pool for a scan that names none: the narrowest pool whose declared ranges contain all
    its address targets (host names do not constrain); else the default pool, or another pool
    that declares no ranges (reaches what it is sent); None when no pool reaches them."""
    if not addresses:
        return default
    matching = [p for p in pools if p in reach and all(contained(a, reach[p]) for a in addresses)]
    if matching:
        return min(matching, key=lambda p: (sum(r.end - r.start + 1 for r in reach[p]), p))
    undeclared = [p for p in pools if p not in reach]
    if not undeclared:
        return None
    return default if default in undeclared else undeclared[0]


def _unreachable(
    addresses: list[Interval],
    pools: list[str],
    reach: dict[str, list[Interval]],
    declared: dict[str, list[str]],
    explicit: str | None,
) -> GatewayError:
    unreached = [a.label for a in addresses if not any(contained(a, reach[p]) for p in pools if p in reach)]
    listing = {p: declared.get(p, []) for p in pools}
    where = f"pool {explicit!r} does not reach" if explicit else "no scanner pool reaches"
    return GatewayError(
        422,
        "target_unreachable",
        f"{where} {', '.join(unreached or [a.label for a in addresses])}; pools and the ranges they reach: "
        + "; ".join(f"{p}: {', '.join(r) or 'any'}" for p, r in listing.items()),
        targets=unreached,
        pools=listing,
    )


def window_delay(
    meta: FleetMeta | None, pool: str, targets: list[str], now: datetime, placement: dict[str, Any]
) -> dict[str, Any]:
    """When a scan window holds the targets: which window, and when the scan may start at the earliest."""
    if meta is None:
        return {}
    hold = meta.rules.scan_windows().held(pool, targets, now)
    if hold is None:
        return {}
    delay = (hold.until - now).total_seconds()
    wait = placement.get("estimated_wait_seconds")
    return {
        "scan_window": {"name": hold.window, "until": hold.until.isoformat()},
        "not_before": hold.until.isoformat(),
        "estimated_wait_seconds": round(max(delay, wait or 0.0), 1),
    }
