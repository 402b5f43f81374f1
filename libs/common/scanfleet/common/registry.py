"""The scanner registry in KV and a live view of the fleet: config, slots and agent leases."""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import msgspec
from nats.js.kv import KeyValue

from scanfleet.common import capacity
from scanfleet.common.bus import kv_get, kv_items
from scanfleet.common.config import FleetConfig, SchedulingRules
from scanfleet.common.contract import instance_key
from scanfleet.common.messages import Heartbeat, utcnow

log = logging.getLogger("scanfleet.registry")


class ScannerEntry(msgspec.Struct, kw_only=True):
    pool: str
    instance: str
    url: str
    max_concurrent_scans: int
    enabled: bool
    labels: dict[str, str] = {}
    removing: bool = False
    updated_at: datetime


class FleetMeta(msgspec.Struct, kw_only=True):
    default_pool: str | None
    pools: list[str]
    rules: SchedulingRules = msgspec.field(default_factory=SchedulingRules)


FLEET_META_KEY = "_fleet"


class ScannerView(msgspec.Struct, kw_only=True):
    """What routing and the tools see of one scanner at one moment."""

    entry: ScannerEntry
    slots: capacity.Slots
    heartbeat: Heartbeat | None = None

    @property
    def key(self) -> str:
        return instance_key(self.entry.pool, self.entry.instance)

    @property
    def alive(self) -> bool:
        return self.heartbeat is not None

    @property
    def usable(self) -> bool:
        """May receive new work: enabled, its agent alive, its scanner able to launch scans, not
        starting up (Nessus loading its plugins) and its circuit breaker closed (half open means
        its one trial call is still deciding)."""
        hb = self.heartbeat
        return (
            self.entry.enabled
            and not self.entry.removing
            and hb is not None
            and hb.reachable
            and hb.authenticated
            and hb.scan_api
            and not hb.starting
            and hb.circuit == "closed"
        )

    @property
    def state(self) -> str:
        """One word for what the scanner is doing now, the first that applies: ``disabled``,
        ``no_agent``, ``starting`` (Nessus loading its plugins, or its container just started),
        ``circuit_open`` (open or half open), ``unreachable``, ``unavailable`` (it answers but
        cannot take scans: keys, licence) or ``ready``."""
        hb = self.heartbeat
        if not self.entry.enabled or self.entry.removing:
            return "disabled"
        if hb is None:
            return "no_agent"
        if hb.starting:
            return "starting"
        if hb.circuit != "closed":
            return "circuit_open"
        if not hb.reachable:
            return "unreachable"
        return "ready" if self.usable else "unavailable"

    @property
    def utilization(self) -> float:
        return self.slots.active / self.slots.limit if self.slots.limit else 1.0


def public_url(url: str) -> str:
    """The URL without any user:password part, fit for KV and tool responses."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


_entry_decoder = msgspec.json.Decoder(ScannerEntry)
_hb_decoder = msgspec.json.Decoder(Heartbeat)


class SyncReport(msgspec.Struct, kw_only=True):
    added: list[str] = []
    changed: list[str] = []
    removed: list[str] = []
    draining: dict[str, list[str]] = {}

    def describe(self) -> str:
        parts = [
            f"{name}: {', '.join(keys)}"
            for name, keys in (("added", self.added), ("changed", self.changed), ("removed", self.removed))
            if keys
        ]
        parts += [f"kept draining {k} until its {len(t)} running scan(s) end" for k, t in self.draining.items()]
        return "; ".join(parts) or "no changes"


async def sync_registry(registry_kv: KeyValue, capacity_kv: KeyValue, fleet: FleetConfig) -> SyncReport:
    """Bring the registry to ``fleet`` without losing slot accounting.

    A scanner dropped from the file while it still runs scans is not removed: it stays,
    disabled and marked ``removing``, so it gets no new work; a later sync removes it
    once its slots are empty. Nothing running is ever orphaned.
    """
    report = SyncReport()
    now = utcnow()
    previous = {instance_key(e.pool, e.instance): e for e in await read_entries(registry_kv)}
    configured: set[str] = set()
    for pool, scanner in fleet.instances():
        key = instance_key(pool, scanner.id)
        configured.add(key)
        entry = ScannerEntry(
            pool=pool,
            instance=scanner.id,
            url=public_url(scanner.url),
            max_concurrent_scans=scanner.max_concurrent_scans,
            enabled=scanner.enabled,
            labels=dict(scanner.labels),
            updated_at=now,
        )
        before = previous.get(key)
        if before is None:
            report.added.append(key)
        elif _config_of(before) != _config_of(entry):
            report.changed.append(key)
        if before is None or _config_of(before) != _config_of(entry):
            await registry_kv.put(key, msgspec.json.encode(entry))
        await capacity.ensure_limit(capacity_kv, key, scanner.max_concurrent_scans)
    slots = await capacity.read_all(capacity_kv)
    for key in sorted(set(previous) - configured):
        running = slots[key].tasks if key in slots else []
        if running:
            report.draining[key] = list(running)
            if not previous[key].removing:
                drained = msgspec.structs.replace(previous[key], enabled=False, removing=True, updated_at=now)
                await registry_kv.put(key, msgspec.json.encode(drained))
            continue
        await registry_kv.delete(key)
        await capacity_kv.delete(key)
        report.removed.append(key)
    meta = FleetMeta(default_pool=fleet.default_pool, pools=fleet.pool_names, rules=fleet.rules())
    await registry_kv.put(FLEET_META_KEY, msgspec.json.encode(meta))
    log.info("registry synced: %s", report.describe())
    return report


def _config_of(entry: ScannerEntry) -> tuple[object, ...]:
    return (entry.url, entry.max_concurrent_scans, entry.enabled, entry.labels, entry.removing)


async def read_entries(registry_kv: KeyValue) -> list[ScannerEntry]:
    items = await kv_items(registry_kv)
    return [_entry_decoder.decode(v) for k, v in items.items() if k != FLEET_META_KEY]


async def read_fleet_meta(registry_kv: KeyValue) -> FleetMeta | None:
    entry = await kv_get(registry_kv, FLEET_META_KEY)
    if entry is None or entry.value is None:
        return None
    return msgspec.json.decode(entry.value, type=FleetMeta)


def assemble(
    entries: list[ScannerEntry], slots: dict[str, capacity.Slots], beats: dict[str, Heartbeat]
) -> list[ScannerView]:
    """One view per registered scanner, ordered by pool then instance."""
    views = []
    for entry in sorted(entries, key=lambda e: (e.pool, e.instance)):
        key = instance_key(entry.pool, entry.instance)
        views.append(
            ScannerView(
                entry=entry,
                slots=slots.get(key, capacity.Slots(limit=entry.max_concurrent_scans)),
                heartbeat=beats.get(key),
            )
        )
    return views


async def fleet_view(registry_kv: KeyValue, capacity_kv: KeyValue, agents_kv: KeyValue) -> list[ScannerView]:
    entries = await read_entries(registry_kv)
    slots = await capacity.read_all(capacity_kv)
    beats = {k: decode_heartbeat(v) for k, v in (await kv_items(agents_kv)).items()}
    return assemble(entries, slots, beats)


def decode_entry(value: bytes) -> ScannerEntry:
    return _entry_decoder.decode(value)


def decode_heartbeat(value: bytes) -> Heartbeat:
    return _hb_decoder.decode(value)
