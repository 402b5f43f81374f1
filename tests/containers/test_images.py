"""The images scripts/images builds run: scanfleet as its unprivileged user with every
subcommand, and the stand-in nats-server image answering its health check without a shell."""

from __future__ import annotations

import time

import docker
import pytest

from tests.containers.conftest import Images

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

HEALTHZ = "http://127.0.0.1:8222/healthz?js-enabled-only=true"


def test_scanfleet_image_runs_every_role_as_its_own_user(engine: docker.DockerClient, images: Images) -> None:
    out = engine.containers.run(
        images.scanfleet, ["--help"], remove=True, stdout=True, stderr=True, network_mode="none"
    ).decode()
    for role in ("gateway", "dispatcher", "agent", "validator", "janitor", "provision", "emulator", "clients"):
        assert role in out
    whoami = engine.containers.run(
        images.scanfleet, ["-c", "import os; print(os.getuid())"], entrypoint="python", remove=True, network_mode="none"
    )
    assert whoami.decode().strip() == "10001"


def test_nats_image_answers_its_health_check_without_a_shell(engine: docker.DockerClient, images: Images) -> None:
    container = engine.containers.run(images.nats, ["--jetstream", "-m", "8222"], detach=True, network_mode="none")
    try:
        deadline = time.monotonic() + 30
        while (probe := container.exec_run(["wget", "-q", "-O", "-", HEALTHZ])).exit_code != 0:
            assert time.monotonic() < deadline, repr(probe.output)
            time.sleep(0.2)  # nothing announces readiness but the endpoint itself
        assert b'"ok"' in probe.output
        assert container.exec_run(["sh", "-c", "true"]).exit_code != 0, "the image should hold no shell"
        version = engine.containers.run(images.nats, ["--version"], remove=True, network_mode="none")
        assert isinstance(version, bytes) and version.startswith(b"nats-server: v2.")
    finally:
        container.remove(force=True)
