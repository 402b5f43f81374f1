"""How scanfleet registers MCP tools: title, annotations, an output schema from ``schemas``,
and results as ``structuredContent`` with the same compact JSON as text.

``ScanfleetMCP`` also turns every refusal into the JSON a REST client gets (with
``next_steps``), never an argument's value or a library's message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from mcp.types import Tool as MCPTool
from pydantic import ValidationError

from scanfleet.common.bus import UNAVAILABLE
from scanfleet.gateway.errors import GatewayError, tool_error, unavailable
from scanfleet.gateway.schemas import Out, schema_of

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Kind:
    """What a tool does to the world, as MCP annotations say it."""

    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False


READ = Kind(read_only=True, idempotent=True)
CONTROL = Kind(destructive=True, idempotent=True)
SCAN = Kind(open_world=True)


class ScanfleetMCP(MCPServer):
    """Tool errors as the same JSON a REST client gets, and never an argument's value.

    The SDK words a refused argument with pydantic's message, which quotes the value: a
    password typed into the wrong field would come straight back. Here only field names do,
    and such a refusal is audited like any other call. An unexpected failure becomes
    ``internal_error``, never the SDK's bare "Error executing tool".
    """

    def __init__(self, audit: Callable[..., Any], name: str, **settings: Any) -> None:
        super().__init__(name, **settings)
        self._audit_refusal = audit
        self.output_types: dict[str, type[Out]] = {}
        self.asker: object = None
        """What the confirmation resolvers reach through their ``Context`` (``confirmation.Asker``)."""

    def scan_tool(self, title: str, output: type[Out], kind: Kind, name: str | None = None) -> Callable[[F], F]:
        def register(fn: F) -> F:
            tool_name = name or fn.__name__
            annotations = ToolAnnotations(
                title=title,
                read_only_hint=kind.read_only,
                destructive_hint=kind.destructive,
                idempotent_hint=kind.idempotent,
                open_world_hint=kind.open_world,
            )
            self.add_tool(fn, name=tool_name, title=title, annotations=annotations, structured_output=False)
            self.output_types[tool_name] = output
            return fn

        return register

    async def list_tools(self) -> list[MCPTool]:
        listed = await super().list_tools()
        return [
            t.model_copy(update={"output_schema": schema_of(self.output_types[t.name])})
            if t.name in self.output_types
            else t
            for t in listed
        ]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError as exc:
            if isinstance(exc.__cause__, UNAVAILABLE):
                raise tool_error(unavailable(exc.__cause__)) from None
            raise tool_error(GatewayError(500, "internal_error", f"{name} failed unexpectedly")) from None
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                fields = sorted({".".join(str(p) for p in err["loc"]) for err in cause.errors()})
                refusal = GatewayError(
                    422, "invalid_arguments", f"invalid value for: {', '.join(fields)}", fields=fields
                )
                if context is not None:
                    await self._audit_refusal(context, name, refusal)
                raise tool_error(refusal) from None
            text = str(exc).removeprefix(f"Error executing tool {name}: ")
            if not text.startswith("{"):
                # A message of the SDK's own (a resolver that could not ask, a disabled client).
                text = msgspec.json.encode(GatewayError(400, "tool_refused", text).as_dict()).decode()
            raise ToolError(text) from exc.__cause__


def structured(data: dict[str, Any]) -> CallToolResult:
    """``structuredContent`` and the same JSON as compact text, for clients that read only text."""
    return CallToolResult(
        content=[TextContent(type="text", text=msgspec.json.encode(data).decode())], structured_content=data
    )
