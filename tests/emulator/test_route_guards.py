"""Which guards stand in front of each route.

The app is assembled from one router per resource, each declaring its own guards; a route that went missing
or lost its authentication or its fault injection on the way would otherwise go unnoticed.
"""

from __future__ import annotations

import httpx
import pytest

PUBLIC = [
    ("POST", "/session"),
    ("GET", "/server/status"),
    ("GET", "/tokens/nope/status"),
    ("GET", "/tokens/nope/download"),
]
API = [
    ("DELETE", "/session"),
    ("GET", "/server/properties"),
    ("GET", "/editor/scan/templates"),
    ("POST", "/file/upload"),
    ("POST", "/scans"),
    ("GET", "/scans"),
    ("GET", "/scans/5"),
    ("PUT", "/scans/5"),
    ("DELETE", "/scans/5"),
    *[("POST", f"/scans/5/{action}") for action in ("launch", "stop", "pause", "resume", "kill", "export")],
    ("GET", "/scans/5/export/1000/status"),
    ("GET", "/scans/5/export/1000/download"),
]
CONTROL = [
    ("GET", "/_emulator/scans/5/truth"),
    ("GET", "/_emulator/stats"),
    ("POST", "/_emulator/faults"),
    ("POST", "/_emulator/restart"),
]
LOGIN = {"username": "operator", "password": "operator-pass"}


@pytest.mark.parametrize(("method", "path"), PUBLIC + API + CONTROL)
async def test_only_the_public_routes_answer_without_credentials(
    anon: httpx.AsyncClient, method: str, path: str
) -> None:
    status = (await anon.request(method, path, json=LOGIN)).status_code
    assert status not in (404, 405) or path.startswith("/tokens/")
    assert (status == 401) == ((method, path) not in PUBLIC), status


@pytest.mark.parametrize(("method", "path"), PUBLIC + API + CONTROL)
async def test_injected_failures_hit_every_nessus_route_and_no_control_route(
    http: httpx.AsyncClient, method: str, path: str
) -> None:
    await http.post("/_emulator/faults", json={"fail_requests": {"count": 1, "status": 503}})
    status = (await http.request(method, path, json=LOGIN)).status_code
    assert (status == 503) == ((method, path) not in CONTROL), status
