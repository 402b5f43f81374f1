"""A human's confirmation of a risky scan, asked through MCP elicitation.

The scan tools declare a parameter filled by a resolver (the SDK's dependency mechanism): it is
not in the tool's input schema and a client's value for it is ignored, so a model cannot
confirm on the human's behalf. The resolver asks only when the client's policy wants it
(``Scope.confirm_over_targets`` / ``confirm_scan_types``); the SDK carries the question as a
multi-round-trip input request on 2026-07-28 and as ``elicitation/create`` on 2025-11-25. The
core re-checks the policy (``core.confirmation_reason``), so no path queues such a scan
unconfirmed.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import AcceptedElicitation, Context, Elicit
from pydantic import BaseModel, Field

from scanfleet.common.messages import ScanType
from scanfleet.common.targets import InvalidTarget, parse_targets
from scanfleet.gateway.core import Gateway, confirmation_reason
from scanfleet.gateway.errors import GatewayError
from scanfleet.gateway.guard import Guard


class Confirm(BaseModel):
    confirm: bool = Field(description="Queue this scan now")


class NotAsked:
    """The policy does not want this scan confirmed."""


class CannotAsk:
    """The policy wants it confirmed, but this client declared no form elicitation."""


def can_elicit(ctx: Context[Any, Any]) -> bool:
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


class Asker:
    """What the resolvers need; ``ScanfleetMCP.asker`` holds the server's one."""

    def __init__(self, gateway: Gateway, guard: Guard) -> None:
        self.gateway = gateway
        self.guard = guard


def _asker(ctx: Context[Any, Any]) -> Asker:
    server = ctx.mcp_server
    asker = getattr(server, "asker", None)
    if not isinstance(asker, Asker):
        raise RuntimeError("the scan tools need a server with an Asker")
    return asker


async def ask_untrusted(targets: str, scanner_pool: str | None, ctx: Context[Any, Any]) -> Any:
    """The resolver of ``run_untrusted_scan``'s confirmation (arguments matched by name)."""
    return await ask(_asker(ctx), ctx, targets, scanner_pool, "untrusted")


async def ask_authenticated(targets: str, scanner_pool: str | None, scan_type: ScanType, ctx: Context[Any, Any]) -> Any:
    """The resolver of ``run_authenticated_scan``'s confirmation."""
    return await ask(_asker(ctx), ctx, targets, scanner_pool, scan_type)


async def ask(asker: Asker, ctx: Context[Any, Any], targets: str, pool: str | None, scan_type: ScanType) -> Any:
    """``Elicit`` when the policy wants a human's word, else a marker the tool reads."""
    gateway = asker.gateway
    caller = asker.guard.mcp_caller(ctx)
    try:
        parsed = parse_targets(targets)
    except InvalidTarget:
        return NotAsked()  # the submission refuses it, with the reason
    why = confirmation_reason(caller.scope, parsed, scan_type)
    if why is None:
        return NotAsked()
    if not can_elicit(ctx):
        return CannotAsk()
    where = pool or (await gateway.pools(caller))["default_pool"] or "the default pool"
    shown = targets if len(targets) <= 300 else targets[:300] + "…"
    count = sum(t.addresses for t in parsed)
    message = (
        f"Confirm a {scan_type} scan of {count} address(es) on scanner pool {where}: {shown}. "
        f"Your policy asks for confirmation because of {why}."
    )
    return Elicit(message, Confirm)


def confirmed(outcome: Any) -> bool:
    """True if a human confirmed; False when the policy does not ask. Refuses otherwise."""
    if isinstance(outcome, AcceptedElicitation):
        data = outcome.data
        if isinstance(data, NotAsked):
            return False
        if isinstance(data, CannotAsk):
            raise GatewayError(
                403,
                "confirmation_required",
                "this scan needs a human's confirmation and this client cannot ask one (it declared no "
                "elicitation support); nothing was queued",
            )
        if isinstance(data, Confirm) and data.confirm:
            return True
    raise GatewayError(403, "not_confirmed", "the scan was not confirmed; nothing was queued")
