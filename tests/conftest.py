"""Fixtures that start real parts: a nats-server with JetStream on a free port and a temp store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from scanfleet.common import contract
from scanfleet.common.config import Settings
from scanfleet.common.embedded import NatsServer
from scanfleet.common.runtime import Runtime, open_runtime

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "nessus"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def runtime(nats_server: NatsServer) -> AsyncIterator[Runtime]:
    topology = contract.Topology({"default": ["scanner-1", "scanner-2"], "dmz": ["scanner-3"]})
    rt = await open_runtime("test", Settings(nats_url=nats_server.url), topology=topology)
    try:
        yield rt
    finally:
        await rt.nc.close()
