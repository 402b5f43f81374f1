"""MCP tools and REST routes for authenticated scans and for cancel, pause and resume."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from fastapi import APIRouter, Request
from mcp.server.mcpserver import MCPServer

from scanfleet.common.credentials import CredentialError, TargetCredential, parse
from scanfleet.gateway.control import ScanControl
from scanfleet.gateway.core import Gateway, GatewayError, SubmitScan
from scanfleet.gateway.errors import call

AuthScanType = Literal["authenticated", "authenticated_privileged"]
Escalation = Literal["sudo", "su", "su+sudo", "pbrun", "dzdo"]


def register_control_tools(mcp: MCPServer, gateway: Gateway) -> None:
    register_authenticated_scan(mcp, gateway)
    control = ScanControl(gateway)

    @mcp.tool()
    async def cancel_scan(task_id: str, reason: str = "") -> dict[str, Any]:
        """Cancel a scan: a queued one never starts; a running one is stopped on Nessus and its slot freed."""
        return await call(control.cancel(task_id, reason))

    @mcp.tool()
    async def pause_scan(task_id: str) -> dict[str, Any]:
        """Pause a running scan on Nessus; get_scan_status shows paused: true once it took effect."""
        return await call(control.pause(task_id))

    @mcp.tool()
    async def resume_scan(task_id: str) -> dict[str, Any]:
        """Resume a paused scan; time spent paused does not count towards the running timeout."""
        return await call(control.resume(task_id))


def register_authenticated_scan(mcp: MCPServer, gateway: Gateway) -> None:
    @mcp.tool()
    async def run_authenticated_scan(
        targets: str,
        name: str,
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
    ) -> dict[str, Any]:
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
        try:
            credentials = _inline_credentials(inline)
        except CredentialError as exc:
            return await call(_refusal(exc))
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
        )
        return await call(gateway.submit(submit))


def _inline_credentials(inline: dict[str, str | None]) -> TargetCredential | None:
    given = {k: v for k, v in inline.items() if v is not None}
    return parse(given) if given else None


async def _refusal(exc: CredentialError) -> dict[str, Any]:
    raise GatewayError(422, "invalid_credentials", str(exc))


class CancelBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: str = ""


def control_router(gateway: Gateway) -> APIRouter:
    """``POST /v1/scans/{task_id}/cancel|pause|resume``; authenticated scans use ``POST /v1/scans``."""
    control = ScanControl(gateway)
    router = APIRouter(prefix="/v1/scans")

    @router.post("/{task_id}/cancel")
    async def cancel(task_id: str, request: Request) -> dict[str, Any]:
        try:
            body = msgspec.json.decode((await request.body()) or b"{}", type=CancelBody)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise GatewayError(422, "invalid_request", str(exc)) from None
        return await control.cancel(task_id, body.reason)

    @router.post("/{task_id}/pause")
    async def pause(task_id: str) -> dict[str, Any]:
        return await control.pause(task_id)

    @router.post("/{task_id}/resume")
    async def resume(task_id: str) -> dict[str, Any]:
        return await control.resume(task_id)

    return router
