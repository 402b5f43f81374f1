"""``scanfleet provision``: the contract on the server and the registry in KV, idempotently."""

from __future__ import annotations

import asyncio

from scanfleet.common.config import Settings, load_fleet
from scanfleet.common.logs import setup_logging
from scanfleet.common.registry import SyncReport, sync_registry
from scanfleet.common.runtime import close, open_runtime


async def provision(settings: Settings) -> tuple[list[str], SyncReport]:
    """What provisioning changed on the server (replicas included), and the registry sync."""
    fleet = load_fleet(settings.require_scanners_file())
    rt = await open_runtime("provision", settings, topology=fleet.topology(settings.dispatch_ack_wait))
    try:
        return rt.provisioned, await sync_registry(rt.registry, rt.capacity, fleet)
    finally:
        await close(rt)


def main(*, report: bool = False) -> int:
    """Prints what provisioning changed; ``report`` (``scanfleet reload``) also the registry
    changes, which running services pick up live."""
    settings = Settings.from_env()
    setup_logging("provision", settings.log_level)
    changes, result = asyncio.run(provision(settings))
    for change in changes:
        print(f"provisioned: {change}")
    if report:
        print(f"scanners.yaml applied: {result.describe()}")
    return 0
