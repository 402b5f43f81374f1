"""deploy/compose, for real: the images scripts/images built, `docker-compose up` with the
three-node NATS cluster, two of every service and the emulated fleet in containers, the
services' own health checks, scans end to end through REST and MCP with a token made by
`docker compose run --rm clients`, and `down -v` whatever happens.

Nothing here patches the deploy files: the test sets only the interpolation variables an
operator sets (images, secrets file, published ports, the emulator's fleet). Timings go to
.scanfleet/container-timings.json (and the output with -s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import docker
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.containers.compose import Deployment, deployed, monitor
from tests.containers.conftest import ROOT, Images
from tests.helpers import tool_json, until

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1200)]

SCAN_SECONDS = 3
TIMINGS = ROOT / ".scanfleet" / "container-timings.json"


@pytest.fixture(scope="module")
def deployment(
    engine_env: dict[str, str], images: Images, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    alice = ["alice", "--role", "operator", "--targets", "10.0.0.0/8"]
    tmp = tmp_path_factory.mktemp("compose")
    with deployed(engine_env, images, tmp, scan_seconds=SCAN_SECONDS, client=alice, timings_file=TIMINGS) as deploy:
        yield deploy


def test_every_container_is_up_and_healthy(engine: docker.DockerClient, deployment: Deployment) -> None:
    containers = deployment.containers(engine)
    services: dict[str, int] = {}
    for container in containers.values():
        service = container.labels["com.docker.compose.service"]
        services[service] = services.get(service, 0) + 1
        state = container.attrs["State"]
        if service == "provision":
            assert (state["Status"], state["ExitCode"]) == ("exited", 0)
        elif service == "emulator":
            assert state["Status"] == "running"
        else:
            assert state["Health"]["Status"] == "healthy", (container.name, state["Health"])
    assert services == {
        "nats-1": 1,
        "nats-2": 1,
        "nats-3": 1,
        "provision": 1,
        "emulator": 1,
        "gateway-1": 1,
        "gateway-2": 1,
        "dispatcher": 2,
        "agent": 2,
        "validator": 2,
        "janitor": 2,
    }


def test_the_cluster_holds_three_replicas(engine: docker.DockerClient, deployment: Deployment) -> None:
    """Asked inside nats-1 through its loopback-only monitoring port: three servers, and the
    streams replicated on all of them."""
    jsz = monitor(deployment.container(engine, "nats-1"), "jsz?streams=true")
    assert jsz is not None
    assert jsz["meta_cluster"]["cluster_size"] == 3
    streams = {s["name"]: s for account in jsz["account_details"] for s in account.get("stream_detail", [])}
    assert "SCAN_REQUESTS" in streams
    assert len(streams["SCAN_REQUESTS"]["cluster"]["replicas"]) == 2  # the leader plus two


async def _wait_completed(http: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any]:
        """The status once completed, and an empty (falsy) dict before."""
        status: dict[str, Any] = (await http.get(f"/v1/scans/{task_id}")).json()
        assert status["status"] not in ("failed", "cancelled"), status
        return status if status["status"] == "completed" else {}

    return await until(done, f"scan {task_id} to complete", within=240, every=0.5)


async def test_scans_complete_end_to_end_through_rest_and_mcp(deployment: Deployment) -> None:
    """Submitted on one gateway, followed on the other: any gateway serves any request."""
    headers = {"Authorization": f"Bearer {deployment.token}"}
    one, two = deployment.gateways
    async with (
        httpx.AsyncClient(base_url=one, headers=headers, timeout=30) as rest_one,
        httpx.AsyncClient(base_url=two, headers=headers, timeout=30) as rest_two,
    ):
        refused = await rest_one.get("/v1/scans", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401

        started = time.monotonic()
        submitted = await rest_one.post("/v1/scans", json={"targets": ["10.40.0.7"], "name": "compose rest"})
        assert submitted.status_code == 202, submitted.text
        status = await _wait_completed(rest_two, submitted.json()["task_id"])
        deployment.timings["rest_scan_end_to_end_s"] = round(time.monotonic() - started, 1)
        deployment.timings["emulated_scan_duration_s"] = SCAN_SECONDS
        assert status["results_summary"]["hosts_scanned"] == 1

        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=120.0)) as http,
            Client(streamable_http_client(f"{two}/mcp", http_client=http)) as mcp,
        ):
            started = time.monotonic()
            created = tool_json(
                await mcp.call_tool(
                    "run_untrusted_scan",
                    {"targets": "10.20.0.5, 10.20.1.0/30", "name": "compose mcp", "scanner_pool": "default"},
                )
            )
            assert created["status"] == "queued"
            status = await _wait_completed(rest_one, created["task_id"])
            deployment.timings["mcp_scan_end_to_end_s"] = round(time.monotonic() - started, 1)
            assert status["results_summary"]["hosts_scanned"] >= 1
            followed = tool_json(await mcp.call_tool("get_scan_status", {"task_id": created["task_id"]}))
            assert followed["status"] == "completed"
