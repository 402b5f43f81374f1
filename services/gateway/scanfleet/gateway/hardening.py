"""Browser-facing checks for REST, the same ones the MCP transport applies to /mcp.

A web page in the user's browser must not be able to drive the gateway: ``Host`` and
``Origin`` are checked against the configured allowed hosts (DNS rebinding, cross-site
requests), request bodies must be JSON (a cross-site form or ``text/plain`` post is a "simple"
request that skips CORS preflight), and bodies are bounded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

import msgspec
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scanfleet.common.config import Settings
from scanfleet.gateway.errors import GatewayError

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_list(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Allowed ``Host`` and ``Origin`` values: loopback names by default, plus what is configured.

    On a non-loopback address the gateway's clients reach it by names only the operator knows,
    so without ``SCANFLEET_ALLOWED_HOSTS`` the Host check is off there (as in the MCP SDK), but
    a browser ``Origin`` is still refused unless listed.
    """
    hosts = split_list(settings.allowed_hosts)
    origins = split_list(settings.allowed_origins)
    if is_loopback(settings.gateway_host) or hosts:
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[*LOOPBACK_HOSTS, *hosts],
            allowed_origins=[*LOOPBACK_ORIGINS, *origins],
        )
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=["*"], allowed_origins=origins)


def sdk_transport_security(security: TransportSecuritySettings) -> TransportSecuritySettings:
    """The MCP SDK's own check: it knows no "any host" (``*``) and would refuse every Host, so
    where the Host check is off it is off in the SDK too, and ``RestGuard`` checks Origin on /mcp."""
    if "*" in (security.allowed_hosts or []):
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return security


class _HostAnywhere(TransportSecurityMiddleware):
    def _validate_host(self, host: str | None) -> bool:
        return "*" in self.settings.allowed_hosts or super()._validate_host(host)


OnRefused = Callable[[Request, str, str], Awaitable[None]]


class RestGuard:
    """ASGI middleware: Host/Origin on ``/v1`` and ``/mcp``; on ``/v1`` also JSON bodies only
    (415) and a bounded size (413) (MCP's transport checks its own bodies)."""

    def __init__(
        self, app: ASGIApp, security: TransportSecuritySettings, max_body: int, refused: OnRefused | None = None
    ) -> None:
        self.app = app
        self.checks = _HostAnywhere(security)
        self.max_body = max_body
        self.refused = refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        rest = path.startswith("/v1")
        if not (rest or path.startswith("/mcp")):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = await self._check(request, rest=rest)
        if refusal is None:
            await self.app(scope, self._bounded(receive, send) if rest else receive, send)
            return
        status, code, message = refusal
        if self.refused is not None:
            await self.refused(request, code, message)
        body = msgspec.json.encode(GatewayError(status, code, message).as_dict())
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _check(self, request: Request, *, rest: bool) -> tuple[int, str, str] | None:
        refused = await self.checks.validate_request(request, is_post=False)
        if refused is not None:
            code = "invalid_host" if refused.status_code == 421 else "invalid_origin"
            return refused.status_code, code, f"{code.replace('_', ' ')}: not an allowed host or origin"
        if rest and request.method in BODY_METHODS:
            length = request.headers.get("content-length")
            has_body = (length is not None and length != "0") or "transfer-encoding" in request.headers
            content_type = request.headers.get("content-type", "")
            if has_body and not content_type.lower().startswith("application/json"):
                return 415, "unsupported_media_type", "request bodies must be application/json"
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                return 413, "body_too_large", f"request bodies are limited to {self.max_body} bytes"
        return None

    def _bounded(self, receive: Receive, send: Send) -> Receive:
        """Count a streamed body too: one sent without Content-Length cannot exceed the bound."""
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        return bounded


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request bodies are limited to {limit} bytes")
        self.limit = limit
