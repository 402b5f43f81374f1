"""Agents end to end on the official MCP client: tool metadata, the three-call scan (through MCP
Tasks and through wait_seconds, on both protocol generations), the digest's size, Tasks over
plain JSON-RPC across a gateway restart, and a human's confirmation of risky scans."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import httpx
import msgspec
import pytest
from mcp import Client
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from scanfleet.cli.stack import Stack
from scanfleet.common.clients import Role
from scanfleet.common.scope import Scope
from scanfleet.gateway import schemas
from tests.helpers import (
    TASKS_EXTENSION,
    McpTasks,
    add_client,
    emulator_truth,
    jsonrpc,
    long_scan,
    mcp_client,
    rest,
    scanner_named,
    tool_error,
    tool_json,
    wait_terminal,
)

pytestmark = pytest.mark.e2e

PROMPT = "scan 10.0.0.0/28 and list the critical and high findings with their fixes"
TARGETS = "10.0.0.0/28"
ENDED = ("completed", "failed", "cancelled", "timeout")
BUDGET_CALLS = 3
BUDGET_BYTES = 4 * 1024

READS = {
    "get_scan_status",
    "list_tasks",
    "list_scanners",
    "list_pools",
    "get_scan_results",
    "get_host_summary",
    "get_finding",
    "get_pool_status",
    "get_queue_status",
    "list_schedules",
    "compare_scans",
    "scan_history",
}
CONTROLS = {"cancel_scan", "pause_scan", "resume_scan", "delete_schedule", "pause_schedule", "resume_schedule"}
SCANS = {"run_untrusted_scan", "run_authenticated_scan", "schedule_scan", "rescan", "rollover_scan"}


def text_bytes(result: CallToolResult) -> int:
    """What a model reads of a tool result: its text (the structured content is the same JSON)."""
    return sum(len(block.text.encode()) for block in result.content if block.type == "text")


class Agent:
    """A scripted agent: every tool call it makes, and the bytes it got back."""

    def __init__(self, mcp: Client) -> None:
        self.mcp = mcp
        self.calls: list[tuple[str, int]] = []

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = await self.mcp.call_tool(name, arguments)
        self.calls.append((name, text_bytes(result)))
        answer = tool_json(result)
        assert result.structured_content == answer, "structuredContent and the text carry the same JSON"
        return answer

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.calls)

    async def critical_and_high(self, status: dict[str, Any]) -> list[dict[str, Any]]:
        """The prompt's answer: from the digest, and one grouped page if the digest had to cut."""
        digest = status["digest"]
        found = list(digest["top_findings"])
        if digest["more_critical_high_plugins"]:
            page = await self.call(
                "get_scan_results",
                {
                    "task_id": status["task_id"],
                    "group_by": "plugin",
                    "filters": {"severity": ">=3"},
                    "page_size": 50,
                },
            )
            found = page["plugins"]
        return found


def truth_of(stack: Stack, status: dict[str, Any]) -> dict[str, Any]:
    return emulator_truth(stack, scanner_named(stack, "default", status["scanner_instance"]), status["nessus_scan_id"])


def plugins_of(stack: Stack, task_id: str, filters: dict[str, Any]) -> set[int]:
    """Every plugin id among the scan's findings rows (REST, paged): what grouping must cover."""
    found: set[int] = set()
    cursor = None
    with rest(stack) as client:
        while True:
            params: dict[str, Any] = {**filters, "page_size": 200, "fields": "plugin_id"}
            if cursor:
                params["cursor"] = cursor
            page = client.get(f"/v1/scans/{task_id}/results", params=params).json()
            found |= {f["plugin_id"] for f in page["findings"]}
            cursor = page["page"]["next_cursor"]
            if not cursor:
                return found


def check_answer(stack: Stack, status: dict[str, Any], found: list[dict[str, Any]]) -> None:
    truth = truth_of(stack, status)
    counts = status["digest"]["severity_counts"]
    assert counts["critical"] == truth["severity_totals"][4] and counts["high"] == truth["severity_totals"][3]
    assert all(f["severity"] >= 3 and f.get("solution") for f in found), "every row says how to fix it"
    assert {f["plugin_id"] for f in found} == plugins_of(stack, status["task_id"], {"severity": ">=3"})


