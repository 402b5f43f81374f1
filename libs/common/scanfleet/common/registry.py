"""The scanner registry in KV and a live view of the fleet: config, slots and agent leases."""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import msgspec
from nats.js.kv import KeyValue

from scanfleet.common import capacity
from scanfleet.common.bus import kv_get, kv_items
from scanfleet.common.config import FleetConfig
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
    updated_at: datetime


class FleetMeta(msgspec.Struct, kw_only=True):
    default_pool: str | None
    pools: list[str]


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
        """May receive new work: enabled, its agent alive, and its scanner able to launch scans."""
        hb = self.heartbeat
        return self.entry.enabled and hb is not None and hb.reachable and hb.authenticated and hb.scan_api

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


async def sync_registry(registry_kv: KeyValue, capacity_kv: KeyValue, fleet: FleetConfig) -> None:
    """Write every configured scanner to the registry and size its slot record."""
    now = utcnow()
    for pool, scanner in fleet.instances():
        key = instance_key(pool, scanner.id)
        entry = ScannerEntry(
            pool=pool,
            instance=scanner.id,
            url=public_url(scanner.url),
            max_concurrent_scans=scanner.max_concurrent_scans,
            enabled=scanner.enabled,
            labels=dict(scanner.labels),
            updated_at=now,
        )
        await registry_kv.put(key, msgspec.json.encode(entry))
        await capacity.ensure_limit(capacity_kv, key, scanner.max_concurrent_scans)
    meta = FleetMeta(default_pool=fleet.default_pool, pools=fleet.pool_names)
    await registry_kv.put(FLEET_META_KEY, msgspec.json.encode(meta))
    log.info("registry synced: %d scanners in %d pools", len(fleet.instances()), len(fleet.pools))


async def read_entries(registry_kv: KeyValue) -> list[ScannerEntry]:
    items = await kv_items(registry_kv)
    return [_entry_decoder.decode(v) for k, v in items.items() if k != FLEET_META_KEY]


async def read_fleet_meta(registry_kv: KeyValue) -> FleetMeta | None:
    entry = await kv_get(registry_kv, FLEET_META_KEY)
    if entry is None or entry.value is None:
        return None
    return msgspec.json.decode(entry.value, type=FleetMeta)


async def fleet_view(registry_kv: KeyValue, capacity_kv: KeyValue, agents_kv: KeyValue) -> list[ScannerView]:
    entries = await read_entries(registry_kv)
    slots = await capacity.read_all(capacity_kv)
    beats = {k: _hb_decoder.decode(v) for k, v in (await kv_items(agents_kv)).items()}
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
