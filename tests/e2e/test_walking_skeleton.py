"""An untrusted scan from an MCP client to validated results, through all five services."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from scanfleet.cli.stack import Stack
from tests.helpers import arest, emulator_truth, mcp_client, scanner_named, tool_error, tool_json, until, wait_terminal

pytestmark = pytest.mark.e2e

SEVERITIES = ("info", "low", "medium", "high", "critical")


async def wait_fleet_usable(mcp: Client, count: int) -> dict[str, Any]:
    """Agents register a few moments after the gateway is ready; wait for their leases."""

    async def usable() -> dict[str, Any] | None:
        listing = tool_json(await mcp.call_tool("list_scanners", {}))
        return listing if sum(s["usable"] for s in listing["scanners"]) == count else None

    listing = await until(usable, f"{count} usable scanners", within=30.0, every=0.2)
    assert listing is not None
    return listing


def services_logging(stack: Stack, task_id: str, trace_id: str) -> set[str]:
    """Services whose JSON log lines name the task, each of which must carry its trace id."""
    services = set()
    for path in stack.logs.glob("*.log"):
        for line in path.read_text().splitlines():
            if task_id not in line or not line.startswith("{"):
                continue
            entry = json.loads(line)
            assert entry["task_id"] == task_id and entry["trace_id"] == trace_id, entry
            services.add(entry["service"])
    return services


async def test_tools_are_listed(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        tools = {t.name for t in (await mcp.list_tools()).tools}
        assert {"run_untrusted_scan", "get_scan_status", "get_scan_results", "list_scanners", "list_pools"} <= tools


async def test_fleet_is_visible_with_live_agents(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        listing = await wait_fleet_usable(mcp, 3)
        assert listing["total"] == 3
        assert listing["pools"] == ["default", "dmz"]
        for scanner in listing["scanners"]:
            assert scanner["agent_alive"] and scanner["scan_api"] and scanner["reachable"]
            assert "secret" not in str(scanner).lower()
        pools = tool_json(await mcp.call_tool("list_pools", {}))
        assert pools["default_pool"] == "default"
        capacities = {p["pool"]: p["total_capacity"] for p in pools["pools"]}
        assert capacities == {"default": 4, "dmz": 1}


async def test_untrusted_scan_end_to_end(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        await wait_fleet_usable(mcp, 3)
        submitted = tool_json(
            await mcp.call_tool(
                "run_untrusted_scan", {"targets": "10.20.0.5, 10.20.1.0/29", "name": "walking skeleton"}
            )
        )
        task_id = submitted["task_id"]
        assert submitted["status"] == "queued"
        assert len(submitted["trace_id"]) == 32
        assert submitted["scanner_pool"] == "default"

        kinds = await wait_terminal(stack, task_id)
        assert kinds[0] == "queued"
        assert kinds[-1] == "completed", kinds
        assert [k for k in kinds if k in ("dispatched", "running", "exporting", "validating")] == [
            "dispatched",
            "running",
            "exporting",
            "validating",
        ]

        status = tool_json(await mcp.call_tool("get_scan_status", {"task_id": task_id}))
        assert status["status"] == "completed"
        assert status["trace_id"] == submitted["trace_id"]
        assert status["authentication_status"] == "not_applicable"
        truth = emulator_truth(
            stack, scanner_named(stack, "default", status["scanner_instance"]), status["nessus_scan_id"]
        )
        summary = status["results_summary"]
        assert summary["hosts_scanned"] == truth["host_count"]
        assert summary["severity_breakdown"] == dict(zip(SEVERITIES, truth["severity_totals"], strict=True))
        assert summary["total_vulnerabilities"] == sum(truth["severity_totals"][1:])
        assert summary["export_size"] > 0

        assert services_logging(stack, task_id, submitted["trace_id"]) >= {
            "gateway",
            "dispatcher",
            "agent",
            "validator",
        }

        hosts = tool_json(await mcp.call_tool("get_host_summary", {"task_id": task_id}))
        by_host = {h["host"]: h for h in hosts["hosts"]}
        assert set(by_host) == {h["name"] for h in truth["hosts"]}
        for host in truth["hosts"]:
            assert by_host[host["name"]]["severity_counts"] == dict(
                zip(SEVERITIES, host["severity_counts"], strict=True)
            )
        results = tool_json(await mcp.call_tool("get_scan_results", {"task_id": task_id}))
        assert results["summary"]["total_findings"] == truth["item_count"]


async def test_submission_errors_are_clear(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        unknown_pool = tool_error(
            await mcp.call_tool("run_untrusted_scan", {"targets": "10.0.0.1", "name": "x", "scanner_pool": "nope"})
        )
        assert unknown_pool["error"] == "unknown_pool" and {"default", "dmz"} <= set(unknown_pool["valid_pools"])
        unknown_instance = tool_error(
            await mcp.call_tool(
                "run_untrusted_scan", {"targets": "10.0.0.1", "name": "x", "scanner_instance": "scanner-9"}
            )
        )
        assert {"scanner-1", "scanner-2"} <= set(unknown_instance["valid_instances"])
        bad_targets = tool_error(
            await mcp.call_tool("run_untrusted_scan", {"targets": "10.0.0.1; rm -rf /", "name": "x"})
        )
        assert bad_targets["error"] == "invalid_targets" and "10.0.0.1;" in bad_targets["message"]
        missing = tool_error(await mcp.call_tool("get_scan_status", {"task_id": "20990101T000000-000000000000"}))
        assert missing["error"] == "task_not_found"


async def test_idempotency_key_returns_the_first_task(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        args = {"targets": "10.30.0.1", "name": "idem", "idempotency_key": "agent-run-42"}
        first = tool_json(await mcp.call_tool("run_untrusted_scan", args))
        again = tool_json(await mcp.call_tool("run_untrusted_scan", args))
        assert again["task_id"] == first["task_id"]
        assert again["idempotent"] is True
        conflict = tool_error(await mcp.call_tool("run_untrusted_scan", {**args, "targets": "10.30.0.2"}))
        assert conflict["error"] == "idempotency_conflict" and conflict["task_id"] == first["task_id"]


async def test_rest_api_runs_a_targeted_scan(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        await wait_fleet_usable(mcp, 3)
        async with arest(stack) as http:
            response = await http.post(
                "/v1/scans", json={"targets": ["10.40.0.7"], "name": "rest", "scanner_pool": "dmz"}
            )
            assert response.status_code == 202, response.text
            task_id = response.json()["task_id"]
            assert (await wait_terminal(stack, task_id))[-1] == "completed"
            status = (await http.get(f"/v1/scans/{task_id}")).json()
            assert status["scanner_instance"] == "scanner-3"
            assert status["results_summary"]["hosts_scanned"] == 1
            bad = await http.post("/v1/scans", content=b'{"targets": 5}', headers={"content-type": "application/json"})
            assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"
            assert (await http.get("/v1/scans/nope/results")).status_code == 404
            assert (await http.get("/health")).json() == {"status": "alive"}