def report(label: str, agent: Agent) -> None:
    print(f"\n[{label}] {PROMPT!r}: {len(agent.calls)} tool calls, {agent.total_bytes} bytes: {agent.calls}")


async def test_every_tool_has_a_title_annotations_and_an_output_schema(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
    assert tools.keys() >= READS | CONTROLS | SCANS
    for name, tool in tools.items():
        hints = tool.annotations
        assert tool.title and hints is not None and hints.title == tool.title, name
        schema = tool.output_schema
        assert schema and schema.get("type") == "object" and schema.get("properties"), name
        assert schema.get("additionalProperties") is not True, name
        assert hints.read_only_hint is (name in READS), name
        assert hints.destructive_hint is (name in CONTROLS), name
        assert hints.open_world_hint is (name in SCANS), name
        if name in CONTROLS | READS:
            assert hints.idempotent_hint is True, name
    assert tools["get_scan_status"].output_schema == schemas.schema_of(schemas.ScanStatus)
    for name in SCANS:
        assert "confirmed" not in tools[name].input_schema["properties"], "a model cannot answer for the human"


async def test_every_refusal_has_a_code_a_message_and_next_steps(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        unknown = tool_error(await mcp.call_tool("get_scan_status", {"task_id": "nope"}))
        wrong = tool_error(await mcp.call_tool("get_scan_results", {"task_id": "nope", "page_size": "many"}))
    assert unknown["error"] == "task_not_found" and "list_tasks" in unknown["next_steps"]
    assert wrong["error"] == "invalid_arguments" and wrong["next_steps"]
    for refusal in (unknown, wrong):
        msgspec.convert(refusal, schemas.ErrorResult)
        assert "Traceback" not in refusal["message"] and "Error executing tool" not in refusal["message"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_agent_scans_in_three_calls_with_wait_seconds(stack: Stack, mode: str) -> None:
    async with mcp_client(stack, mode=mode) as mcp:
        protocol = mcp.protocol_version
        assert protocol == ("2026-07-28" if mode == "auto" else "2025-11-25")
        agent = Agent(mcp)
        status = await agent.call("run_untrusted_scan", {"targets": TARGETS, "name": f"agent via wait ({mode})"})
        while status["status"] not in ENDED:
            status = await agent.call("get_scan_status", {"task_id": status["task_id"], "wait_seconds": 50})
        assert status["status"] == "completed", status
        found = await agent.critical_and_high(status)
    report(f"wait_seconds, {protocol}", agent)
    check_answer(stack, status, found)
    assert len(agent.calls) <= BUDGET_CALLS and agent.total_bytes <= BUDGET_BYTES


async def test_a_wait_reports_progress_and_stops_at_the_bound_or_a_change(stack: Stack) -> None:
    reported: list[tuple[float, str | None]] = []

    async def seen(progress: float, total: float | None, message: str | None) -> None:
        reported.append((progress, message))

    async with mcp_client(stack) as mcp:
        task = tool_json(
            await mcp.call_tool(
                "run_untrusted_scan", {"targets": "10.0.0.1-3", "name": "slow", "description": long_scan(4)}
            )
        )
        first = tool_json(
            await mcp.call_tool("get_scan_status", {"task_id": task["task_id"], "wait_seconds": 50, "until": "change"})
        )
        assert first["changed"] is True and first["status"] != "queued"
        ended = tool_json(
            await mcp.call_tool(
                "get_scan_status", {"task_id": task["task_id"], "wait_seconds": 50}, progress_callback=seen
            )
        )
        assert ended["changed"] is True and ended["status"] == "completed"
        assert reported and all(0 <= value <= 100 for value, _ in reported), reported
        again = tool_json(await mcp.call_tool("get_scan_status", {"task_id": task["task_id"], "wait_seconds": 50}))
        assert "changed" not in again, "an ended scan answers at once"


async def test_agent_scans_through_mcp_tasks(stack: Stack) -> None:
    tasks = McpTasks()
    async with mcp_client(stack, extensions=[tasks]) as mcp:
        agent = Agent(mcp)
        status = await agent.call("run_untrusted_scan", {"targets": TARGETS, "name": "agent via tasks"})
        assert len(tasks.created) == 1 and status["task_id"] == tasks.created[0], "the MCP task is the scan"
        assert status["status"] == "completed"
        found = await agent.critical_and_high(status)
    report(f"MCP Tasks ({len(tasks.polls)} tasks/get polls, not tool calls)", agent)
    check_answer(stack, status, found)
    assert len(agent.calls) <= BUDGET_CALLS and agent.total_bytes <= BUDGET_BYTES
    last = tasks.polls[-1]
    assert last["statusMessage"].startswith("completed") and last["ttlMs"] > 0
    assert all(p["pollIntervalMs"] >= 2000 for p in tasks.polls if p["status"] == "working")


async def test_digest_of_a_fifty_host_scan_fits_in_4_kb(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        task_id = tool_json(await mcp.call_tool("run_untrusted_scan", {"targets": "10.50.0.1-110", "name": "50"}))[
            "task_id"
        ]
        assert (await wait_terminal(stack, task_id))[-1] == "completed"
        result = await mcp.call_tool("get_scan_status", {"task_id": task_id})
    status = tool_json(result)
    digest_bytes = len(msgspec.json.encode(status["digest"]))
    hosts = status["digest"]["hosts_scanned"]
    print(f"\n[digest] {hosts} hosts: digest {digest_bytes} bytes, whole status {text_bytes(result)} bytes")
    assert status["digest"]["hosts_scanned"] >= 45
    assert digest_bytes <= BUDGET_BYTES
    msgspec.convert(status, schemas.ScanStatus)
    grouped = await_grouped(stack, task_id)
    assert grouped["summary"]["matched_plugins"] == len(plugins_of(stack, task_id, {}))


def await_grouped(stack: Stack, task_id: str) -> dict[str, Any]:
    with rest(stack) as client:
        response = client.get(f"/v1/scans/{task_id}/results", params={"group_by": "plugin", "page_size": 200})
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    for row in page["plugins"]:
        assert len(row["hosts"]) <= 3 <= row["hosts_affected"] or len(row["hosts"]) == row["hosts_affected"]
    return page


async def test_openapi_documents_bodies_and_answers_from_the_same_types(stack: Stack) -> None:
    with rest(stack) as client:
        doc = client.get("/openapi.json").json()
    submit = doc["paths"]["/v1/scans"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SubmitScan"}
    assert submit["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/ScanSubmitted")
    assert doc["components"]["schemas"]["ScanStatus"] == schemas.openapi_components()["ScanStatus"]
    schedule = doc["paths"]["/v1/schedules"]["post"]
    assert schedule["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ScheduleScan")
    assert "ScheduleScan" in doc["components"]["schemas"]
    answers = {
        ("/v1/schedules", "get", "200"): "ScheduleList",
        ("/v1/schedules/{schedule_id}", "delete", "200"): "ScheduleDeleted",
        ("/v1/scans/{task_id}/rescan", "post", "202"): "ScanRequeued",
        ("/v1/compare", "get", "200"): "ScanComparison",
        ("/v1/history", "get", "200"): "ScanHistory",
    }
    for (path, method, status), name in answers.items():
        answer = doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        assert answer["$ref"] == f"#/components/schemas/{name}", path
        assert doc["components"]["schemas"][name] == schemas.openapi_components()[name]
    with rest(stack) as client:
        refused = client.post("/v1/scans", json={"targets": TARGETS, "name": "x", "password": "hunter2"})
    assert refused.status_code == 422 and "hunter2" not in refused.text and refused.json()["next_steps"]


async def test_confirmation_is_asked_of_a_human_and_cannot_be_given_by_the_model(stack: Stack) -> None:
    token = add_client(stack.clients_file, "careful", Role.AGENT, Scope(targets=["10.0.0.0/8"], confirm_over_targets=4))
    asked: list[str] = []

    def answering(action: Literal["accept", "decline"]) -> Any:
        async def answer(_: Any, params: ElicitRequestParams) -> ElicitResult:
            asked.append(params.message)
            return ElicitResult(action=action, content={"confirm": True} if action == "accept" else None)

        return answer

    big = {
        "targets": TARGETS,
        "name": "sixteen addresses",
        "confirmed": {"action": "accept", "data": {"confirm": True}},
    }
    async with mcp_client(stack, token, elicitation_callback=answering("decline")) as mcp:
        refused = tool_error(await mcp.call_tool("run_untrusted_scan", big))
        assert refused["error"] == "not_confirmed", refused
        assert tool_json(await mcp.call_tool("list_tasks", {}))["tasks"] == [], "declined: nothing queued"
        small = tool_json(await mcp.call_tool("run_untrusted_scan", {"targets": "10.0.0.1-2", "name": "two"}))
        assert small["status"] == "queued"
    assert len(asked) == 1, "only the scan over the policy's size is asked about"
    assert TARGETS in asked[0] and "untrusted" in asked[0] and "pool default" in asked[0]

    for mode in ("auto", "legacy"):
        async with mcp_client(stack, token, mode=mode, elicitation_callback=answering("accept")) as mcp:
            queued = tool_json(await mcp.call_tool("run_untrusted_scan", {**big, "name": f"confirmed {mode}"}))
            assert queued["status"] == "queued", mode
    assert len(asked) == 3

    async with mcp_client(stack, token) as mcp:
        cannot = tool_error(await mcp.call_tool("run_untrusted_scan", {**big, "name": "no human here"}))
    assert cannot["error"] == "confirmation_required" and "elicitation" in cannot["message"]
    with rest(stack, token) as client:
        over_rest = client.post("/v1/scans", json={"targets": TARGETS, "name": "via REST"})
    assert over_rest.status_code == 403 and over_rest.json()["error"] == "confirmation_required"


async def test_a_task_outlives_the_gateway_over_plain_json_rpc(stack: Stack) -> None:
    """A spec-following client on bare HTTP: create, restart the gateway, then get the result."""
    tool = "run_untrusted_scan"
    call: dict[str, Any] = {"name": tool, "arguments": {"targets": "10.0.0.1-4", "name": "durable task"}}
    async with httpx.AsyncClient(timeout=60) as http:
        plain = await jsonrpc(http, stack, "tools/call", call, name="run_untrusted_scan")
        assert plain["result"]["resultType"] == "complete", "no task without opting in"
        created = (await jsonrpc(http, stack, "tools/call", call, extensions={TASKS_EXTENSION: {}}, name=tool))[
            "result"
        ]
        assert created["resultType"] == "task" and created["status"] == "working"
        task_id = created["taskId"]
        assert len(task_id.rsplit("-", 1)[-1]) == 32, "128 random bits"
        assert created["pollIntervalMs"] >= 2000 and created["ttlMs"] > 0

        undeclared = await jsonrpc(http, stack, "tasks/get", {"taskId": task_id}, name=task_id)
        assert undeclared["error"]["code"] == -32021

        assert stack.stop_process("gateway") == 0
        stack.start_service("gateway")
        await asyncio.to_thread(stack.wait_ready, 60.0)

        assert (await wait_terminal(stack, task_id))[-1] == "completed"
        ext: dict[str, Any] = {TASKS_EXTENSION: {}}
        done = (await jsonrpc(http, stack, "tasks/get", {"taskId": task_id}, extensions=ext, name=task_id))["result"]
        assert done["status"] == "completed" and done["taskId"] == task_id
        final = done["result"]
        assert final["isError"] is False and final["structuredContent"]["digest"]["hosts_scanned"] >= 0
        assert msgspec.json.decode(final["content"][0]["text"]) == final["structuredContent"]

        other = add_client(stack.clients_file, "stranger", Role.AGENT, Scope(targets=["10.0.0.0/8"]))
        stranger = httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {other}"})
        async with stranger:
            hidden = await jsonrpc(
                stranger, stack, "tasks/get", {"taskId": task_id}, extensions=ext, name=task_id, token=other
            )
        assert hidden["error"]["code"] == -32602, "another client's task does not exist for it"
        unknown = await jsonrpc(http, stack, "tasks/get", {"taskId": "nope"}, extensions=ext, name="nope")
        assert unknown["error"]["code"] == -32602
        ack = await jsonrpc(http, stack, "tasks/cancel", {"taskId": task_id}, extensions=ext, name=task_id)
        assert ack["result"]["resultType"] == "complete", "cancelling an ended task is acknowledged"
