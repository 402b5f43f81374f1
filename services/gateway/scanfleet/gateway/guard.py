"""Every call through one door: who is calling, then the work, then one audit record.

REST routes get their ``Caller`` from ``Guard.rest_caller`` (a FastAPI dependency reading the
bearer token); MCP tools from ``Guard.mcp_caller``, which reads the principal the SDK's bearer
middleware verified for that very HTTP request. ``Guard.run`` then does the work and appends
one audit record, allowed or denied with the refusal's code. A submission is audited before it
is queued (``Guard.audit`` from the core), so a scan never runs unrecorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.mcpserver import Context
from pydantic import AnyHttpUrl

from scanfleet.common import audit as trail
from scanfleet.common.bus import UNAVAILABLE
from scanfleet.common.messages import ScanType
from scanfleet.common.runtime import Runtime
from scanfleet.common.targets import Target
from scanfleet.common.telemetry import current_trace_id
from scanfleet.gateway.access import Caller, admin_token_principal
from scanfleet.gateway.auth import Authenticator
from scanfleet.gateway.core import BeforeQueue
from scanfleet.gateway.errors import GatewayError, tool_error, unavailable

T = TypeVar("T")
_SPLIT = re.compile(r"[\s,]+")
log = logging.getLogger("scanfleet.gateway.audit")


def raw_targets(targets: str | list[str]) -> trail.TargetSummary:
    """What a refused submission asked for, bounded: entries as typed, each cut to 100 characters."""
    entries = [
        e[:100] for chunk in (targets if isinstance(targets, list) else [targets]) for e in _SPLIT.split(chunk) if e
    ]
    return trail.summarize_targets(entries, 0)


class Guard:
    def __init__(self, rt: Runtime, authenticator: Authenticator) -> None:
        self.rt = rt
        self.authenticator = authenticator
        self.admin_token = rt.settings.admin_token

    # Who is calling -------------------------------------------------------------------

    async def rest_caller(self, request: Request) -> Caller:
        """The verified caller of a REST request, or a 401 (audited) that says how to authenticate."""
        source = request.client.host if request.client else None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        principal = None
        if scheme.lower() == "bearer" and token.strip():
            token = token.strip()
            if self.admin_token and hmac.compare_digest(token.encode(), self.admin_token.encode()):
                principal = admin_token_principal()
            else:
                principal = await self.authenticator.principal(token)
        if principal is None:
            why = "invalid or revoked token" if header else "no bearer token"
            await self.audit_anonymous("authenticate", "rest", source, f"{request.method} {request.url.path}: {why}")
            raise GatewayError(
                401,
                "unauthorized",
                "send Authorization: Bearer <token>: an API token ('scanfleet clients token') or an OAuth access token",
                headers={"WWW-Authenticate": self.www_authenticate()},
            )
        return Caller(principal, source, "rest")

    def mcp_caller(self, ctx: Context[Any, Any]) -> Caller:
        return self.mcp_request_caller(ctx.request_context.request)

    def mcp_request_caller(self, request: Any) -> Caller:
        """The caller of an MCP request (tools, and extension methods such as ``tasks/get``)."""
        scope = getattr(request, "scope", None) or {}
        user = scope.get("user")
        principal = None
        if isinstance(user, AuthenticatedUser):
            principal = self.authenticator.directory.get(user.access_token.client_id)
            method = (user.access_token.claims or {}).get("method")
            if principal is not None and isinstance(method, str):
                principal = dataclasses.replace(principal, method=method)
        if principal is None:
            # The bearer middleware let the request in, so the client was disabled since.
            raise tool_error(GatewayError(401, "unauthorized", "this client is no longer allowed to call scanfleet"))
        client = getattr(request, "client", None)
        return Caller(principal, client.host if client else None, "mcp")

    def www_authenticate(self) -> str:
        """The same challenge /mcp gives (RFC 9728): where the protected-resource metadata is."""
        metadata = build_resource_metadata_url(AnyHttpUrl(self.authenticator.resource_url))
        return f'Bearer resource_metadata="{metadata}"'

    # Doing and recording ---------------------------------------------------------------

    async def run(
        self, caller: Caller, action: str, work: Awaitable[T], *, allow_recorded: bool = False, **fields: Any
    ) -> T:
        """Do the work; record allow (with the task it touched) or deny (with the refusal's code).

        ``allow_recorded``: the work records its own allow before it acts (a submission), so
        here only a refusal is recorded. An allow that cannot be recorded after the work is
        logged, not turned into an error: the work has happened and the caller must know.
        """
        try:
            result = await work
        except GatewayError as exc:
            await self.audit(caller, action, "deny", code=exc.code, reason=exc.message, **fields)
            raise
        except UNAVAILABLE as exc:
            refusal = unavailable(exc)
            with contextlib.suppress(GatewayError):  # the bus that failed may fail the record too
                await self.audit(caller, action, "deny", code=refusal.code, reason=refusal.message, **fields)
            raise refusal from exc
        if allow_recorded:
            return result
        if isinstance(result, dict) and "task_id" in result and "task_id" not in fields:
            fields["task_id"] = result["task_id"]
        try:
            await self.audit(caller, action, "allow", **fields)
        except GatewayError:
            log.error("%s by %s was done but not recorded in the audit trail", action, caller.id)
        return result

    async def tool(
        self,
        ctx: Context[Any, Any],
        action: str,
        work: Callable[[Caller], Awaitable[T]],
        *,
        allow_recorded: bool = False,
        **fields: Any,
    ) -> T:
        """An MCP tool call: the caller, the work, the audit; refusals become tool errors."""
        caller = self.mcp_caller(ctx)
        try:
            return await self.run(caller, action, work(caller), allow_recorded=allow_recorded, **fields)
        except GatewayError as exc:
            raise tool_error(exc) from None

    def before_queue(self, caller: Caller, action: str) -> BeforeQueue:
        """The allow record of a submission, written before anything is queued (fail closed)."""

        async def record(task_id: str, targets: list[Target], pool: str, scan_type: ScanType) -> None:
            summary = trail.summarize_targets([t.text for t in targets], sum(t.addresses for t in targets))
            await self.audit(caller, action, "allow", task_id=task_id, pool=pool, scan_type=scan_type, targets=summary)

        return record

    async def audit(self, caller: Caller, action: str, decision: trail.Decision, **fields: Any) -> None:
        record = trail.AuditRecord(
            client=caller.id,
            role=str(caller.role),
            auth=caller.principal.method,
            interface=caller.interface,
            action=action,
            decision=decision,
            source=caller.source,
            trace_id=fields.pop("trace_id", None) or current_trace_id(),
            **fields,
        )
        await self._append(record)

    async def audit_refused_request(self, request: Request, code: str, reason: str) -> None:
        """A request refused before anyone was asked who sent it (Host, Origin, media type, size)."""
        source = request.client.host if request.client else None
        why = f"{request.method} {request.url.path}: {reason}"
        with contextlib.suppress(GatewayError):  # the refusal stands either way; _append logged it
            await self.audit_anonymous("http_request", "rest", source, why, code)

    async def audit_anonymous(
        self, action: str, interface: str, source: str | None, reason: str, code: str = "unauthorized"
    ) -> None:
        record = trail.AuditRecord(
            action=action, decision="deny", code=code, reason=reason, interface=interface, source=source
        )
        await self._append(record)

    async def _append(self, record: trail.AuditRecord) -> None:
        try:
            await trail.append(self.rt.js, record)
        except Exception as exc:
            log.error("audit record not stored (%s): %s", type(exc).__name__, record.action)
            raise GatewayError(503, "audit_unavailable", "the audit trail cannot be written; try again") from exc
