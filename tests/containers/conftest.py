"""Session fixtures for tests that run containers on a real engine.

``engine``: a docker SDK client of the Docker-API engine ``scripts/engine start`` gives
(podman serving the Docker Engine API where no Docker daemon runs); the engine is stopped
afterwards only if this session started it. ``engine_env``: ``DOCKER_HOST`` and
``CONTAINERS_CONF`` for subprocesses (``docker-compose``). ``images``: the tags
``scripts/images`` built or found (the scanfleet image and the nats-server image), the same
images compose runs. Both scripts install what is missing, so a fresh machine needs nothing
by hand; building from nothing (debootstrap base, wheels, image) takes about two minutes,
once per machine, so mark the first test that uses ``images`` with a timeout of ten minutes.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = ROOT / "scripts" / "engine"
IMAGES_SCRIPT = ROOT / "scripts" / "images"


@dataclass(frozen=True)
class Images:
    """Tags of images held by the engine, each named by a digest of its inputs."""

    scanfleet: str
    nats: str


def key_values(text: str) -> dict[str, str]:
    """``KEY=value`` lines of a script's output (scripts/engine, scripts/images)."""
    pairs = (line.partition("=") for line in text.splitlines())
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def _engine_answers(env: dict[str, str]) -> bool:
    try:
        client = docker.DockerClient(base_url=env["DOCKER_HOST"], timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except docker.errors.DockerException:
        return False


@pytest.fixture(scope="session")
def engine_env() -> Iterator[dict[str, str]]:
    """Starts the engine (idempotent) and yields its environment; stops it at the end only if
    it was not running before, so a developer's running engine is left alone."""
    where = key_values(subprocess.run([ENGINE_SCRIPT, "env"], check=True, capture_output=True, text=True).stdout)
    was_running = _engine_answers(where)
    started = subprocess.run([ENGINE_SCRIPT, "start"], capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        pytest.fail(f"scripts/engine start failed:\n{started.stderr}", pytrace=False)
    env = key_values(started.stdout)
    yield env
    if not was_running:
        subprocess.run([ENGINE_SCRIPT, "stop"], check=False, timeout=60)


@pytest.fixture(scope="session")
def engine(engine_env: dict[str, str]) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=engine_env["DOCKER_HOST"], timeout=120)
    assert client.ping()
    yield client
    client.close()


@pytest.fixture(scope="session")
def images(engine_env: dict[str, str]) -> Images:
    """Builds (or finds) the images; SCANFLEET_IMAGES=local|registry|auto picks the mode."""
    built = subprocess.run(
        [IMAGES_SCRIPT], env={**os.environ, **engine_env}, capture_output=True, text=True, timeout=1200
    )
    if built.returncode != 0:
        pytest.fail(f"scripts/images failed:\n{built.stderr[-4000:]}", pytrace=False)
    tags = key_values(built.stdout)
    return Images(scanfleet=tags["IMAGE"], nats=tags["NATS_IMAGE"])
