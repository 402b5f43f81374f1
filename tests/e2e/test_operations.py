"""Operations on the whole stack: retry of a dead-lettered scan, expiry, stats, admin auth.

Runs its own stack (as ``scanfleet up`` does) with short retention, so a completed task
expires within seconds, and with the janitor's metrics port open.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from scanfleet.agent.nessus import NessusClient
from scanfleet.cli.stack import Stack, StackOptions
from scanfleet.common import contract
from tests.helpers import arest, cli_json, running_stack, scanner_named, until, wait_event, wait_terminal

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "SCANFLEET_COMPLETED_TTL": "3",
        "SCANFLEET_FAILED_TTL": "600",
        "SCANFLEET_HOUSEKEEPING_INTERVAL": "0.5",
        "SCANFLEET_ADMIN_TOKEN": TOKEN,
    }
    options = StackOptions(data_dir=tmp_path_factory.mktemp("ops"), scan_duration=1.0, poll_interval=0.2, extra_env=env)
    yield from running_stack(options)


async def fleet_usable(http: httpx.AsyncClient) -> None:
    async def usable() -> bool:
        stats = (await http.get("/v1/admin/stats", headers=ADMIN)).json()
        return bool(sum(s["usable"] for s in stats["scanners"]) == 3)

    await until(usable, "all three scanners to be usable", within=30.0, every=0.2)


async def emulator_fault(stack: Stack, pool: str, instance: str, **faults: Any) -> None:
    scanner = scanner_named(stack, pool, instance)
    access, secret = stack.secrets[scanner]
    async with httpx.AsyncClient(base_url=stack.emulator_url(scanner)) as http:
        response = await http.post(
            "/_emulator/faults", json=faults, headers={"X-ApiKeys": f"accessKey={access}; secretKey={secret}"}
        )
        response.raise_for_status()


async def test_retry_completes_a_dead_lettered_scan(ops: Stack) -> None:
    async with arest(ops) as http:
        await fleet_usable(http)
        await emulator_fault(ops, "dmz", "scanner-3", export_error=True)
        submitted = await http.post("/v1/scans", json={"targets": ["10.60.0.1"], "name": "dlq", "scanner_pool": "dmz"})
        task_id = submitted.json()["task_id"]
        assert (await wait_terminal(ops, task_id))[-1] == "failed"

        async def letter() -> list[dict[str, Any]]:
            return [x for x in cli_json(ops, "dlq", "list", "--task", task_id) if x["stage"] == "agent"]

        [dead] = await until(letter, "the dead letter", within=30.0, every=0.2)
        assert dead["reason"] == "export_error" and dead["trace_id"] == submitted.json()["trace_id"]
        inspected = cli_json(ops, "dlq", "inspect", str(dead["seq"]))
        assert inspected["original"]["request"]["targets"] == ["10.60.0.1"]

        await emulator_fault(ops, "dmz", "scanner-3", export_error=False)
        outcome = cli_json(ops, "dlq", "retry", str(dead["seq"]))
        assert outcome["retried"][0]["task_id"] == task_id and outcome["refused"] == []
        await wait_event(ops, task_id, "completed", within=60.0)
        status = (await http.get(f"/v1/scans/{task_id}")).json()
        assert status["status"] == "completed" and status["results_summary"]["hosts_scanned"] == 1
        assert [x for x in cli_json(ops, "dlq", "list", "--task", task_id) if x["seq"] == dead["seq"]] == []


async def test_completed_scan_expires_and_hand_made_scans_stay(ops: Stack) -> None:
    scanner = scanner_named(ops, "default", "scanner-1")
    access, secret = ops.secrets[scanner]
    async with NessusClient(ops.emulator_url(scanner), access_key=access, secret_key=secret) as nessus:
        hand_made = await nessus.create_scan(name="made-by-hand", targets=["10.70.0.9"])
        before = await nessus.scan_details(hand_made)

    async with arest(ops) as http, httpx.AsyncClient(timeout=10) as plain:
        await fleet_usable(http)
        submitted = await http.post("/v1/scans", json={"targets": ["10.70.0.1"], "name": "expire me"})
        task_id = submitted.json()["task_id"]
        assert (await wait_terminal(ops, task_id))[-1] == "completed"
        assert (await http.get(f"/v1/scans/{task_id}/results")).status_code == 200

        async def gone() -> bool:
            return (await http.get(f"/v1/scans/{task_id}")).status_code == 404

        await until(gone, "the task to expire", within=30.0, every=0.2)
        port = ops.service_ports["janitor"]
        metrics = (await plain.get(f"http://127.0.0.1:{port}/metrics")).text
        series = 'nessus_ttl_deletions_total{state="completed"}'
        counted = [line for line in metrics.splitlines() if line.startswith(series)]
        assert counted and float(counted[0].split()[-1]) >= 1

    nc = await nats.connect(ops.nats.url)
    try:
        for store, name in contract.task_objects(task_id):
            with pytest.raises(NotFoundError):
                await (await nc.jetstream().object_store(store)).get_info(name)
    finally:
        await nc.close()
    async with NessusClient(ops.emulator_url(scanner), access_key=access, secret_key=secret) as nessus:
        assert [s.id for s in await nessus.find_scans_by_name("made-by-hand")] == [hand_made]
        assert (await nessus.scan_details(hand_made)).status == before.status


async def test_stats_and_admin_auth(ops: Stack) -> None:
    async with httpx.AsyncClient(base_url=ops.gateway_url, timeout=10) as http:
        assert (await http.get("/v1/admin/stats")).status_code == 401
        assert (await http.get("/v1/admin/stats", headers={"Authorization": "Bearer wrong"})).status_code == 401
        rest = (await http.get("/v1/admin/stats", headers=ADMIN)).json()
        assert {p["pool"] for p in rest["pools"]} == {"default", "dmz"}
        assert (await http.post("/v1/admin/dlq/purge", json={}, headers=ADMIN)).status_code == 422
    stats = cli_json(ops, "stats")
    assert {(s["pool"], s["instance"]) for s in stats["scanners"]} == {
        ("default", "scanner-1"),
        ("default", "scanner-2"),
        ("dmz", "scanner-3"),
    }
    assert stats["dlq_depth"] >= 0 and set(stats["dlq_by_stage"]) <= {"dispatch", "agent", "validator", "janitor"}
