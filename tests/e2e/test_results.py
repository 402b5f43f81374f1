"""Results an LLM can use, end to end: a 50-host scan queried over MCP and REST against the emulator's truth."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scanfleet.cli.stack import Stack
from tests.helpers import arest, emulator_truth, mcp_client, scanner_named, tool_error, tool_json, wait_terminal

pytestmark = pytest.mark.e2e

SEVERITIES = ("info", "low", "medium", "high", "critical")
FEW_KB = 6 * 1024


async def test_fifty_host_scan_results(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        submitted = tool_json(
            await mcp.call_tool("run_untrusted_scan", {"targets": "10.50.0.1-110", "name": "results e2e"})
        )
        task_id = submitted["task_id"]
        kinds = await wait_terminal(stack, task_id)
        assert kinds[-1] == "completed", kinds
        status = tool_json(await mcp.call_tool("get_scan_status", {"task_id": task_id}))
        truth = emulator_truth(
            stack, scanner_named(stack, "default", status["scanner_instance"]), status["nessus_scan_id"]
        )
        assert truth["host_count"] >= 45, "about half the emulated targets are up: aim for a 50-host scan"
        high_and_critical = truth["severity_totals"][3] + truth["severity_totals"][4]

        call = await mcp.call_tool("get_scan_results", {"task_id": task_id, "filters": {"severity": ">=3"}})
        text = call.content[0].text  # type: ignore[union-attr]
        page = tool_json(call)
        assert len(text.encode()) <= FEW_KB, f"default page is {len(text)} bytes"
        summary = page["summary"]
        assert summary["matched"] == high_and_critical > 0
        assert summary["severity_counts"] == dict(zip(SEVERITIES, truth["severity_totals"], strict=True))
        assert summary["total_findings"] == truth["item_count"]

        collected: list[dict[str, Any]] = list(page["findings"])
        cursor = page["page"]["next_cursor"]
        while cursor:
            more = tool_json(
                await mcp.call_tool(
                    "get_scan_results",
                    {"task_id": task_id, "filters": {"severity": ">=3"}, "cursor": cursor, "page_size": 50},
                )
            )
            collected += more["findings"]
            cursor = more["page"]["next_cursor"]
        assert len(collected) == high_and_critical
        assert [f["severity"] for f in collected] == sorted((f["severity"] for f in collected), reverse=True)
        per_host = {h["name"]: h["severity_counts"][3] + h["severity_counts"][4] for h in truth["hosts"]}
        for name, count in per_host.items():
            assert sum(f["host"] == name for f in collected) == count

        mismatch = tool_error(
            await mcp.call_tool("get_scan_results", {"task_id": task_id, "cursor": page["page"]["next_cursor"]})
        )
        assert mismatch["error"] == "cursor_mismatch"
        invalid = tool_error(
            await mcp.call_tool("get_scan_results", {"task_id": task_id, "filters": {"cvss_score": 7}})
        )
        assert invalid["error"] == "invalid_filter" and "unknown filter" in invalid["message"]
        assert "cvss3" in invalid["valid_filters"]

        host = truth["hosts"][7]
        detail = tool_json(await mcp.call_tool("get_host_summary", {"task_id": task_id, "host": host["name"]}))
        assert detail["severity_counts"] == dict(zip(SEVERITIES, host["severity_counts"], strict=True))
        assert detail["auth"] in ("not_attempted", "not_evaluable")
        assert detail["auth_evidence"]

        first = collected[0]
        full = tool_json(
            await mcp.call_tool(
                "get_finding", {"task_id": task_id, "host": first["host"], "plugin_id": first["plugin_id"]}
            )
        )
        assert any(f["port"] == first["port"] and f.get("description") for f in full["findings"])

    async with arest(stack) as http:
        response = await http.get(f"/v1/scans/{task_id}/results", params={"severity": ">=3", "page_size": 5})
        assert response.status_code == 200, response.text
        rest = response.json()
        assert rest["summary"]["matched"] == high_and_critical
        assert [(f["host"], f["plugin_id"]) for f in rest["findings"]] == [
            (f["host"], f["plugin_id"]) for f in collected[:5]
        ]
        bad = await http.get(f"/v1/scans/{task_id}/results", params={"severity": "extreme"})
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_filter"
        hosts = (await http.get(f"/v1/scans/{task_id}/hosts", params={"page_size": 10})).json()
        assert hosts["hosts_total"] == truth["host_count"] and len(hosts["hosts"]) == 10 and hosts["page"]["has_more"]
        assert json.dumps(hosts)
