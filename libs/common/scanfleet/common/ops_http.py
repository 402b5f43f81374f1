"""The operations endpoints every service serves on ``SCANFLEET_SERVICE_PORT``.

- ``/health``: the process is alive (its event loop answers);
- ``/ready``: NATS connected, the contract's streams present, and the service's own
  dependencies (``checks``), each reported by name; 503 when any fails;
- ``/metrics``: Prometheus text. ``refresh`` hooks run first, so gauges that mirror the
  fleet or a stream are computed at scrape time and never stale.

It runs inside the service's event loop (uvicorn without its signal handling: the service
owns SIGTERM), so handlers read the service's live state without locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scanfleet.common import contract
from scanfleet.common.metrics import NATS_CONNECTED
from scanfleet.common.runtime import Runtime

log = logging.getLogger("scanfleet.ops")

Check = Callable[[], Awaitable[bool]]
Refresh = Callable[[], Awaitable[None]]
CHECK_TIMEOUT = 2.0


async def streams_present(rt: Runtime) -> bool:
    for stream in contract.STREAMS:
        await rt.js.stream_info(stream.name)  # type: ignore[arg-type]
    return True


async def run_checks(rt: Runtime, checks: Mapping[str, Check]) -> dict[str, bool]:
    """Every check by name; one that raises or hangs counts as failed."""
    results: dict[str, bool] = {"nats": rt.connected}
    named: dict[str, Check] = {"streams": lambda: streams_present(rt), **checks}
    for name, check in named.items():
        try:
            results[name] = bool(await asyncio.wait_for(check(), CHECK_TIMEOUT))
        except Exception:
            results[name] = False
    return results


async def metrics_text(rt: Runtime, refresh: Sequence[Refresh] = ()) -> bytes:
    NATS_CONNECTED.labels(service=rt.service).set(1 if rt.connected else 0)
    for hook in refresh:
        try:
            await asyncio.wait_for(hook(), CHECK_TIMEOUT)
        except Exception:
            log.warning("metrics refresh %s failed; serving the previous values", hook, exc_info=True)
    return generate_latest()


def ops_app(rt: Runtime, *, checks: Mapping[str, Check] | None = None, refresh: Sequence[Refresh] = ()) -> Starlette:
    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "alive", "service": rt.service})

    async def ready(_: Request) -> JSONResponse:
        results = await run_checks(rt, checks or {})
        ok = all(results.values())
        body = {"status": "ready" if ok else "not_ready", "service": rt.service, "checks": results}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics(_: Request) -> Response:
        return Response(await metrics_text(rt, refresh), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[Route("/health", health), Route("/ready", ready), Route("/metrics", metrics)],
    )


class _Server(uvicorn.Server):
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


@contextlib.asynccontextmanager
async def serving(
    rt: Runtime, *, checks: Mapping[str, Check] | None = None, refresh: Sequence[Refresh] = ()
) -> AsyncIterator[int | None]:
    """Serve the ops endpoints while the block runs, if ``SCANFLEET_SERVICE_PORT`` is set.

    The socket is bound here, so a port in use fails the service at start, loudly.
    Yields the bound port (useful with port 0).
    """
    port = rt.settings.service_port
    if port is None:
        yield None
        return
    sock = socket.socket(socket.AF_INET6 if ":" in rt.settings.service_host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((rt.settings.service_host, port))
    sock.listen(128)
    sock.setblocking(False)
    config = uvicorn.Config(
        ops_app(rt, checks=checks, refresh=refresh), log_config=None, access_log=False, lifespan="off"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{rt.service}-ops-http")
    log.info("%s serving /health, /ready, /metrics on %s:%d", rt.service, rt.settings.service_host, port)
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        sock.close()
