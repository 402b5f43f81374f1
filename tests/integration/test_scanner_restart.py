"""A restart request's way from an operator to the agent and back, on a real nats-server, with
the agents serving real (emulated) scanners: every refusal reaches the caller with its code, the
admin route is for admins only, and each call leaves one audit record. The restart itself, on a
real engine, is tests/containers/test_scanner_containers.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from scanfleet.agent.fleet import AgentFleet, select
from scanfleet.agent.instance import credential_resolver
from scanfleet.common import audit, capacity, contract, scanner_ops
from scanfleet.common.admin_ops import AdminError
from scanfleet.common.clients import ClientDirectory, Role
from scanfleet.common.config import load_fleet
from scanfleet.common.messages import Heartbeat
from scanfleet.common.registry import sync_registry
from scanfleet.common.runtime import Runtime
from scanfleet.common.scope import Scope
from scanfleet.emulator.app import create_app
from scanfleet.gateway.admin import admin_router
from scanfleet.gateway.auth import Authenticator
from scanfleet.gateway.errors import GatewayError
from scanfleet.gateway.guard import Guard
from tests.helpers import ACCESS_KEY, SECRET_KEY, add_client, make_config, serving, watch_until

CONTAINER = "scanfleet-no-such-container"


def scanners_file(path: Path, url: str, engine: str) -> Path:
    auth = {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
    managed = {"name": CONTAINER, "engine": engine, "stop_timeout_seconds": 1}
    pools = {
        "default": {
            "scanners": [
                {"id": "scanner-1", "url": url, "auth": auth, "container": managed},
                {"id": "scanner-2", "url": url, "auth": auth},
            ]
        },
        "dmz": {"scanners": [{"id": "scanner-3", "url": url, "auth": auth}]},
    }
    path.write_text(yaml.safe_dump({"version": 1, "pools": pools}))
    return path


@pytest.fixture
async def fleet(runtime: Runtime, tmp_path: Path) -> AsyncIterator[AgentFleet]:
    """Agents for default/scanner-1 (its container on an engine that is not there) and
    default/scanner-2 (no container); none for dmz/scanner-3."""
    async with serving(create_app(make_config())) as url:
        path = scanners_file(tmp_path / "scanners.yaml", url, f"unix://{tmp_path}/no-engine.sock")
        await sync_registry(runtime.registry, runtime.capacity, load_fleet(path))
        chosen = "default/scanner-1,default/scanner-2"
        instances, _ = select(load_fleet(path), chosen)
        agents = AgentFleet(
            runtime,
            instances,
            agent_id="a1",
            credentials=credential_resolver(runtime.settings),
            load=lambda: load_fleet(path),
            selector=chosen,
        )
        running = asyncio.create_task(agents.run())
        try:
            for key in ("default.scanner-1", "default.scanner-2"):
                await watch_until(runtime.agents, key, Heartbeat, lambda b: b.authenticated, 15)
            yield agents
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)


async def refused(rt: Runtime, pool: str, instance: str, **options: Any) -> AdminError:
    with pytest.raises(AdminError) as caught:
        await scanner_ops.restart(rt, pool, instance, actor="tester", wait=10, **options)
    return caught.value


async def test_the_agent_reports_its_container_and_every_refusal_reaches_the_caller(
    runtime: Runtime, fleet: AgentFleet
) -> None:
    rt = runtime
    beat = await watch_until(rt.agents, "default.scanner-1", Heartbeat, lambda b: b.container is not None, 15)
    assert beat.container is not None
    assert (beat.container.name, beat.container.state) == (CONTAINER, "unknown")
    assert beat.container.error is not None and beat.container.error.startswith("inspect: ")
    assert not beat.starting, "an engine that cannot say does not make the scanner starting"
    unmanaged = await watch_until(rt.agents, "default.scanner-2", Heartbeat, lambda b: b.authenticated, 15)
    assert unmanaged.container is None

    error = await refused(rt, "default", "scanner-2")
    assert (error.status, error.code) == (409, "not_container_managed")
    error = await refused(rt, "default", "scanner-1")
    assert (error.status, error.code) == (503, "engine_unreachable")
    assert error.message.startswith("default/scanner-1: restart: "), error.message
    error = await refused(rt, "dmz", "scanner-3")
    assert (error.status, error.code) == (503, "no_agent")
    for pool, instance in [("default", "scanner-9"), ("default", "scanner-1.>"), ("*", "scanner-1")]:
        error = await refused(rt, pool, instance)
        assert (error.status, error.code) == (404, "scanner_not_found")

    # Scans in hand: refused unless forced (then the engine is asked, and here it is not there).
    assert await capacity.reserve(rt.capacity, "default.scanner-1", "t-busy")
    error = await refused(rt, "default", "scanner-1")
    assert (error.status, error.code, error.details) == (409, "scanner_busy", {"tasks": ["t-busy"]})
    error = await refused(rt, "default", "scanner-1", force=True)
    assert error.code == "engine_unreachable"

    # The failed attempt counts as the last restart, so an automatic one waits a whole period.
    beat = await watch_until(
        rt.agents,
        "default.scanner-1",
        Heartbeat,
        lambda b: b.container is not None and b.container.restarted_by == "tester",
        15,
    )
    assert beat.container is not None and beat.container.restarted_at is not None


def admin_app(rt: Runtime, guard: Guard) -> FastAPI:
    """The gateway's admin routes with its error handling, as create_app wires them."""
    app = FastAPI()
    app.include_router(admin_router(rt, guard))

    @app.exception_handler(GatewayError)
    async def on_error(_: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse(exc.as_dict(), status_code=exc.status)

    return app


async def test_the_admin_route_is_for_admins_and_every_call_is_audited(
    runtime: Runtime, fleet: AgentFleet, tmp_path: Path
) -> None:
    clients = tmp_path / "clients.yaml"
    admin = add_client(clients, "ops-admin", Role.ADMIN, Scope(targets=["10.0.0.0/8"]))
    operator = add_client(clients, "ops-operator", Role.OPERATOR, Scope(targets=["10.0.0.0/8"]))
    async with httpx.AsyncClient() as client_http:
        guard = Guard(runtime, Authenticator(ClientDirectory(clients), "http://127.0.0.1:1/mcp", client_http))
        transport = httpx.ASGITransport(app=admin_app(runtime, guard))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:

            async def restart(token: str, scanner: str, body: Any = None) -> httpx.Response:
                headers = {"Authorization": f"Bearer {token}"}
                return await http.post(f"/v1/admin/scanners/{scanner}/restart", json=body, headers=headers)

            forbidden = await restart(operator, "default/scanner-1")
            assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"
            unmanaged = await restart(admin, "default/scanner-2", {"reason": "stuck"})
            assert unmanaged.status_code == 409
            assert unmanaged.json()["error"] == "not_container_managed" and unmanaged.json()["next_steps"]
            unreachable = await restart(admin, "default/scanner-1", {"force": True})
            assert unreachable.status_code == 503 and unreachable.json()["error"] == "engine_unreachable"
            bad_body = await restart(admin, "default/scanner-1", {"forse": True})
            assert bad_body.status_code == 422 and bad_body.json()["error"] == "invalid_request"
            assert (await http.post("/v1/admin/scanners/default/scanner-1/restart")).status_code == 401

    records = await audit.read(runtime.js, audit.AuditQuery(action=contract.SCANNER_RESTART_ACTION))
    seen = [(r.client, r.decision, r.code, r.pool, r.scanner) for r in records]
    assert seen == [
        ("ops-operator", "deny", "forbidden", "default", "scanner-1"),
        ("ops-admin", "deny", "not_container_managed", "default", "scanner-2"),
        ("ops-admin", "deny", "engine_unreachable", "default", "scanner-1"),
        ("ops-admin", "deny", "invalid_request", "default", "scanner-1"),
    ]
    assert all(msgspec.to_builtins(r).get("role") for r in records)
