"""MCP Tasks (``io.modelcontextprotocol/tasks``, SEP-2663) for scans, on the SDK's extension interface.

The MCP task *is* the scanfleet task: its id is the task id, its state the task record in
JetStream KV (written before the submission returns, so the handle is durable when the client
gets it). Nothing is kept in this process, so a task created before a gateway restart, or on
another replica, reads the same. Every task request is authenticated and authorised like a
tool call (``Gateway.record``: a task another client submitted does not exist for this one)
and audited.

States: queued..validating are ``working``; completed, failed and timed-out scans are
``completed`` with the final tool result (a scan that failed is a tool result with
``isError: true``: the spec keeps ``failed`` for JSON-RPC errors); cancelled is ``cancelled``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.server import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolRequestParams, CallToolResult, RequestParams
from mcp_types import INVALID_PARAMS

from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.gateway.access import Caller
from scanfleet.gateway.control import ScanControl
from scanfleet.gateway.core import Gateway
from scanfleet.gateway.errors import GatewayError
from scanfleet.gateway.guard import Guard
from scanfleet.gateway.status import StatusView

TASKS = "io.modelcontextprotocol/tasks"
MODERN = frozenset({"2026-07-28"})
TASK_TOOLS = frozenset({"run_untrusted_scan", "run_authenticated_scan"})

MIN_POLL_S = 2.0
MAX_POLL_S = 30.0
UNKNOWN_POLL_S = 5.0


class TaskRef(RequestParams):
    task_id: str


class TaskUpdate(TaskRef):
    input_responses: dict[str, Any] = {}


def mcp_status(state: TaskState) -> str:
    if state is TaskState.CANCELLED:
        return "cancelled"
    return "completed" if state.terminal else "working"


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def poll_interval_ms(remaining: float | None) -> int:
    """A third of the expected remaining time, within 2-30 s: few polls, none much too late."""
    seconds = UNKNOWN_POLL_S if remaining is None else min(max(remaining / 3, MIN_POLL_S), MAX_POLL_S)
    return int(seconds * 1000)


def status_message(view: dict[str, Any]) -> str:
    state = view["status"]
    if state == "queued" and view.get("queue_position"):
        text = f"queued, position {view['queue_position']} of {view.get('queue_depth')}"
        wait = view.get("estimated_wait_seconds")
        return text + (f", about {wait:.0f}s to start" if wait is not None else "")
    if state in ("completed", "failed", "timeout") and "digest" in view:
        counts = view["digest"]["severity_counts"]
        text = (
            f"{state}: {view['digest']['hosts_scanned']} host(s), critical {counts['critical']}, high {counts['high']}"
        )
        return text + (f"; {view['error_message']}" if view.get("error_message") else "")
    if view.get("error_message"):
        return f"{state}: {view['error_message']}"
    return f"{state}, {view.get('progress', 0)}% done"


def tool_result(view: dict[str, Any], failed: bool) -> dict[str, Any]:
    """The final ``CallToolResult`` of the scan tool, as the wire carries it."""
    text = msgspec.json.encode(view).decode()
    return {"content": [{"type": "text", "text": text}], "structuredContent": view, "isError": failed}


class ScanTasks(Extension):
    identifier = TASKS

    def __init__(self, gateway: Gateway, guard: Guard, status: StatusView) -> None:
        self.gateway = gateway
        self.guard = guard
        self.status = status
        self.control = ScanControl(gateway)
        self.ttl_ms = int(gateway.rt.settings.completed_ttl * 1000)

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskRef, self.get, protocol_versions=MODERN),
            MethodBinding("tasks/cancel", TaskRef, self.cancel, protocol_versions=MODERN),
            MethodBinding("tasks/update", TaskUpdate, self.update, protocol_versions=MODERN),
        ]

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        result = await call_next(ctx)
        if params.name not in TASK_TOOLS or ctx.protocol_version not in MODERN or not _opted_in(ctx):
            return result
        if not isinstance(result, CallToolResult) or result.is_error or not result.structured_content:
            return result
        task_id = result.structured_content.get("task_id")
        if not isinstance(task_id, str):
            return result
        record = await self.gateway.record(self.guard.mcp_request_caller(ctx.request), task_id)
        return {"resultType": "task", **(await self.task(record))}

    async def task(self, record: TaskRecord) -> dict[str, Any]:
        """The ``DetailedTask`` for a record: status, message, poll interval and, once ended, the result."""
        view = await self.status.view(record)
        out: dict[str, Any] = {
            "taskId": record.task_id,
            "status": mcp_status(record.state),
            "statusMessage": status_message(view),
            "createdAt": _iso(record.created_at),
            "lastUpdatedAt": _iso(record.updated_at),
            "ttlMs": self.ttl_ms,
        }
        if out["status"] == "working":
            out["pollIntervalMs"] = poll_interval_ms(await self.status.remaining_seconds(record))
        elif out["status"] == "completed":
            out["result"] = tool_result(view, failed=record.state is not TaskState.COMPLETED)
        return out

    async def _authorised(self, ctx: ServerRequestContext[Any, Any], action: str, params: TaskRef) -> Caller:
        require_client_extension(ctx, TASKS)
        return self.guard.mcp_request_caller(ctx.request)

    async def get(self, ctx: ServerRequestContext[Any, Any], params: TaskRef) -> HandlerResult:
        caller = await self._authorised(ctx, "get_scan_status", params)

        async def work() -> dict[str, Any]:
            return await self.task(await self.gateway.record(caller, params.task_id))

        return await self._run(caller, "get_scan_status", params.task_id, work())

    async def cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskRef) -> HandlerResult:
        caller = await self._authorised(ctx, "cancel_scan", params)

        async def work() -> dict[str, Any]:
            try:
                await self.control.cancel(caller, params.task_id, "tasks/cancel")
            except GatewayError as exc:
                if not exc.code.startswith("cannot_"):
                    raise
                # Cooperative: a scan that already ended is acknowledged; tasks/get shows how it ended.
            return {}

        return await self._run(caller, "cancel_scan", params.task_id, work())

    async def update(self, ctx: ServerRequestContext[Any, Any], params: TaskUpdate) -> HandlerResult:
        """Scans never wait for input once queued: responses are ignored, as the spec allows."""
        caller = await self._authorised(ctx, "get_scan_status", params)

        async def work() -> dict[str, Any]:
            await self.gateway.record(caller, params.task_id)
            return {}

        return await self._run(caller, "get_scan_status", params.task_id, work())

    async def _run(self, caller: Caller, action: str, task_id: str, work: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await self.guard.run(caller, action, work, task_id=task_id)
            return result
        except GatewayError as exc:
            if exc.code == "task_not_found":
                raise MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task not found") from None
            raise MCPError(code=INVALID_PARAMS, message=exc.message, data=exc.as_dict()) from None


def _opted_in(ctx: ServerRequestContext[Any, Any]) -> bool:
    capabilities = ctx.session.client_capabilities
    return bool(capabilities and capabilities.extensions and TASKS in capabilities.extensions)
