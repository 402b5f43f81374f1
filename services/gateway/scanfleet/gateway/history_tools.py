"""MCP tools and REST routes for scan history: schedules, rescans, rollovers, diffs, past runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult

from scanfleet.common.messages import Priority, ScanType
from scanfleet.common.schedule_times import Missed
from scanfleet.gateway.access import Caller
from scanfleet.gateway.core import Gateway
from scanfleet.gateway.errors import GatewayError, read_body
from scanfleet.gateway.guard import Guard, raw_targets
from scanfleet.gateway.history import MAX_TOP, History, ScheduleScan
from scanfleet.gateway.schemas import (
    ScanComparison,
    ScanHistory,
    ScanRequeued,
    ScheduleDeleted,
    ScheduleList,
    ScheduleOut,
    ref,
    rest_responses,
)
from scanfleet.gateway.toolkit import CONTROL, READ, SCAN, ScanfleetMCP, structured

SCHEDULE_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": ref("ScheduleScan")}}},
}
BODY_TYPES = (ScheduleScan,)
"""Request bodies these routes document (``app.document_schemas`` adds them to the components)."""


def register_history_tools(mcp: ScanfleetMCP, gateway: Gateway, guard: Guard) -> None:
    history = History(gateway)

    @mcp.scan_tool("Schedule a recurring scan", ScheduleOut, SCAN)
    async def schedule_scan(
        targets: str,
        name: str,
        cron: str | None = None,
        rrule: str | None = None,
        timezone: str = "UTC",
        scan_type: ScanType = "untrusted",
        credential_ref: str | None = None,
        description: str = "",
        scanner_pool: str | None = None,
        missed: Missed = "run_once",
        auto_rollover: bool = False,
        priority: Priority = "normal",
        *,
        ctx: Context[Any, Any],
    ) -> CallToolResult:
        """Scan the same targets again and again: give cron ("0 3 * * 1") or an RFC 5545 rrule
        ("FREQ=WEEKLY;BYDAY=MO;BYHOUR=3;BYMINUTE=0"), in timezone (IANA name). Authenticated
        schedules name a credential_ref (no inline secrets). Each run is checked against this
        client's scope when it fires. missed: run_once (occurrences missed while scanfleet was
        down run once on recovery) or skip. auto_rollover: a run that times out queues a scan of
        the hosts it did not reach. priority: high, normal or low, up to this client's limit.
        Compare two runs with compare_scans.
        """
        body = ScheduleScan(
            targets=targets,
            name=name,
            cron=cron,
            rrule=rrule,
            timezone=timezone,
            scan_type=scan_type,
            credential_ref=credential_ref,
            description=description,
            scanner_pool=scanner_pool,
            missed=missed,
            auto_rollover=auto_rollover,
            priority=priority,
        )
        return structured(
            await guard.tool(ctx, "schedule_scan", lambda c: history.schedule(c, body), targets=raw_targets(targets))
        )

    @mcp.scan_tool("List my schedules", ScheduleList, READ)
    async def list_schedules(*, ctx: Context[Any, Any]) -> CallToolResult:
        """This client's schedules, with their next runs and the task their last run queued."""
        return structured(await guard.tool(ctx, "list_schedules", lambda c: history.list_schedules(c)))

    @mcp.scan_tool("Delete a schedule", ScheduleDeleted, CONTROL)
    async def delete_schedule(schedule_id: str, *, ctx: Context[Any, Any]) -> CallToolResult:
        """Delete a schedule; scans it already queued are not touched."""
        return structured(await guard.tool(ctx, "delete_schedule", lambda c: history.delete_schedule(c, schedule_id)))

    @mcp.scan_tool("Pause a schedule", ScheduleOut, CONTROL)
    async def pause_schedule(schedule_id: str, *, ctx: Context[Any, Any]) -> CallToolResult:
        """Stop a schedule from firing until resume_schedule; runs missed meanwhile are skipped."""
        return structured(await guard.tool(ctx, "pause_schedule", lambda c: history.set_paused(c, schedule_id, True)))

    @mcp.scan_tool("Resume a schedule", ScheduleOut, CONTROL)
    async def resume_schedule(schedule_id: str, *, ctx: Context[Any, Any]) -> CallToolResult:
        """Let a paused schedule fire again from its next occurrence."""
        return structured(await guard.tool(ctx, "resume_schedule", lambda c: history.set_paused(c, schedule_id, False)))

    @mcp.scan_tool("Scan again", ScanRequeued, SCAN)
    async def rescan(task_id: str, *, ctx: Context[Any, Any]) -> CallToolResult:
        """Queue the same targets, scan type, pool and credential_ref again; the new task names the original."""
        return structured(
            await guard.tool(
                ctx,
                "rescan",
                lambda c: history.rescan(c, task_id, guard.before_queue(c, "rescan")),
                allow_recorded=True,
                task_id=task_id,
            )
        )

    @mcp.scan_tool("Scan the hosts a stopped scan missed", ScanRequeued, SCAN)
    async def rollover_scan(task_id: str, *, ctx: Context[Any, Any]) -> CallToolResult:
        """Scan exactly the hosts a cancelled or timed-out scan did not reach (per Nessus's per-host status)."""
        return structured(
            await guard.tool(
                ctx,
                "rollover_scan",
                lambda c: history.rollover(c, task_id, guard.before_queue(c, "rollover_scan")),
                allow_recorded=True,
                task_id=task_id,
            )
        )

    @mcp.scan_tool("Compare two runs", ScanComparison, READ)
    async def compare_scans(
        base_task_id: str, task_id: str, limit: int = 10, *, ctx: Context[Any, Any]
    ) -> CallToolResult:
        """What changed from base_task_id to task_id, per (host, plugin, port): counts of new, fixed,
        still_open and not_comparable by severity, then the top new (with the fix) and fixed findings.
        not_comparable: the host's login failed in either run of an authenticated scan, or it was
        scanned in only one run; a finding that vanished there is NOT fixed (see not_comparable_hosts).
        """
        return structured(
            await guard.tool(
                ctx, "compare_scans", lambda c: history.compare(c, base_task_id, task_id, limit), task_id=task_id
            )
        )

    @mcp.scan_tool("Past runs over the same targets", ScanHistory, READ)
    async def scan_history(targets: str, limit: int = 5, *, ctx: Context[Any, Any]) -> CallToolResult:
        """Severity counts of this client's last runs over exactly these targets, newest first."""
        return structured(await guard.tool(ctx, "scan_history", lambda c: history.scan_history(c, targets, limit)))


