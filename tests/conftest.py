"""Fixtures that start real parts (a nats-server with JetStream on a free port, a temp store) and serve the corpus."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from scanfleet.common import contract
from scanfleet.common.config import Settings
from scanfleet.common.embedded import NatsServer
from scanfleet.common.runtime import Runtime, open_runtime
from tests.helpers import MALFORMED

# Property tests check properties, not speed (benchmarks do): hypothesis's per-example deadline
# only made them fail on a loaded machine.
settings.register_profile("scanfleet", deadline=None)
settings.load_profile("scanfleet")

CORPUS_ENV = "SCANFLEET_TEST_CORPUS"
"""Names another folder holding the .nessus corpus; by default it sits beside the project folder."""


def corpus_path() -> Path:
    default = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "nessus"
    return Path(os.environ.get(CORPUS_ENV) or default)


def corpus_names(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("*.nessus")) if path.is_dir() else []


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The folder of real Nessus exports; a clear failure, never a skip, when it is absent."""
    path = corpus_path()
    if not corpus_names(path):
        pytest.fail(
            f"the .nessus corpus is missing: no .nessus files in {path}. The tests that read real exports need it "
            f"at ../shared/corpus/nessus beside the project folder (see SOURCES.md there); put it there, "
            f"or set {CORPUS_ENV} to a folder holding it.",
            pytrace=False,
        )
    return path


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``corpus_name``: each well-formed corpus file; one failing item, not a collection error, if none is there."""
    if "corpus_name" in metafunc.fixturenames:
        names = [n for n in corpus_names(corpus_path()) if n != MALFORMED] or ["corpus-missing"]
        metafunc.parametrize("corpus_name", names, indirect=True)


@pytest.fixture
def corpus_name(request: pytest.FixtureRequest, corpus: Path) -> str:
    name: str = request.param
    return name


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
