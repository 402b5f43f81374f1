"""Host and Origin checks on /v1 and /mcp, as the gateway wires them (RestGuard outside, the MCP
SDK's own check inside), for a gateway on loopback and one on every interface."""

from __future__ import annotations

import httpx
import pytest
from mcp.server.transport_security import TransportSecurityMiddleware
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from scanfleet.common.config import Settings
from scanfleet.gateway.hardening import RestGuard, sdk_transport_security, transport_security

EVIL = "https://evil.example"


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Stands in for the routes: 200, unless on /mcp the MCP SDK's own check refuses the request."""
    status = 200
    if scope["path"].startswith("/mcp"):
        security = sdk_transport_security(transport_security(SETTINGS[scope["app_settings"]]))
        refused = await TransportSecurityMiddleware(security).validate_request(Request(scope), is_post=False)
        status = refused.status_code if refused is not None else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


SETTINGS = {
    "everywhere": Settings(gateway_host="0.0.0.0"),
    "listed": Settings(gateway_host="0.0.0.0", allowed_hosts="scanfleet.example.org"),
    "loopback": Settings(gateway_host="127.0.0.1"),
}


async def answer(which: str, path: str, headers: dict[str, str]) -> int:
    guard = RestGuard(inner_app, transport_security(SETTINGS[which]), max_body=1024)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await guard({**scope, "app_settings": which}, receive, send)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return (await client.get(path, headers=headers)).status_code


@pytest.mark.parametrize("path", ["/mcp", "/v1/scanners"])
async def test_a_gateway_on_every_interface_without_listed_hosts_answers_any_host(path: str) -> None:
    # The MCP SDK once refused every Host here (421): it has no "any host" of its own.
    assert await answer("everywhere", path, {"host": "scanner-gw.internal:8080"}) == 200


@pytest.mark.parametrize("path", ["/mcp", "/v1/scanners"])
@pytest.mark.parametrize("which", ["everywhere", "listed", "loopback"])
async def test_a_foreign_browser_origin_is_refused_on_both_interfaces(which: str, path: str) -> None:
    host = "scanfleet.example.org" if which == "listed" else "127.0.0.1:8080"
    assert await answer(which, path, {"host": host, "origin": EVIL}) == 403


@pytest.mark.parametrize("path", ["/mcp", "/v1/scanners"])
@pytest.mark.parametrize("which", ["listed", "loopback"])
async def test_an_unlisted_host_is_refused_where_hosts_are_checked(which: str, path: str) -> None:
    assert await answer(which, path, {"host": "evil.example"}) == 421
    allowed = "scanfleet.example.org" if which == "listed" else "localhost:8080"
    assert await answer(which, path, {"host": allowed}) == 200
