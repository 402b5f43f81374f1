"""Awaiting KV state in tests: on a watch, never by polling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import msgspec
from nats.js.kv import KeyValue

T = TypeVar("T")


async def watch_until(kv: KeyValue, key: str, kind: type[T], check: Callable[[T], bool], within: float = 10.0) -> T:
    """The key's first value, current or later, that decodes as ``kind`` and satisfies ``check``."""
    watcher = await kv.watch(key)
    try:
        async with asyncio.timeout(within):
            while True:
                entry = await watcher.updates(timeout=within)  # type: ignore[no-untyped-call]
                if entry is not None and entry.value:
                    value = msgspec.json.decode(entry.value, type=kind)
                    if check(value):
                        return value
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
