"""Container-managed scanners on a real engine: the Nessus emulator runs in a container (the
scanfleet image, started as ``scanfleet emulator`` with a start-up phase), next to the whole
stack as processes. An operator restarts it through REST with an admin token and through the
CLI, the agent serving it does the restart on the engine, list_scanners shows the container and
``starting`` while Nessus loads, and the scanner takes scans again once ready; a circuit left
open for the configured time gets one automatic restart, recorded as the system's.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import httpx
import pytest

from scanfleet.cli.stack import EmulatedScanner, Stack, StackOptions
from scanfleet.common import contract
from scanfleet.common.embedded import free_port
from tests.containers.conftest import Images
from tests.helpers import arest, cli_json, long_scan, running_stack, until, wait_event, wait_terminal

pytestmark = pytest.mark.containers

POOL, SCANNER = "default", "nessus-c"
NAME = f"{POOL}/{SCANNER}"
LOADING = 6.0  # seconds the emulated Nessus loads its plugins after each (re)start
AUTO_RESTART_MINUTES = 0.15  # 9 s of an open circuit


@dataclass(frozen=True)
class NessusContainer:
    name: str
    port: int
    access_key: str
    secret_key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def keys(self) -> dict[str, str]:
        return {"X-ApiKeys": f"accessKey={self.access_key}; secretKey={self.secret_key};"}


@pytest.fixture(scope="module")
def nessus(engine: docker.DockerClient, images: Images) -> Iterator[NessusContainer]:
    """The emulator in a container, published on a loopback port, as a Nessus container runs."""
    nessus = NessusContainer(
        name=f"scanfleet-test-nessus-{secrets.token_hex(4)}",
        port=free_port("127.0.0.1"),
        access_key=secrets.token_hex(16),
        secret_key=secrets.token_hex(16),
    )
    command = ["emulator", "--host", "0.0.0.0", "--port", "8834", "--name", SCANNER]
    command += [
        "--access-key",
        nessus.access_key,
        "--secret-key",
        nessus.secret_key,
        "--password",
        secrets.token_hex(8),
    ]
    command += ["--startup-duration", str(LOADING), "--scan-duration", "2"]
    container = engine.containers.run(
        images.scanfleet, command, name=nessus.name, detach=True, ports={"8834/tcp": ("127.0.0.1", nessus.port)}
    )
    try:
        yield nessus
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, nessus: NessusContainer, engine_env: dict[str, str]
) -> Iterator[Stack]:
    scanner = {
        "id": SCANNER,
        "url": nessus.url,
        "auth": {"access_key": "${NESSUS_C_ACCESS_KEY}", "secret_key": "${NESSUS_C_SECRET_KEY}"},
        "max_concurrent_scans": 2,
        "container": {
            "name": nessus.name,
            "engine": engine_env["DOCKER_HOST"],
            "auto_restart_after_minutes": AUTO_RESTART_MINUTES,
            "stop_timeout_seconds": 5,
        },
    }
    env = {
        "NESSUS_C_ACCESS_KEY": nessus.access_key,
        "NESSUS_C_SECRET_KEY": nessus.secret_key,
        "SCANFLEET_PROBE_INTERVAL": "1",
        "SCANFLEET_CIRCUIT_THRESHOLD": "2",
        "SCANFLEET_CIRCUIT_COOLDOWN": "600",
        "SCANFLEET_RETRY_BASE": "0.2",
        "SCANFLEET_RETRY_CAP": "1",
    }
    options = StackOptions(
        data_dir=tmp_path_factory.mktemp("containers"),
        fleet=(EmulatedScanner(POOL, "scanner-1", 1),),
        scan_duration=1.0,
        poll_interval=0.3,
        extra_env=env,
        extra_scanners={POOL: [scanner]},
    )
    yield from running_stack(options)


async def scanner_row(http: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool], within: float = 60.0) -> Any:
    """The container scanner's row of GET /v1/scanners, once ``check`` holds (nothing announces it)."""

    async def row() -> dict[str, Any] | None:
        answer = await http.get("/v1/scanners", params={"pool": POOL})
        assert answer.status_code == 200, answer.text
        mine = next(r for r in answer.json()["scanners"] if r["instance_id"] == SCANNER)
        return mine if check(mine) else None

    return await until(row, f"{NAME} in list_scanners to satisfy the check", within=within, every=0.1)


async def scan_on_it(http: httpx.AsyncClient, name: str, description: str = "") -> str:
    body = {"targets": "10.77.0.1", "name": name, "description": description, "scanner_instance": SCANNER}
    answer = await http.post("/v1/scans", json=body)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["task_id"])


def ready(row: dict[str, Any]) -> bool:
    return bool(row["state"] == "ready" and row["usable"])


