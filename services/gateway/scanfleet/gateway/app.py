"""The gateway's HTTP surface: MCP (streamable HTTP) at /mcp, REST under /v1, health, metrics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from nats.js.errors import NotFoundError
from prometheus_client import CONTENT_TYPE_LATEST

from scanfleet.common import contract
from scanfleet.common.ops_http import metrics_text
from scanfleet.common.runtime import Runtime
from scanfleet.gateway.admin import admin_router
from scanfleet.gateway.control_tools import control_router
from scanfleet.gateway.core import Gateway, GatewayError, SubmitScan
from scanfleet.gateway.queue_tools import queue_router
from scanfleet.gateway.results import Results
from scanfleet.gateway.results_tools import results_router
from scanfleet.gateway.tools import build_mcp


def create_app(rt: Runtime) -> FastAPI:
    gateway = Gateway(rt)
    results = Results(gateway)
    mcp = build_mcp(gateway, results)
    mcp_app = mcp.streamable_http_app(streamable_http_path="/mcp", host=rt.settings.gateway_host)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            async with mcp.session_manager.run():
                yield
        finally:
            await gateway.stop()
            results.cache.close()

    app = FastAPI(title="scanfleet gateway", version="0.1.0", lifespan=lifespan)

    @app.exception_handler(GatewayError)
    async def on_gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse(exc.as_dict(), status_code=exc.status)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        checks: dict[str, Any] = {"nats": rt.connected}
        try:
            for stream in (contract.REQUESTS_STREAM, contract.EVENTS_STREAM):
                await rt.js.stream_info(stream)
            checks["streams"] = True
        except (NotFoundError, TimeoutError, Exception):
            checks["streams"] = False
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(await metrics_text(rt), media_type=CONTENT_TYPE_LATEST)

    app.include_router(scans_router(gateway))
    app.include_router(results_router(results))
    app.include_router(control_router(gateway))
    app.include_router(queue_router(gateway))
    app.include_router(admin_router(rt))
    app.mount("/", mcp_app)
    return app


def scans_router(gateway: Gateway) -> APIRouter:
    """``POST /v1/scans`` and the status, scanners and pools reads."""
    router = APIRouter()

    @router.post("/v1/scans", status_code=202)
    async def submit_scan(request: Request) -> dict[str, Any]:
        try:
            body = msgspec.json.decode(await request.body(), type=SubmitScan)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise GatewayError(422, "invalid_request", str(exc)) from None
        return await gateway.submit(body)

    @router.get("/v1/scans/{task_id}")
    async def scan_status(task_id: str) -> dict[str, Any]:
        return await gateway.status(task_id)

    @router.get("/v1/scanners")
    async def scanners(pool: str | None = None) -> dict[str, Any]:
        return await gateway.scanners(pool)

    @router.get("/v1/pools")
    async def pools() -> dict[str, Any]:
        return await gateway.pools()

    return router
