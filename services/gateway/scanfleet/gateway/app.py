"""The gateway's HTTP surface: MCP (streamable HTTP) at /mcp, REST under /v1, health, metrics.

Every route but /health, /ready and /metrics needs a bearer token: an API token from the
clients file or a JWT from the configured identity provider (``auth.Authenticator``). /mcp is
an OAuth 2.1 resource server through the SDK (401 with ``WWW-Authenticate``, protected-resource
metadata at /.well-known/oauth-protected-resource/mcp); REST checks the same tokens in
``Guard.rest_caller``, and both get the same Host/Origin checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from mcp.server.auth.settings import AuthSettings
from mcp.server.request_state import RequestStateSecurity
from nats.js.errors import NotFoundError
from prometheus_client import CONTENT_TYPE_LATEST

from scanfleet.common import contract
from scanfleet.common.bus import UNAVAILABLE
from scanfleet.common.clients import ClientDirectory
from scanfleet.common.config import Settings
from scanfleet.common.ops_http import metrics_text
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskState
from scanfleet.gateway.access import Caller
from scanfleet.gateway.admin import admin_router
from scanfleet.gateway.admission import Admission
from scanfleet.gateway.auth import Authenticator
from scanfleet.gateway.control_tools import control_router
from scanfleet.gateway.core import Gateway, SubmitScan
from scanfleet.gateway.errors import GatewayError, read_body, unavailable
from scanfleet.gateway.guard import Guard, raw_targets
from scanfleet.gateway.hardening import BodyTooLarge, RestGuard, transport_security
from scanfleet.gateway.history_tools import BODY_TYPES, history_router
from scanfleet.gateway.queue_tools import queue_router
from scanfleet.gateway.results import Results
from scanfleet.gateway.results_tools import results_router
from scanfleet.gateway.schemas import (
    PoolList,
    ScannerList,
    ScanStatus,
    ScanSubmitted,
    TaskList,
    openapi_components,
    ref,
    rest_responses,
)
from scanfleet.gateway.status import MAX_WAIT_SECONDS, StatusView
from scanfleet.gateway.task_list import TaskQuery, list_tasks
from scanfleet.gateway.tools import build_mcp


def resource_url(settings: Settings) -> str:
    """This gateway's MCP URL as clients know it: the audience its OAuth tokens must carry."""
    if settings.public_url:
        return settings.public_url.rstrip("/") + "/mcp"
    host = settings.gateway_host if settings.gateway_host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{settings.gateway_port}/mcp"


