"""The emulated Nessus starting up: ``loading`` with its progress on /server/status, the API refusing
work with 503 meanwhile, and a restart that aborts the scans under way, as a real Nessus restart does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from scanfleet.agent.nessus import NessusClient, NessusTransientError, ServerStatus
from scanfleet.emulator.app import create_app
from tests.helpers import ACCESS_KEY, API_KEYS, SECRET_KEY, FakeClock, make_config, scan_body

STARTUP = 60.0


@pytest.fixture
def app(clock: FakeClock) -> FastAPI:
    return create_app(make_config(startup_duration=STARTUP), clock=clock)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[NessusClient]:
    transport = httpx.ASGITransport(app=app)
    async with NessusClient("http://emulator", access_key=ACCESS_KEY, secret_key=SECRET_KEY, transport=transport) as c:
        yield c


async def test_status_reports_loading_with_progress_until_the_plugins_are_loaded(
    anon: httpx.AsyncClient, clock: FakeClock
) -> None:
    first = await anon.get("/server/status")
    assert first.status_code == 503
    assert first.json() == {"code": 503, "status": "loading", "progress": 0}
    clock.advance(STARTUP / 2)
    assert (await anon.get("/server/status")).json()["progress"] == 50
    clock.advance(STARTUP / 2 - 0.1)
    assert (await anon.get("/server/status")).json()["progress"] == 99
    clock.advance(0.1)
    ready = await anon.get("/server/status")
    assert ready.status_code == 200
    assert ready.json() == {"code": 200, "status": "ready", "progress": None}


async def test_the_api_refuses_work_while_loading_and_the_controls_still_answer(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    for method, path in [("GET", "/server/properties"), ("GET", "/scans"), ("POST", "/session")]:
        refused = await http.request(method, path, json={"username": "operator", "password": "operator-pass"})
        assert refused.status_code == 503, (path, refused.text)
        assert "loading" in refused.json()["error"]
    assert (await http.get("/_emulator/stats")).status_code == 200
    clock.advance(STARTUP)
    assert (await http.get("/server/properties")).status_code == 200


async def test_a_restart_aborts_the_scans_under_way_ends_sessions_and_loads_again(
    http: httpx.AsyncClient, anon: httpx.AsyncClient, app: FastAPI, clock: FakeClock
) -> None:
    clock.advance(STARTUP)
    boot = (await http.get("/server/properties")).json()["scanner_boottime"]
    running = (await http.post("/scans", json=scan_body("running", "10.0.0.1"))).json()["scan"]["id"]
    done = (await http.post("/scans", json=scan_body("done", "10.0.0.2"))).json()["scan"]["id"]
    assert (await http.post(f"/scans/{done}/launch")).status_code == 200
    clock.advance(5.0)
    assert (await http.post(f"/scans/{running}/launch")).status_code == 200
    token = (await anon.post("/session", json={"username": "operator", "password": "operator-pass"})).json()
    assert app.state.emulator.sessions

    answer = await http.post("/_emulator/restart", json={"loading_seconds": 10})
    assert answer.status_code == 200, answer.text
    assert not app.state.emulator.sessions, token
    assert (await anon.get("/server/status")).json()["status"] == "loading"
    clock.advance(10.0)
    assert (await anon.get("/server/status")).json()["status"] == "ready"
    statuses = {s["id"]: s["status"] for s in (await http.get("/_emulator/stats")).json()["scans"]}
    assert statuses == {running: "aborted", done: "completed"}
    assert (await http.get("/server/properties")).json()["scanner_boottime"] == boot + STARTUP + 5


async def test_a_restart_refuses_a_negative_loading_time(http: httpx.AsyncClient) -> None:
    assert (await http.post("/_emulator/restart", json={"loading_seconds": -1})).status_code == 400


async def test_the_client_reads_loading_as_a_status_and_a_bare_503_as_transient(
    client: NessusClient, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    assert await client.server_status() == ServerStatus(status="loading", code=503, progress=0)
    with pytest.raises(NessusTransientError):
        await client.server_properties()
    clock.advance(STARTUP)
    assert (await client.server_status()).status == "ready"
    await http.post("/_emulator/faults", json={"fail_requests": {"count": 1, "status": 503}})
    with pytest.raises(NessusTransientError) as caught:
        await client.server_status()
    assert caught.value.status_code == 503


async def test_without_a_startup_duration_the_scanner_is_ready_at_once(clock: FakeClock) -> None:
    app = create_app(make_config(), clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e", headers=API_KEYS) as h:
        assert (await h.get("/server/status")).json()["status"] == "ready"
        assert (await h.get("/scans")).status_code == 200


async def test_the_plugins_load_from_when_the_server_starts_serving(
    app: FastAPI, anon: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A slow process start must not eat the loading phase: it counts from the server's start."""
    clock.advance(STARTUP + 30)
    assert (await anon.get("/server/status")).json()["status"] == "ready"
    async with app.router.lifespan_context(app):
        assert (await anon.get("/server/status")).json() == {"code": 503, "status": "loading", "progress": 0}
        clock.advance(STARTUP)
        assert (await anon.get("/server/status")).json()["status"] == "ready"
