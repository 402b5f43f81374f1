"""The gateway process: one runtime, one uvicorn server; uvicorn owns SIGINT/SIGTERM."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from scanfleet.common.clients import ClientDirectory
from scanfleet.common.config import ConfigError, Settings
from scanfleet.common.runtime import run, service_runtime
from scanfleet.gateway.app import create_app
from scanfleet.gateway.hardening import is_loopback

log = logging.getLogger("scanfleet.gateway")


def refuse_unsafe_start(settings: Settings) -> None:
    """A gateway reachable from other machines must never start open: no client, no start."""
    directory = ClientDirectory(Path(settings.clients_file) if settings.clients_file else None)
    configured = directory.configured
    if directory.error:
        raise ConfigError(f"clients file: {directory.error}")
    if not is_loopback(settings.gateway_host) and not configured:
        raise ConfigError(
            f"refusing to listen on {settings.gateway_host}: no client is configured. Add one with "
            "'scanfleet clients add <id> --targets <cidr> --token' and set SCANFLEET_CLIENTS_FILE"
        )
    if not configured:
        log.warning("no client is configured: every request will be refused with 401")


async def serve(settings: Settings) -> None:
    refuse_unsafe_start(settings)
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
