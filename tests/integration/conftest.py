"""Fixtures shared by the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from scanfleet.common.runtime import Runtime
from scanfleet.janitor.service import workers


@pytest.fixture
async def janitor(runtime: Runtime) -> AsyncIterator[Runtime]:
    """The janitor's workers on the runtime, with retention short enough to watch it act."""
    runtime.settings = msgspec.structs.replace(
        runtime.settings, completed_ttl=2.0, failed_ttl=3.0, housekeeping_interval=0.2
    )
    tasks = workers(runtime)
    try:
        yield runtime
    finally:
        for t in tasks:
            t.cancel()
        _, pending = await asyncio.wait(tasks, timeout=10)
        assert not pending, f"janitor workers did not stop when cancelled: {pending}"
