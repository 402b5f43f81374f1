"""``scanfleet provision``: the contract on the server and the registry in KV, idempotently."""

from __future__ import annotations

import asyncio
import logging

from scanfleet.common.bus import UNANSWERED
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


log = logging.getLogger("scanfleet.provision")

TRANSIENT: tuple[type[Exception], ...] = (*UNANSWERED, OSError)
"""What a cluster answers while it elects leaders (just started, or a server restarting)."""


async def provision_retrying(settings: Settings, within: float = 120.0) -> tuple[list[str], SyncReport]:
    """``provision``, started over while the cluster answers with timeouts or 503s, for up to
    ``within`` seconds: a one-shot provisioning job (compose, Nomad) runs right after the
    servers come up, when JetStream may still be electing stream leaders. Safe because
    provisioning is idempotent; what an interrupted attempt changed is not reported again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    delay = 0.5
    while True:
        try:
            return await provision(settings)
        except TRANSIENT as exc:
            if loop.time() + delay > deadline:
                raise
            log.warning("provisioning: NATS not ready (%s); again in %.1f s", type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def main(*, report: bool = False) -> int:
    """Prints what provisioning changed; ``report`` (``scanfleet reload``) also the registry
    changes, which running services pick up live."""
    settings = Settings.from_env()
    setup_logging("provision", settings.log_level)
    changes, result = asyncio.run(provision_retrying(settings))
    for change in changes:
        print(f"provisioned: {change}")
    if report:
        print(f"scanners.yaml applied: {result.describe()}")
    return 0
