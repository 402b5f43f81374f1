"""``scanfleet provision``: the contract on the server and the registry in KV, idempotently."""

from __future__ import annotations

import asyncio

from scanfleet.common.config import Settings, load_fleet
from scanfleet.common.logs import setup_logging
from scanfleet.common.registry import sync_registry
from scanfleet.common.runtime import open_runtime


async def provision(settings: Settings) -> None:
    fleet = load_fleet(settings.require_scanners_file())
    rt = await open_runtime("provision", settings, topology=fleet.topology())
    try:
        await sync_registry(rt.registry, rt.capacity, fleet)
    finally:
        await rt.nc.drain()


def main() -> int:
    settings = Settings.from_env()
    setup_logging("provision", settings.log_level)
    asyncio.run(provision(settings))
    return 0
