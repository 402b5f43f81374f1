"""Scans scanfleet starts on a client's behalf: a schedule firing, an automatic rollover.

They pass the checks the gateway applies to a submission, with the owning client's scope as it
is *now* (the clients file is read again): a client disabled or re-scoped since is refused, and
the refusal is audited like the gateway's. The scope and the deny list (built in, configured,
scanfleet's own infrastructure) apply in full, and so does the client's limit of active tasks.
The per-minute rate limit does not: it guards a gateway replica against bursts of interactive
calls, while a schedule fires at most once per occurrence and a rollover once per task.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from nats.js.errors import KeyWrongLastSequenceError

from scanfleet.common import audit as trail
from scanfleet.common import client_tasks
from scanfleet.common.clients import ClientDirectory, Principal, Role
from scanfleet.common.config import Settings
from scanfleet.common.contract import EventKind
from scanfleet.common.messages import Priority, ScanType
from scanfleet.common.registry import ScannerView, fleet_view, read_fleet_meta
from scanfleet.common.runtime import Runtime
from scanfleet.common.scope import DenyList, IPAddress, ScopeRefusal, Submission, check_submission
from scanfleet.common.targets import InvalidTarget, Target, parse_targets
from scanfleet.common.task_ops import enqueue
from scanfleet.common.tasks import TaskRecord, queued_record

log = logging.getLogger("scanfleet.admit")
RESOLVE_TIMEOUT = 2.0


async def resolve(name: str) -> list[IPAddress]:
    """The name's addresses, or none when it does not resolve in time (it is then judged by pattern)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
    except (OSError, TimeoutError, UnicodeError):
        return []
    return sorted({ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos}, key=str)


def hosts_of_urls(urls: Iterable[str]) -> set[str]:
    hosts = set()
    for url in urls:
        for part in url.split(","):
            host = urlsplit(part.strip() if "://" in part else f"//{part.strip()}").hostname
            if host:
                hosts.add(host)
    return hosts


