"""A leader lease in KV: one holder at a time, renewed by compare-and-set.

The value carries its own expiry. A standby may take the lease over only once that
expiry has passed, and only with the revision it read, so two would-be leaders cannot
both win. Holders renew well inside the lease time; a holder whose renewal is refused has
lost the lease and must stop acting as leader at once.

A renewal NATS does not answer (a cluster electing a stream leader) neither keeps nor loses
the lease: ``still_ours`` says whether the last lease written is safely unexpired, for a
holder to keep leading through a failover shorter than the lease, and no longer.
"""

from __future__ import annotations

import contextlib
import time

import msgspec
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from scanfleet.common.bus import kv_create, kv_get


class LeaseValue(msgspec.Struct, kw_only=True):
    holder: str
    expires_at: float
    acquired_at: float


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LeaseValue)


class Lease:
    def __init__(self, kv: KeyValue, key: str, holder: str, ttl: float = 10.0) -> None:
        self.kv = kv
        self.key = key
        self.holder = holder
        self.ttl = ttl
        self.revision: int | None = None
        # The expiry of the last lease this holder wrote and saw acknowledged.
        self.expires_at = 0.0

    @property
    def held(self) -> bool:
        return self.revision is not None

    def still_ours(self, margin: float | None = None) -> bool:
        """Held, and the lease last written lasts another ``margin`` (a fifth of the TTL): no
        standby may take it before then, whatever NATS answers meanwhile."""
        margin = self.ttl / 5 if margin is None else margin
        return self.held and time.time() + margin < self.expires_at

    async def current(self) -> LeaseValue | None:
        entry = await kv_get(self.kv, self.key)
        return _decoder.decode(entry.value) if entry is not None and entry.value is not None else None

    async def try_acquire(self) -> bool:
        """Take the lease if it is free or expired (or already ours); True when we hold it."""
        now = time.time()
        value = _encoder.encode(LeaseValue(holder=self.holder, expires_at=now + self.ttl, acquired_at=now))
        entry = await kv_get(self.kv, self.key)
        try:
            if entry is None or entry.value is None:
                self.revision = await kv_create(self.kv, self.key, value)
                self.expires_at = now + self.ttl
                return True
            current = _decoder.decode(entry.value)
            if current.holder != self.holder and current.expires_at > now:
                self.revision = None
                return False
            self.revision = int(await self.kv.update(self.key, value, last=entry.revision))
            self.expires_at = now + self.ttl
            return True
        except KeyWrongLastSequenceError:
            self.revision = None
            return False

    async def renew(self) -> bool:
        """Extend our lease; False means someone else holds it now."""
        if self.revision is None:
            return False
        now = time.time()
        value = _encoder.encode(LeaseValue(holder=self.holder, expires_at=now + self.ttl, acquired_at=now))
        try:
            self.revision = int(await self.kv.update(self.key, value, last=self.revision))
            self.expires_at = now + self.ttl
            return True
        except KeyWrongLastSequenceError:
            self.revision = None
            return False

    async def release(self) -> None:
        """Give the lease up early so a standby need not wait for it to expire."""
        if self.revision is None:
            return
        value = _encoder.encode(LeaseValue(holder="", expires_at=0.0, acquired_at=0.0))
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self.kv.update(self.key, value, last=self.revision)
        self.revision = None