def history_router(gateway: Gateway, guard: Guard) -> APIRouter:
    """``/v1/schedules`` and ``/v1/scans/{id}/rescan|rollover``, ``/v1/compare``, ``/v1/history``."""
    history = History(gateway)
    router = APIRouter(prefix="/v1")
    authenticated = Depends(guard.rest_caller)

    @router.post("/schedules", status_code=201, openapi_extra=SCHEDULE_BODY, responses=rest_responses(ScheduleOut, 201))
    async def create(request: Request, caller: Caller = authenticated) -> dict[str, Any]:
        try:
            body = await read_body(request, ScheduleScan)
        except GatewayError as exc:
            await guard.audit(caller, "schedule_scan", "deny", code=exc.code, reason=exc.message)
            raise
        return await guard.run(
            caller, "schedule_scan", history.schedule(caller, body), targets=raw_targets(body.targets)
        )

    @router.get("/schedules", responses=rest_responses(ScheduleList))
    async def listing(caller: Caller = authenticated) -> dict[str, Any]:
        return await guard.run(caller, "list_schedules", history.list_schedules(caller))

    @router.delete("/schedules/{schedule_id}", responses=rest_responses(ScheduleDeleted))
    async def delete(schedule_id: str, caller: Caller = authenticated) -> dict[str, Any]:
        return await guard.run(caller, "delete_schedule", history.delete_schedule(caller, schedule_id))

    @router.post("/schedules/{schedule_id}/pause", responses=rest_responses(ScheduleOut))
    async def pause(schedule_id: str, caller: Caller = authenticated) -> dict[str, Any]:
        return await guard.run(caller, "pause_schedule", history.set_paused(caller, schedule_id, True))

    @router.post("/schedules/{schedule_id}/resume", responses=rest_responses(ScheduleOut))
    async def resume(schedule_id: str, caller: Caller = authenticated) -> dict[str, Any]:
        return await guard.run(caller, "resume_schedule", history.set_paused(caller, schedule_id, False))

    @router.post("/scans/{task_id}/rescan", status_code=202, responses=rest_responses(ScanRequeued, 202))
    async def rescan(task_id: str, caller: Caller = authenticated) -> dict[str, Any]:
        work = history.rescan(caller, task_id, guard.before_queue(caller, "rescan"))
        return await guard.run(caller, "rescan", work, allow_recorded=True, task_id=task_id)

    @router.post("/scans/{task_id}/rollover", status_code=202, responses=rest_responses(ScanRequeued, 202))
    async def rollover(task_id: str, caller: Caller = authenticated) -> dict[str, Any]:
        work = history.rollover(caller, task_id, guard.before_queue(caller, "rollover_scan"))
        return await guard.run(caller, "rollover_scan", work, allow_recorded=True, task_id=task_id)

    @router.get("/compare", responses=rest_responses(ScanComparison))
    async def compare(
        base: str, task: str, limit: int = Query(10, ge=0, le=MAX_TOP), caller: Caller = authenticated
    ) -> dict[str, Any]:
        return await guard.run(caller, "compare_scans", history.compare(caller, base, task, limit), task_id=task)

    @router.get("/history", responses=rest_responses(ScanHistory))
    async def past_runs(
        targets: str, limit: int = Query(5, ge=1, le=20), caller: Caller = authenticated
    ) -> dict[str, Any]:
        return await guard.run(caller, "scan_history", history.scan_history(caller, targets, limit))

    return router