def split_list(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


async def deny_list(settings: Settings, directory: ClientDirectory, fleet: Sequence[ScannerView]) -> DenyList:
    """Everything no client may scan: built-in and configured ranges, and scanfleet's own hosts."""
    hosts = hosts_of_urls([*settings.nats_urls, *(v.entry.url for v in fleet)])
    if settings.gateway_host not in ("0.0.0.0", "::", ""):
        hosts.add(settings.gateway_host)
    infrastructure: list[IPAddress] = []
    for host in sorted(hosts):
        try:
            infrastructure.append(ipaddress.ip_address(host))
        except ValueError:
            infrastructure += await resolve(host)
    return directory.deny(DenyList.build(split_list(settings.deny_ranges), infrastructure))


class Refused(Exception):
    """The owner may not run this scan now; ``code`` is the gateway's refusal code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class OnBehalf:
    """A scan to start for ``owner``: what, where, and where it came from."""

    owner: str
    name: str
    targets: list[str]
    scan_type: ScanType = "untrusted"
    pool: str | None = None
    scanner_instance: str | None = None
    credential_ref: str | None = None
    description: str = ""
    # Capped at the owner's current max_priority when the scan is fired (not refused).
    priority: Priority = "normal"
    schedule_id: str | None = None
    rollover_of: str | None = None
    rescan_of: str | None = None
    auto_rollover: bool = False


async def _audit(
    rt: Runtime, principal: Principal | None, spec: OnBehalf, interface: str, action: str, **fields: object
) -> None:
    record = trail.AuditRecord(
        client=spec.owner,
        role=str(principal.role) if principal else None,
        auth=interface,
        interface=interface,
        action=action,
        scan_type=spec.scan_type,
        targets=trail.summarize_targets(spec.targets, 0),
        **fields,  # type: ignore[arg-type]
    )
    await trail.append(rt.js, record)


def _pool(principal: Principal, spec: OnBehalf, fleet: Sequence[ScannerView], default: str | None) -> str:
    registered = sorted({v.entry.pool for v in fleet})
    if not registered:
        raise Refused("no_scanners", "no scanners are registered")
    pools = [p for p in registered if principal.role is Role.ADMIN or principal.scope.scope.allows_pool(p)]
    if not pools:
        raise Refused("pool_not_allowed", "this client may use none of the scanner pools")
    pool = spec.pool or (default if default in pools else pools[0])
    if pool not in pools:
        raise Refused("unknown_pool", f"no scanner pool named {pool!r} that this client may use")
    return pool


async def check(rt: Runtime, directory: ClientDirectory, spec: OnBehalf) -> tuple[Principal, list[Target], str]:
    """The owner's current principal, the parsed targets and the pool, or ``Refused``."""
    principal = directory.get(spec.owner)
    if principal is None:
        raise Refused("client_disabled", f"client {spec.owner!r} is disabled or no longer exists")
    try:
        parsed = parse_targets(spec.targets)
    except InvalidTarget as exc:
        raise Refused("invalid_targets", str(exc)) from None
    fleet = await fleet_view(rt.registry, rt.capacity, rt.agents)
    meta = await read_fleet_meta(rt.registry)
    pool = _pool(principal, spec, fleet, meta.default_pool if meta else None)
    names = sorted({t.text for t in parsed if t.kind == "hostname"})
    resolved = dict(zip(names, await asyncio.gather(*(resolve(n) for n in names)), strict=True))
    wanted = Submission(parsed, spec.scan_type, pool, spec.credential_ref)
    try:
        check_submission(wanted, principal.scope, await deny_list(rt.settings, directory, fleet), resolved)
    except ScopeRefusal as refusal:
        raise Refused(refusal.code, refusal.message) from None
    return principal, parsed, pool


async def submit(
    rt: Runtime, directory: ClientDirectory, spec: OnBehalf, *, task_id: str, interface: str, action: str
) -> TaskRecord:
    """Admit and queue the scan as ``task_id``; audited allow before anything is queued, or deny.

    ``task_id`` is chosen by the caller before it claims the work, so a second attempt after a
    crash (the same claim, taken over) finds the task already created and only queues it again,
    which the request's message id makes a no-op.
    """
    principal = directory.get(spec.owner)
    try:
        principal, parsed, pool = await check(rt, directory, spec)
        await _claim_active(rt, principal, task_id)
    except Refused as refusal:
        await _audit(rt, principal, spec, interface, action, decision="deny", code=refusal.code, reason=refusal.message)
        raise
    record = queued_record(
        task_id=task_id,
        owner=spec.owner,
        weight=principal.scope.scope.weight,
        pool=pool,
        targets=[t.text for t in parsed],
        name=spec.name,
        description=spec.description,
        scan_type=spec.scan_type,
        requested_instance=spec.scanner_instance,
        credential_ref=spec.credential_ref,
        priority=principal.scope.scope.capped_priority(spec.priority),
        schedule_id=spec.schedule_id,
        rescan_of=spec.rescan_of,
        rollover_of=spec.rollover_of,
        auto_rollover=spec.auto_rollover,
    )
    try:
        await _audit(rt, principal, spec, interface, action, decision="allow", task_id=task_id, pool=pool)
        await rt.tasks.create(record)
    except KeyWrongLastSequenceError:
        existing = await rt.tasks.get(task_id)
        if existing is None:
            raise
        record = existing
    except BaseException:
        await client_tasks.release_active(rt.client_tasks, spec.owner, task_id)
        raise
    await client_tasks.record_submission(rt.client_tasks, spec.owner, task_id)
    await rt.publish_event(record, EventKind.QUEUED, detail=f"{interface}: {action}")
    await enqueue(rt, record, credential_ref=spec.credential_ref)
    log.info("%s queued task %s for %s", interface, task_id, spec.owner)
    return record


async def _claim_active(rt: Runtime, principal: Principal, task_id: str) -> None:
    limit = principal.scope.scope.max_active
    still_active = client_tasks.unended_in(rt.tasks)
    if await client_tasks.claim_active(rt.client_tasks, principal.id, task_id, limit, still_active) is None:
        raise Refused("too_many_active", f"this client already has {limit} scans queued or running")