def create_app(rt: Runtime) -> FastAPI:
    settings = rt.settings
    directory = ClientDirectory(Path(settings.clients_file) if settings.clients_file else None)
    http = httpx.AsyncClient()
    authenticator = Authenticator(directory, resource_url(settings), http)
    guard = Guard(rt, authenticator)
    gateway = Gateway(rt, Admission(settings, directory))
    results = Results(gateway)
    issuer = directory.oauth.issuer if directory.oauth else resource_url(settings).removesuffix("/mcp")
    auth = AuthSettings(
        issuer_url=issuer,  # type: ignore[arg-type]
        resource_server_url=resource_url(settings),  # type: ignore[arg-type]
        validate_token_resource=True,
    )
    shared: dict[str, Any] = {}
    if settings.mcp_request_state_keys:
        keys = [k.strip() for k in settings.mcp_request_state_keys.split(",") if k.strip()]
        shared["request_state_security"] = RequestStateSecurity(keys=keys)
    mcp = build_mcp(gateway, results, guard, token_verifier=authenticator, auth=auth, **shared)
    security = transport_security(settings)
    mcp_app = mcp.streamable_http_app(
        streamable_http_path="/mcp", host=settings.gateway_host, transport_security=security
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            async with mcp.session_manager.run():
                yield
        finally:
            await gateway.stop()
            results.cache.close()
            await http.aclose()

    app = FastAPI(title="scanfleet gateway", version="0.1.0", lifespan=lifespan)
    app.add_middleware(
        RestGuard, security=security, max_body=settings.max_body_bytes, refused=guard.audit_refused_request
    )

    @app.exception_handler(GatewayError)
    async def on_gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse(exc.as_dict(), status_code=exc.status, headers=exc.headers)

    async def on_unavailable(_: Request, exc: Exception) -> JSONResponse:
        """NATS not answering outside ``Guard.run`` (a dependency's read): 503, not 500."""
        refusal = unavailable(exc)
        return JSONResponse(refusal.as_dict(), status_code=refusal.status, headers=refusal.headers)

    for outage in UNAVAILABLE:
        app.add_exception_handler(outage, on_unavailable)

    @app.exception_handler(BodyTooLarge)
    async def on_body_too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(GatewayError(413, "body_too_large", str(exc)).as_dict(), status_code=413)

    app.include_router(ops_router(rt))
    app.include_router(scans_router(gateway, guard, StatusView(gateway, results)))
    app.include_router(results_router(results, guard))
    app.include_router(control_router(gateway, guard))
    app.include_router(queue_router(gateway, guard))
    app.include_router(history_router(gateway, guard))
    app.include_router(admin_router(rt, guard))
    app.mount("/", mcp_app)
    document_schemas(app)
    return app


def document_schemas(app: FastAPI) -> None:
    """The OpenAPI document with the msgspec types' schemas: request bodies and answers have one source."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            documented = openapi_components(SubmitScan, *BODY_TYPES)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(documented)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def ops_router(rt: Runtime) -> APIRouter:
    """Liveness, readiness and metrics: no authentication, nothing about any task."""
    router = APIRouter()

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @router.get("/ready")
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

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(await metrics_text(rt), media_type=CONTENT_TYPE_LATEST)

    return router


STATUS_QUERY = Query(None, description="only tasks in these states (repeat the parameter for several)")


SUBMIT_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": ref("SubmitScan")}}},
}


def scans_router(gateway: Gateway, guard: Guard, status: StatusView) -> APIRouter:
    """``POST /v1/scans``, ``GET /v1/scans`` (the caller's tasks) and the status, scanners and pools reads.

    The submission body is decoded by msgspec (``read_body``: refusals as bare JSON, never a
    value); FastAPI only documents it, from the same type.
    """
    router = APIRouter()
    authenticated = Depends(guard.rest_caller)

    @router.post("/v1/scans", status_code=202, openapi_extra=SUBMIT_BODY, responses=rest_responses(ScanSubmitted, 202))
    async def submit_scan(request: Request, caller: Caller = authenticated) -> dict[str, Any]:
        try:
            body = await read_body(request, SubmitScan)
        except GatewayError as exc:
            await guard.audit(caller, "submit_scan", "deny", code=exc.code, reason=exc.message)
            raise
        work = gateway.submit(caller, body, guard.before_queue(caller, "submit_scan"))
        return await guard.run(caller, "submit_scan", work, allow_recorded=True, targets=raw_targets(body.targets))

    @router.get("/v1/scans", responses=rest_responses(TaskList))
    async def tasks(
        status: list[TaskState] | None = STATUS_QUERY,
        since: datetime | None = None,
        until: datetime | None = None,
        client: str | None = None,
        cursor: str | None = None,
        limit: int = Query(20, ge=1, le=100),
        caller: Caller = authenticated,
    ) -> dict[str, Any]:
        query = TaskQuery(status=status, since=since, until=until, client=client, cursor=cursor, limit=limit)
        return await guard.run(caller, "list_tasks", list_tasks(gateway.rt, caller, query))

    @router.get("/v1/scans/{task_id}", responses=rest_responses(ScanStatus))
    async def scan_status(
        task_id: str,
        caller: Caller = authenticated,
        wait_seconds: float = Query(0, ge=0, le=MAX_WAIT_SECONDS, description="wait for the next state change"),
    ) -> dict[str, Any]:
        work = status.status(caller, task_id, wait_seconds)
        return await guard.run(caller, "get_scan_status", work, task_id=task_id)

    @router.get("/v1/scanners", responses=rest_responses(ScannerList))
    async def scanners(pool: str | None = None, caller: Caller = authenticated) -> dict[str, Any]:
        return await guard.run(caller, "list_scanners", gateway.scanners(caller, pool))

    @router.get("/v1/pools", responses=rest_responses(PoolList))
    async def pools(caller: Caller = authenticated) -> dict[str, Any]:
        return await guard.run(caller, "list_pools", gateway.pools(caller))

    return router
