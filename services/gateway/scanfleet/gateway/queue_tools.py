"""MCP tools and REST routes for pool load and queue state, limited to the pools a caller may use."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult

from scanfleet.gateway.access import Caller
from scanfleet.gateway.core import Gateway
from scanfleet.gateway.errors import GatewayError
from scanfleet.gateway.guard import Guard
from scanfleet.gateway.schemas import PoolStatus, QueueStatus
from scanfleet.gateway.toolkit import READ, ScanfleetMCP, structured


class QueueViews:
    """Pool and queue status for one caller: an unknown pool and a pool it may not use look alike."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def _check_pool(self, caller: Caller, pool: str | None) -> None:
        if pool is None:
            return
        listing = await self.gateway.pools(caller)
        names = [p["pool"] for p in listing["pools"]]
        if pool not in names:
            raise GatewayError(404, "unknown_pool", f"no scanner pool named {pool!r}", valid_pools=names)

    async def pool_status(self, caller: Caller, pool: str | None) -> dict[str, Any]:
        await self._check_pool(caller, pool)
        return await self.gateway.queue.pool_status(caller, pool)

    async def queue_status(self, caller: Caller, pool: str | None, limit: int) -> dict[str, Any]:
        await self._check_pool(caller, pool)
        return await self.gateway.queue.queue_status(caller, pool, min(max(limit, 0), 50))


def register_queue_tools(mcp: ScanfleetMCP, gateway: Gateway, guard: Guard) -> None:
    views = QueueViews(gateway)

    @mcp.scan_tool("Pool load", PoolStatus, READ)
    async def get_pool_status(scanner_pool: str | None = None, *, ctx: Context[Any, Any]) -> CallToolResult:
        """Capacity, active scans and utilization per scanner, queue depth and average scan time per pool."""
        return structured(await guard.tool(ctx, "get_pool_status", lambda c: views.pool_status(c, scanner_pool)))

    @mcp.scan_tool("Queue state", QueueStatus, READ)
    async def get_queue_status(
        scanner_pool: str | None = None, limit: int = 5, *, ctx: Context[Any, Any]
    ) -> CallToolResult:
        """Queue depth per pool, dead-letter depth, and the next waiting tasks this client may see
        (its own; operators: their pools'); other clients' work shows only in the counts."""
        return structured(
            await guard.tool(ctx, "get_queue_status", lambda c: views.queue_status(c, scanner_pool, limit))
        )


def queue_router(gateway: Gateway, guard: Guard) -> APIRouter:
    router = APIRouter(prefix="/v1")
    views = QueueViews(gateway)
    authenticated = Depends(guard.rest_caller)

    @router.get("/pools/status")
    async def pools_status(pool: str | None = None, caller: Caller = authenticated) -> dict[str, Any]:
        return await guard.run(caller, "get_pool_status", views.pool_status(caller, pool))

    @router.get("/queue")
    async def queue_status(pool: str | None = None, limit: int = 5, caller: Caller = authenticated) -> dict[str, Any]:
        return await guard.run(caller, "get_queue_status", views.queue_status(caller, pool, limit))

    return router
