"""How a gateway refusal reaches an MCP client: as a tool error it can read and act on."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError

from scanfleet.gateway.core import GatewayError


async def call(coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await coro
    except GatewayError as exc:
        raise ToolError(f"{exc.code}: {exc.message} {exc.details or ''}".strip()) from None
