"""The MCP tools: thin adapters from tool arguments to the gateway core, each through the guard."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any

from mcp.server.mcpserver import Context, ElicitationResult, Resolve
from mcp.types import CallToolResult

from scanfleet.common.messages import Priority
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.gateway import confirmation
from scanfleet.gateway.access import Caller
from scanfleet.gateway.control_tools import register_control_tools
from scanfleet.gateway.core import Gateway, SubmitScan
from scanfleet.gateway.errors import GatewayError
from scanfleet.gateway.guard import Guard, raw_targets
from scanfleet.gateway.history_tools import register_history_tools
from scanfleet.gateway.mcp_tasks import ScanTasks
from scanfleet.gateway.queue_tools import register_queue_tools
from scanfleet.gateway.results import Results
from scanfleet.gateway.results_tools import register_results_tools
from scanfleet.gateway.schemas import PoolList, ScannerList, ScanStatus, ScanSubmitted, TaskList
from scanfleet.gateway.status import MAX_WAIT_SECONDS, StatusView, WaitUntil
from scanfleet.gateway.task_list import TaskQuery, list_tasks
from scanfleet.gateway.toolkit import READ, SCAN, ScanfleetMCP, structured

INSTRUCTIONS = (
    "scanfleet runs Nessus vulnerability scans on a fleet of scanners. Submitting a scan returns a "
    "task_id at once (or an MCP task, if your client supports the Tasks extension). Then call "
    "get_scan_status with wait_seconds=50 until status is completed, failed, cancelled or timeout: a "
    "completed scan's status carries a digest with the top critical and high findings and their fixes; "
    "get_scan_results (group_by='plugin') has the rest. You may scan only the targets in your client's "
    "scope: a refusal lists what you may scan and next_steps; never retry a refused target under another form."
)


def build_mcp(gateway: Gateway, results: Results, guard: Guard, **auth: Any) -> ScanfleetMCP:
    status = StatusView(gateway, results)

    async def audit_refusal(ctx: Context[Any, Any], action: str, refusal: GatewayError) -> None:
        caller = guard.mcp_caller(ctx)
        await guard.audit(caller, action, "deny", code=refusal.code, reason=refusal.message)

    tasks = ScanTasks(gateway, guard, status)
    mcp = ScanfleetMCP(audit_refusal, "scanfleet", instructions=INSTRUCTIONS, extensions=[tasks], **auth)
    mcp.asker = confirmation.Asker(gateway, guard)
    register_scan_tools(mcp, gateway, guard, status)
    register_results_tools(mcp, results, guard)
    register_control_tools(mcp, gateway, guard)
    register_queue_tools(mcp, gateway, guard)
    register_history_tools(mcp, gateway, guard)
    return mcp


def register_scan_tools(mcp: ScanfleetMCP, gateway: Gateway, guard: Guard, status: StatusView) -> None:
    @mcp.scan_tool("Run a network scan", ScanSubmitted, SCAN)
    async def run_untrusted_scan(
        targets: str,
        name: str,
        confirmed: Annotated[ElicitationResult[confirmation.Confirm], Resolve(confirmation.ask_untrusted)],
        description: str = "",
        scanner_pool: str | None = None,
        scanner_instance: str | None = None,
        idempotency_key: str | None = None,
        priority: Priority = "normal",
        *,
        ctx: Context[Any, Any],
    ) -> CallToolResult:
        """Queue a network (unauthenticated) Nessus scan.

        targets: IPs, CIDRs, ranges (10.0.0.1-20) or host names, comma separated; all must be in
        this client's scope. Returns task_id, trace_id and queue_position immediately; the scan runs
        in the background (as an MCP task if the client opts in). Reusing an idempotency_key returns
        the original task instead of a duplicate. A client's policy may require a human to confirm.
        Without scanner_pool the pool whose networks contain the targets is chosen. priority: high,
        normal or low, up to this client's max_priority; if a scan window holds the targets the reply
        says until when (scan_window, not_before).
        """
        submit = SubmitScan(
            targets=targets,
            name=name,
            description=description,
            scanner_pool=scanner_pool,
            scanner_instance=scanner_instance,
            idempotency_key=idempotency_key,
            priority=priority,
        )

        async def work(c: Caller) -> dict[str, Any]:
            ok = confirmation.confirmed(confirmed)
            return await gateway.submit(c, submit, guard.before_queue(c, "run_untrusted_scan"), confirmed=ok)

        return structured(
            await guard.tool(ctx, "run_untrusted_scan", work, allow_recorded=True, targets=raw_targets(targets))
        )

    @mcp.scan_tool("Scan status", ScanStatus, READ)
    async def get_scan_status(
        task_id: str, wait_seconds: float = 0, until: WaitUntil = "end", *, ctx: Context[Any, Any]
    ) -> CallToolResult:
        """Status, progress and, once ended, a digest: counts by severity, the authentication verdict and
        the top critical and high findings grouped by plugin with their fixes.

        wait_seconds (0-50): instead of polling, wait until the scan ends (until="end", the default) or
        its state next changes (until="change"), at most this long; changed says whether it came.
        Progress notifications go to a client that sent a progress token.
        """
        wait = max(0.0, min(wait_seconds, MAX_WAIT_SECONDS))

        async def progress(record: TaskRecord) -> None:
            await ctx.report_progress(record.progress, 100, f"{record.state}: {record.progress}%")

        def work(c: Caller) -> Awaitable[dict[str, Any]]:
            return status.status(c, task_id, wait, progress, until=until)

        return structured(await guard.tool(ctx, "get_scan_status", work, task_id=task_id))

    @mcp.scan_tool("List my scans", TaskList, READ, name="list_tasks")
    async def list_own_tasks(
        status: list[TaskState] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 20,
        *,
        ctx: Context[Any, Any],
    ) -> CallToolResult:
        """This client's scans, newest first: status, targets (first few), pool, times.

        status: only these states (queued, dispatched, running, exporting, validating, completed,
        failed, cancelled, timeout); since/until: submission time bounds (ISO 8601, UTC).
        Pass next_cursor back as cursor for the next page (limit 1-100).
        """
        query = TaskQuery(status=status, since=since, until=until, cursor=cursor, limit=limit)
        return structured(await guard.tool(ctx, "list_tasks", lambda c: list_tasks(gateway.rt, c, query)))

    @mcp.scan_tool("List scanners", ScannerList, READ)
    async def list_scanners(scanner_pool: str | None = None, *, ctx: Context[Any, Any]) -> CallToolResult:
        """Scanners with live load, agent liveness and whether each can launch scans (pools this client may use).

        `state` says what each is doing: ready, starting (Nessus loading its plugins after a
        restart, with `startup_progress`; it takes scans again once ready), circuit_open,
        unreachable, unavailable, no_agent or disabled. A container-managed scanner also shows
        its `container` (state, health, start time, restart count, last restart by scanfleet)."""
        return structured(await guard.tool(ctx, "list_scanners", lambda c: gateway.scanners(c, scanner_pool)))

    @mcp.scan_tool("List scanner pools", PoolList, READ)
    async def list_pools(*, ctx: Context[Any, Any]) -> CallToolResult:
        """Scanner pools this client may use, with capacity and utilization, and the default pool."""
        return structured(await guard.tool(ctx, "list_pools", lambda c: gateway.pools(c)))
