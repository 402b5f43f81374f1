"""Live local copies of KV buckets, kept current by watches.

The dispatcher plans on every capacity change; reading three buckets key by key for each
plan would cost tens of milliseconds. A mirror is only an input to decisions: every write
is still a compare-and-set against the server, so a stale mirror costs a retry, never a
wrong result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from nats.errors import TimeoutError as NatsTimeout
from nats.js.kv import KeyValue

from scanfleet.common import capacity
from scanfleet.common.aio import honour_cancel
from scanfleet.common.messages import Heartbeat
from scanfleet.common.registry import (
    FLEET_META_KEY,
    ScannerEntry,
    ScannerView,
    assemble,
    decode_entry,
    decode_heartbeat,
)

log = logging.getLogger("scanfleet.mirror")

T = TypeVar("T")

WATCHDOG_INTERVAL = 10.0


class KvMirror(Generic[T]):
    def __init__(self, kv: KeyValue, decode: Callable[[bytes], T], *, skip: frozenset[str] = frozenset()) -> None:
        self.kv = kv
        self.decode = decode
        self.skip = skip
        self.values: dict[str, T] = {}
        self.revisions: dict[str, int] = {}
        self.changed = asyncio.Event()
        self.ready = asyncio.Event()
        self.restarts = 0

    async def run(self) -> None:
        """Watch forever; after an error or a lost watch consumer, start over from a full copy."""
        while True:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watch of %s broke (%s); restarting", self.kv._name, exc)
            self.restarts += 1
            await asyncio.sleep(0.5)

    async def _watch(self) -> None:
        watcher = await self.kv.watchall()
        fresh: dict[str, T] = {}
        fresh_revisions: dict[str, int] = {}
        initial = True
        try:
            while True:
                honour_cancel()
                try:
                    entry = await watcher.updates(timeout=WATCHDOG_INTERVAL)  # type: ignore[no-untyped-call]
                except (NatsTimeout, TimeoutError):
                    await watcher._sub.consumer_info()  # type: ignore[union-attr]  # raises once the watch is lost
                    continue
                if entry is None:
                    if initial:
                        self.values, self.revisions, initial = fresh, fresh_revisions, False
                        self.ready.set()
                        self.changed.set()
                    continue
                target, revisions = (fresh, fresh_revisions) if initial else (self.values, self.revisions)
                if entry.key in self.skip:
                    continue
                if entry.value is None or entry.operation in ("DEL", "PURGE"):
                    target.pop(entry.key, None)
                    revisions.pop(entry.key, None)
                else:
                    target[entry.key] = self.decode(entry.value)
                    revisions[entry.key] = int(entry.revision or 0)
                if not initial:
                    self.changed.set()
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]


class FleetMirror:
    """Registry, slots and agent leases, mirrored; ``views()`` is a consistent-enough snapshot."""

    def __init__(self, registry_kv: KeyValue, capacity_kv: KeyValue, agents_kv: KeyValue) -> None:
        self.registry: KvMirror[ScannerEntry] = KvMirror(registry_kv, decode_entry, skip=frozenset({FLEET_META_KEY}))
        self.slots: KvMirror[capacity.Slots] = KvMirror(capacity_kv, capacity.decode)
        self.agents: KvMirror[Heartbeat] = KvMirror(agents_kv, decode_heartbeat)
        self.changed = asyncio.Event()
        self._mirrors = (self.registry, self.slots, self.agents)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for mirror in self._mirrors:
                tg.create_task(mirror.run())
            tg.create_task(self._forward_changes())

    async def _forward_changes(self) -> None:
        waits = {asyncio.ensure_future(m.changed.wait()): m for m in self._mirrors}
        while True:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                mirror = waits.pop(fut)
                mirror.changed.clear()
                waits[asyncio.ensure_future(mirror.changed.wait())] = mirror
            self.changed.set()

    async def wait_ready(self) -> None:
        for mirror in self._mirrors:
            await mirror.ready.wait()

    def slots_of(self, key: str) -> tuple[capacity.Slots, int] | None:
        """The mirrored slots of one scanner with their revision, for a CAS without a read."""
        slots, revision = self.slots.values.get(key), self.slots.revisions.get(key)
        return None if slots is None or revision is None else (slots, revision)

    def views(self) -> list[ScannerView]:
        return assemble(list(self.registry.values.values()), dict(self.slots.values), dict(self.agents.values))
