"""The MCP tools: thin adapters from tool arguments to the gateway core, each through the guard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, InputRequiredResult
from pydantic import ValidationError

from scanfleet.common.messages import Priority
from scanfleet.common.tasks import TaskState
from scanfleet.gateway.control_tools import register_control_tools
from scanfleet.gateway.core import Gateway, SubmitScan
from scanfleet.gateway.errors import GatewayError, tool_error
from scanfleet.gateway.guard import Guard, raw_targets
from scanfleet.gateway.queue_tools import register_queue_tools
from scanfleet.gateway.results import Results
from scanfleet.gateway.results_tools import register_results_tools
from scanfleet.gateway.task_list import TaskQuery, list_tasks

INSTRUCTIONS = (
    "scanfleet runs Nessus vulnerability scans on a fleet of scanners. Submitting a scan returns a "
    "task_id at once; poll get_scan_status until status is completed, failed, cancelled or timeout, then "
    "read get_scan_results. You may scan only the targets in your client's scope: a refusal lists what "
    "you may scan; never retry a refused target under another form."
)


class ScanfleetMCP(MCPServer):
    """Tool errors as the same JSON a REST client gets, and never an argument's value.

    The SDK words a refused argument with pydantic's message, which quotes the value: a
    password typed into the wrong field would come straight back. Here only field names do,
    and such a refusal is audited like any other call.
    """

    def __init__(self, guard: Guard, name: str, **settings: Any) -> None:
        super().__init__(name, **settings)
        self.guard = guard

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                fields = sorted({".".join(str(p) for p in err["loc"]) for err in cause.errors()})
                refusal = GatewayError(
                    422, "invalid_arguments", f"invalid value for: {', '.join(fields)}", fields=fields
                )
                if context is not None:
                    caller = self.guard.mcp_caller(context)
                    await self.guard.audit(caller, name, "deny", code=refusal.code, reason=refusal.message)
                raise tool_error(refusal) from None
            raise ToolError(str(exc).removeprefix(f"Error executing tool {name}: ")) from exc.__cause__


def build_mcp(gateway: Gateway, results: Results, guard: Guard, **auth: Any) -> MCPServer:
    mcp = ScanfleetMCP(guard, "scanfleet", instructions=INSTRUCTIONS, **auth)
    register_scan_tools(mcp, gateway, guard)
    register_results_tools(mcp, results, guard)
    register_control_tools(mcp, gateway, guard)
    register_queue_tools(mcp, gateway, guard)
    return mcp


def register_scan_tools(mcp: MCPServer, gateway: Gateway, guard: Guard) -> None:
    @mcp.tool()
    async def run_untrusted_scan(
        targets: str,
        name: str,
        description: str = "",
        scanner_pool: str | None = None,
        scanner_instance: str | None = None,
        idempotency_key: str | None = None,
        priority: Priority = "normal",
        *,
        ctx: Context[Any, Any],
    ) -> dict[str, Any]:
        """Queue a network (unauthenticated) Nessus scan.

        targets: IPs, CIDRs, ranges (10.0.0.1-20) or host names, comma separated; all must be in
        this client's scope. Returns task_id, trace_id and queue_position immediately; the scan runs
        in the background. Reusing an idempotency_key returns the original task instead of a duplicate.
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
        return await guard.tool(
            ctx,
            "run_untrusted_scan",
            lambda c: gateway.submit(c, submit, guard.before_queue(c, "run_untrusted_scan")),
            allow_recorded=True,
            targets=raw_targets(targets),
        )

    @mcp.tool()
    async def get_scan_status(task_id: str, *, ctx: Context[Any, Any]) -> dict[str, Any]:
        """Status, progress and, once validated, a results summary with the authentication verdict."""
        return await guard.tool(ctx, "get_scan_status", lambda c: gateway.status(c, task_id), task_id=task_id)

    @mcp.tool(name="list_tasks")
    async def list_own_tasks(
        status: list[TaskState] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 20,
        *,
        ctx: Context[Any, Any],
    ) -> dict[str, Any]:
        """This client's scans, newest first: status, targets (first few), pool, times.

        status: only these states (queued, dispatched, running, exporting, validating, completed,
        failed, cancelled, timeout); since/until: submission time bounds (ISO 8601, UTC).
        Pass next_cursor back as cursor for the next page (limit 1-100).
        """
        query = TaskQuery(status=status, since=since, until=until, cursor=cursor, limit=limit)
        return await guard.tool(ctx, "list_tasks", lambda c: list_tasks(gateway.rt, c, query))

    @mcp.tool()
    async def list_scanners(scanner_pool: str | None = None, *, ctx: Context[Any, Any]) -> dict[str, Any]:
        """Scanners with live load, agent liveness and whether each can launch scans (pools this client may use)."""
        return await guard.tool(ctx, "list_scanners", lambda c: gateway.scanners(c, scanner_pool))

    @mcp.tool()
    async def list_pools(*, ctx: Context[Any, Any]) -> dict[str, Any]:
        """Scanner pools this client may use, with capacity and utilization, and the default pool."""
        return await guard.tool(ctx, "list_pools", lambda c: gateway.pools(c))
