"""The gateway process: one runtime, one uvicorn server; uvicorn owns SIGINT/SIGTERM."""

from __future__ import annotations

import logging

import uvicorn

from scanfleet.common.config import Settings
from scanfleet.common.runtime import run, service_runtime
from scanfleet.gateway.app import create_app

log = logging.getLogger("scanfleet.gateway")


async def serve(settings: Settings) -> None:
    async with service_runtime("gateway", settings) as rt:
        app = create_app(rt)
        config = uvicorn.Config(
            app,
            host=settings.gateway_host,
            port=settings.gateway_port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        server = uvicorn.Server(config)
        log.info("gateway listening on http://%s:%d (MCP at /mcp)", settings.gateway_host, settings.gateway_port)
        await server.serve()


def main() -> int:
    return run("gateway", serve)
