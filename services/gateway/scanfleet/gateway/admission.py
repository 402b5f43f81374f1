"""May this caller submit this scan? Rate, scope and the deny list, decided before NATS sees it.

The checks are pure (``scanfleet.common.scope``); this module gathers what they need at the
edge: the host names' addresses (resolved at submission, bounded in time) and the addresses
of scanfleet's own infrastructure (NATS servers, scanners, the gateway), which no client may
ever scan.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Sequence

from scanfleet.common.admit import hosts_of_urls, resolve
from scanfleet.common.clients import ClientDirectory
from scanfleet.common.config import Settings
from scanfleet.common.registry import ScannerView
from scanfleet.common.scope import DenyList, IPAddress, ScopeRefusal, Submission, check_submission
from scanfleet.common.targets import Target
from scanfleet.gateway.access import Caller, RateLimiter
from scanfleet.gateway.errors import GatewayError
from scanfleet.gateway.hardening import split_list

Resolver = Callable[[str], Awaitable[list[IPAddress]]]
RESOLVE_CONCURRENCY = 16


class Admission:
    def __init__(self, settings: Settings, directory: ClientDirectory, resolver: Resolver = resolve) -> None:
        self.settings = settings
        self.directory = directory
        self.resolver = resolver
        self.limiter = RateLimiter()
        self._infrastructure: dict[str, list[IPAddress]] = {}

    async def check(
        self, caller: Caller, targets: Sequence[Target], submission: Submission, fleet: Sequence[ScannerView]
    ) -> None:
        """Raise the refusal (429 or 403, with what this client may scan) or return."""
        scope = caller.scope
        wait = self.limiter.retry_after(caller.id, scope.submissions_per_minute)
        if wait is not None:
            raise GatewayError(
                429,
                "rate_limited",
                f"this client may submit {scope.submissions_per_minute} scans a minute; retry in {wait}s",
                headers={"Retry-After": str(wait)},
                retry_after_seconds=wait,
            )
        names = sorted({t.text for t in targets if t.kind == "hostname"})
        resolved = await self._resolve_all(names)
        try:
            check_submission(submission, caller.principal.scope, await self.deny_list(fleet), resolved)
        except ScopeRefusal as refusal:
            raise GatewayError(
                403, refusal.code, refusal.message, target=refusal.target, allowed=scope.summary()
            ) from None

    async def deny_list(self, fleet: Sequence[ScannerView] = ()) -> DenyList:
        hosts = hosts_of_urls([*self.settings.nats_urls, *(v.entry.url for v in fleet)])
        if self.settings.gateway_host not in ("0.0.0.0", "::", ""):
            hosts.add(self.settings.gateway_host)
        for host in hosts - self._infrastructure.keys():
            self._infrastructure[host] = await self._addresses(host)
        infrastructure = [a for host in hosts for a in self._infrastructure[host]]
        base = DenyList.build(split_list(self.settings.deny_ranges), infrastructure)
        return self.directory.deny(base)

    async def _addresses(self, host: str) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            return await self.resolver(host)

    async def _resolve_all(self, names: list[str]) -> dict[str, list[IPAddress]]:
        gate = asyncio.Semaphore(RESOLVE_CONCURRENCY)

        async def one(name: str) -> list[IPAddress]:
            async with gate:
                return await self.resolver(name)

        found = await asyncio.gather(*(one(n) for n in names))
        return dict(zip(names, found, strict=True))