@pytest.mark.timeout(900)  # the first test here may build the images from nothing (about two minutes)
async def test_an_operator_restarts_the_scanner_container_and_it_is_used_again(
    stack: Stack, nessus: NessusContainer
) -> None:
    restart = f"/v1/admin/scanners/{POOL}/{SCANNER}/restart"
    async with arest(stack, timeout=150) as http:
        row = await scanner_row(http, ready)
        assert row["container"]["name"] == nessus.name and row["container"]["state"] == "running"
        assert row["container"]["started_at"] and row["container"]["restarted_at"] is None
        first = await scan_on_it(http, "before the restart")
        assert (await wait_terminal(stack, first))[-1] == "completed"

        # A scan in hand: refused without force, cut off with it.
        long = await scan_on_it(http, "cut off by the restart", long_scan(300))
        await wait_event(stack, long, "running")
        busy = await http.post(restart, json={})
        assert busy.status_code == 409, busy.text
        assert (busy.json()["error"], busy.json()["tasks"]) == ("scanner_busy", [long])
        forced = await http.post(restart, json={"force": True, "reason": "e2e"})
        assert forced.status_code == 200, forced.text
        done = forced.json()
        assert (done["outcome"], done["tasks"]) == ("restarted", [long])
        assert done["container"]["restarted_by"] == "local" and done["container"]["state"] == "running"

        starting = await scanner_row(http, lambda r: r["state"] == "starting")
        assert not starting["usable"] and starting["container"]["restarted_by"] == "local"
        assert starting["circuit"] == "closed"
        assert "starting up" in starting["problem"]
        loaded = await scanner_row(http, lambda r: r["startup_progress"] is not None, within=30)
        assert 0 <= loaded["startup_progress"] < 100
        await scanner_row(http, ready)
        assert (await wait_terminal(stack, long))[-1] == "failed"  # its Nessus scan went with the restart
        again = await scan_on_it(http, "after the restart")
        assert (await wait_terminal(stack, again))[-1] == "completed"

    by_cli = cli_json(stack, "scanners", "restart", NAME, "--reason", "e2e from the CLI", timeout=150)
    assert by_cli["outcome"] == "restarted"
    assert by_cli["container"]["restarted_by"].startswith("cli-")
    async with arest(stack, timeout=150) as http:
        await scanner_row(http, lambda r: r["state"] == "starting")
        await scanner_row(http, ready)
        listed = {(s["pool"], s["instance"]): s for s in cli_json(stack, "scanners", "list")["scanners"]}
        assert listed[(POOL, SCANNER)]["container"]["restarted_by"] == by_cli["container"]["restarted_by"]
        last = await scan_on_it(http, "after the CLI restart")
        assert (await wait_terminal(stack, last))[-1] == "completed"

        trail = await http.get("/v1/admin/audit", params={"action": contract.SCANNER_RESTART_ACTION})
        records = [(r["client"], r["decision"], r.get("code"), r["scanner"]) for r in trail.json()["records"]]
        assert records == [
            ("local", "deny", "scanner_busy", SCANNER),
            ("local", "allow", None, SCANNER),
            (by_cli["container"]["restarted_by"], "allow", None, SCANNER),
        ]


async def test_a_circuit_left_open_gets_one_automatic_restart_recorded_as_the_system(
    stack: Stack, nessus: NessusContainer
) -> None:
    async with arest(stack, timeout=30) as http:
        await scanner_row(http, ready)
        # Nessus fails every call (its own control routes stay open): the circuit opens and stays.
        async with httpx.AsyncClient(base_url=nessus.url, headers=nessus.keys) as emulator:
            faults = {"endpoint_faults": [{"path": "*", "status": 500}]}
            assert (await emulator.post("/_emulator/faults", json=faults)).status_code == 200
        opened = await scanner_row(http, lambda r: r["state"] == "circuit_open", within=30)
        assert opened["container"]["restarted_by"] != contract.SYSTEM_ACTOR

        # After the configured time open, the agent restarts the container (which clears the
        # faults: a new Nessus process), the scanner starts up and is ready again.
        restarted = await scanner_row(
            http, lambda r: (r["container"] or {}).get("restarted_by") == contract.SYSTEM_ACTOR, within=60
        )
        assert restarted["state"] in ("starting", "ready")
        await scanner_row(http, ready)
        last = await scan_on_it(http, "after the automatic restart")
        assert (await wait_terminal(stack, last))[-1] == "completed"

        trail = await http.get(
            "/v1/admin/audit", params={"action": contract.SCANNER_RESTART_ACTION, "client": contract.SYSTEM_ACTOR}
        )
        [record] = trail.json()["records"]
        assert (record["decision"], record["interface"], record["pool"], record["scanner"]) == (
            "allow",
            "agent",
            POOL,
            SCANNER,
        )
        assert "circuit open" in record["reason"] and "restarted" in record["reason"]
