"""MCP tools and REST routes for authenticated scans and for cancel, pause and resume."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Request
from mcp.server.mcpserver import Context, ElicitationResult, Resolve
from mcp.types import CallToolResult

from scanfleet.common.credentials import CredentialError, TargetCredential, parse
from scanfleet.common.messages import Priority
from scanfleet.gateway import confirmation
from scanfleet.gateway.access import Caller
from scanfleet.gateway.control import ScanControl
from scanfleet.gateway.core import Gateway, SubmitScan
from scanfleet.gateway.errors import GatewayError, read_body, safe_message
from scanfleet.gateway.guard import Guard, raw_targets
from scanfleet.gateway.schemas import ScanStatus, ScanSubmitted
from scanfleet.gateway.toolkit import CONTROL, SCAN, ScanfleetMCP, structured

AuthScanType = Literal["authenticated", "authenticated_privileged"]
Escalation = Literal["sudo", "su", "su+sudo", "pbrun", "dzdo"]


def register_control_tools(mcp: ScanfleetMCP, gateway: Gateway, guard: Guard) -> None:
    register_authenticated_scan(mcp, gateway, guard)
    control = ScanControl(gateway)

    @mcp.scan_tool("Cancel a scan", ScanStatus, CONTROL)
    async def cancel_scan(task_id: str, reason: str = "", *, ctx: Context[Any, Any]) -> CallToolResult:
        """Cancel a scan: a queued one never starts; a running one is stopped on Nessus and its slot freed."""
        return structured(
            await guard.tool(ctx, "cancel_scan", lambda c: control.cancel(c, task_id, reason), task_id=task_id)
        )

    @mcp.scan_tool("Pause a scan", ScanStatus, CONTROL)
    async def pause_scan(task_id: str, *, ctx: Context[Any, Any]) -> CallToolResult:
        """Pause a running scan on Nessus; get_scan_status shows paused: true once it took effect."""
        return structured(await guard.tool(ctx, "pause_scan", lambda c: control.pause(c, task_id), task_id=task_id))

    @mcp.scan_tool("Resume a scan", ScanStatus, CONTROL)
    async def resume_scan(task_id: str, *, ctx: Context[Any, Any]) -> CallToolResult:
        """Resume a paused scan; time spent paused does not count towards the running timeout."""
        return structured(await guard.tool(ctx, "resume_scan", lambda c: control.resume(c, task_id), task_id=task_id))


def register_authenticated_scan(mcp: ScanfleetMCP, gateway: Gateway, guard: Guard) -> None:
    @mcp.scan_tool("Run a credentialed scan", ScanSubmitted, SCAN)
    async def run_authenticated_scan(
        targets: str,
        name: str,
        confirmed: Annotated[ElicitationResult[confirmation.Confirm], Resolve(confirmation.ask_authenticated)],
        scan_type: AuthScanType = "authenticated",
        credential_ref: str | None = None,
        username: str | None = None,
        password: str | None = None,
        private_key: str | None = None,
        private_key_passphrase: str | None = None,
        escalation: Escalation | None = None,
        escalation_account: str | None = None,
        escalation_password: str | None = None,
        description: str = "",
        scanner_pool: str | None = None,
        scanner_instance: str | None = None,
        idempotency_key: str | None = None,
        priority: Priority = "normal",
        *,
        ctx: Context[Any, Any],
    ) -> CallToolResult:
        """Queue a credentialed (SSH) Nessus scan.

        Give either credential_ref (a credential held by the scanner agents) or username with a
        password or private_key. scan_type authenticated_privileged also needs escalation
        (sudo, su, su+sudo, pbrun, dzdo), optionally escalation_account and escalation_password.
        Inline secrets are encrypted at once and never returned or stored in plaintext.
        """
        inline = {
            "username": username,
            "password": password,
            "private_key": private_key,
            "private_key_passphrase": private_key_passphrase,
            "escalation": escalation,
            "escalation_account": escalation_account,
            "escalation_password": escalation_password,
        }

        async def submit(caller: Caller) -> dict[str, Any]:
            ok = confirmation.confirmed(confirmed)
            try:
                credentials = _inline_credentials(inline)
            except CredentialError as exc:
                raise GatewayError(422, "invalid_credentials", safe_message(str(exc))) from None
            submit = SubmitScan(
                targets=targets,
                name=name,
                description=description,
                scanner_pool=scanner_pool,
                scanner_instance=scanner_instance,
                idempotency_key=idempotency_key,
                scan_type=scan_type,
                credential_ref=credential_ref,
                credentials=credentials,
                priority=priority,
            )
            before = guard.before_queue(caller, "run_authenticated_scan")
            return await gateway.submit(caller, submit, before, confirmed=ok)

        return structured(
            await guard.tool(ctx, "run_authenticated_scan", submit, allow_recorded=True, targets=raw_targets(targets))
        )


def _inline_credentials(inline: dict[str, str | None]) -> TargetCredential | None:
    given = {k: v for k, v in inline.items() if v is not None}
    return parse(given) if given else None


class CancelBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: str = ""


def control_router(gateway: Gateway, guard: Guard) -> APIRouter:
    """``POST /v1/scans/{task_id}/cancel|pause|resume``; authenticated scans use ``POST /v1/scans``."""
    control = ScanControl(gateway)
    router = APIRouter(prefix="/v1/scans")
    authenticated = Depends(guard.rest_caller)

    @router.post("/{task_id}/cancel")
    async def cancel(task_id: str, request: Request, caller: Caller = authenticated) -> dict[str, Any]:
        async def work() -> dict[str, Any]:
            body = await read_body(request, CancelBody, b"{}")
            return await control.cancel(caller, task_id, body.reason)

        return await guard.run(caller, "cancel_scan", work(), task_id=task_id)

    @router.post("/{task_id}/pause")
    async def pause(task_id: str, caller: Caller = authenticated) -> dict[str, Any]:
        return await guard.run(caller, "pause_scan", control.pause(caller, task_id), task_id=task_id)

    @router.post("/{task_id}/resume")
    async def resume(task_id: str, caller: Caller = authenticated) -> dict[str, Any]:
        return await guard.run(caller, "resume_scan", control.resume(caller, task_id), task_id=task_id)

    return router
