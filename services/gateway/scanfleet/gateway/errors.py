"""Refusals the caller can act on, and how they reach REST (JSON + status) and MCP (tool errors)."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request

T = TypeVar("T")


class GatewayError(Exception):
    """A refusal the caller can act on; ``status`` maps to HTTP, ``details`` helps fix it."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def safe_message(message: str) -> str:
    """A validation message without the values it quotes (msgspec quotes values, and backticks
    types and paths): a value typed into the wrong field may be a secret."""
    return _QUOTED.sub("<value>", message)


async def read_body(request: Request, kind: type[T], empty: bytes | None = None) -> T:
    """Decode a JSON body into ``kind``; a malformed one is a 422 that never echoes a value."""
    raw = await request.body()
    try:
        return msgspec.json.decode(raw or empty or b"", type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise GatewayError(422, "invalid_request", safe_message(str(exc))) from None


def tool_error(exc: GatewayError) -> ToolError:
    """The same JSON a REST client gets, so an agent can read the code and what it may do instead."""
    return ToolError(msgspec.json.encode(exc.as_dict()).decode())


async def call(coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await coro
    except GatewayError as exc:
        raise tool_error(exc) from None
