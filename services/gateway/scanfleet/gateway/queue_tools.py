"""MCP tools and REST routes for pool load and queue state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from mcp.server.mcpserver import MCPServer

from scanfleet.gateway.core import Gateway, GatewayError
from scanfleet.gateway.errors import call


async def _check_pool(gateway: Gateway, pool: str | None) -> None:
    if pool is None:
        return
    listing = await gateway.pools()
    names = [p["pool"] for p in listing["pools"]]
    if pool not in names:
        raise GatewayError(404, "unknown_pool", f"no scanner pool named {pool!r}", valid_pools=names)


def register_queue_tools(mcp: MCPServer, gateway: Gateway) -> None:
    queue = gateway.queue

    async def pool_status(pool: str | None) -> dict[str, Any]:
        await _check_pool(gateway, pool)
        return await queue.pool_status(pool)

    async def queue_status(pool: str | None, limit: int) -> dict[str, Any]:
        await _check_pool(gateway, pool)
        return await queue.queue_status(pool, min(max(limit, 0), 50))

    @mcp.tool()
    async def get_pool_status(scanner_pool: str | None = None) -> dict[str, Any]:
        """Capacity, active scans and utilization per scanner, queue depth and average scan time per pool."""
        return await call(pool_status(scanner_pool))

    @mcp.tool()
    async def get_queue_status(scanner_pool: str | None = None, limit: int = 5) -> dict[str, Any]:
        """Queue depth per pool, dead-letter depth, and the next waiting tasks (never any credential)."""
        return await call(queue_status(scanner_pool, limit))


def queue_router(gateway: Gateway) -> APIRouter:
    router = APIRouter(prefix="/v1")
    queue = gateway.queue

    @router.get("/pools/status")
    async def pools_status(pool: str | None = None) -> dict[str, Any]:
        await _check_pool(gateway, pool)
        return await queue.pool_status(pool)

    @router.get("/queue")
    async def queue_status(pool: str | None = None, limit: int = 5) -> dict[str, Any]:
        await _check_pool(gateway, pool)
        return await queue.queue_status(pool, min(max(limit, 0), 50))

    return router
