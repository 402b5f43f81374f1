"""Several of every service (issue 13): two gateways, agents, validators and janitors on one
stack. The agents share the scanners and the validators the exports, each part of each scan
done exactly once (by the emulated scanners' records and the validators' own counters); any
gateway serves what another created: REST, MCP tools, MCP Tasks, and the human confirmation
one gateway asked for and the other receives.

Two janitors at once: tests/integration/test_two_janitors.py and test_history's schedule.
A killed agent, gateway and cluster node: test_cluster_chaos.py.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scanfleet.cli.stack import Stack, StackOptions
from scanfleet.common import contract
from scanfleet.common.clients import Role
from scanfleet.common.scope import Scope
from scanfleet.common.tasks import TaskStore
from tests.helpers import (
    TASKS_EXTENSION,
    add_client,
    arest,
    emulator_get,
    jsonrpc,
    mcp_client,
    running_stack,
    stack_js,
    tool_json,
    wait_terminal,
    watch_task,
)

pytestmark = pytest.mark.e2e

GATEWAYS = ("gateway", "gateway-2")
SCANS = 24


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    options = StackOptions(
        data_dir=tmp_path_factory.mktemp("several"),
        scan_duration=1.0,
        poll_interval=0.2,
        replicas={"gateway": 2, "agent": 2, "validator": 2, "janitor": 2},
    )
    yield from running_stack(options)


def validations(stack: Stack, validator: str) -> float:
    """The validator process's own count of exports it validated (``nessus_validation_total``)."""
    text = httpx.get(f"{stack.service_url(validator)}/metrics", timeout=5).text
    counted = re.findall(r'^nessus_validation_total\{[^}]*result="success"[^}]*\} (\S+)$', text, re.MULTILINE)
    return sum(float(n) for n in counted)


async def test_agents_and_validators_share_the_work_and_do_each_part_once(stack: Stack) -> None:
    before = {v: validations(stack, v) for v in ("validator", "validator-2")}
    task_ids = []
    for i in range(SCANS):
        async with arest(stack, gateway=GATEWAYS[i % 2]) as http:
            answer = await http.post("/v1/scans", json={"targets": f"10.80.0.{i + 1}", "name": f"shared-{i}"})
            assert answer.status_code == 202, answer.text
            task_ids.append(answer.json()["task_id"])
    lifecycles = await asyncio.gather(*(wait_terminal(stack, t, within=90) for t in task_ids))
    for kinds in lifecycles:
        assert kinds[-1] == "completed", kinds
        assert (kinds.count("dispatched"), kinds.count("validating"), kinds.count("completed")) == (1, 1, 1), kinds

    done = {v: validations(stack, v) - before[v] for v in before}
    assert sum(done.values()) == SCANS, f"each export validated exactly once: {done}"
    assert all(n > 0 for n in done.values()), f"both validators took exports: {done}"

    async with mcp_client(stack, gateway="gateway-2") as mcp:
        statuses = [tool_json(await mcp.call_tool("get_scan_status", {"task_id": t})) for t in task_ids]
    assert all(s["status"] == "completed" for s in statuses)
    launches: Counter[str] = Counter()
    for scanner in stack.options.fleet:
        for scan in emulator_get(stack, scanner, "/_emulator/stats")["scans"]:
            launches[scan["name"]] += scan["launches"]
    assert all(launches[f"scanfleet-{t}"] == 1 for t in task_ids), "each scan launched once, by one agent"
    async with stack_js(stack) as js:
        tasks = TaskStore(await js.key_value(contract.TASKS_BUCKET))
        claimed = Counter([(await tasks.read(t))[0].claimed_by for t in task_ids])
    print(f"\nseveral: validated by {done}; run by {dict(claimed)}")
    assert set(claimed) == {"agent", "agent-2"}, f"both agents ran scans: {claimed}"


async def test_an_mcp_task_made_on_one_gateway_is_polled_cancelled_and_read_on_the_other(stack: Stack) -> None:
    ext: dict[str, Any] = {TASKS_EXTENSION: {}}
    tool = "run_untrusted_scan"

    async def rpc(method: str, params: dict[str, Any], gateway: str, name: str) -> dict[str, Any]:
        answer = await jsonrpc(http, stack, method, params, extensions=ext, name=name, gateway=gateway)
        assert "error" not in answer, answer
        result: dict[str, Any] = answer["result"]
        return result

    async with httpx.AsyncClient(timeout=60) as http:
        made = await rpc(
            "tools/call", {"name": tool, "arguments": {"targets": "10.81.0.1-3", "name": "made"}}, GATEWAYS[0], tool
        )
        task_id = made["taskId"]
        polled = await rpc("tasks/get", {"taskId": task_id}, GATEWAYS[1], task_id)
        assert polled["taskId"] == task_id and polled["status"] in ("working", "completed")
        assert (await wait_terminal(stack, task_id))[-1] == "completed"
        done = await rpc("tasks/get", {"taskId": task_id}, GATEWAYS[1], task_id)
        assert done["status"] == "completed" and done["result"]["structuredContent"]["task_id"] == task_id

        slow = {"targets": "10.81.0.9", "name": "cancelled elsewhere", "description": "emulator-duration=60"}
        other = (await rpc("tools/call", {"name": tool, "arguments": slow}, GATEWAYS[1], tool))["taskId"]
        await rpc("tasks/cancel", {"taskId": other}, GATEWAYS[0], other)
        await watch_task(stack, other, lambda r: r.state.terminal, within=60)
        assert (await rpc("tasks/get", {"taskId": other}, GATEWAYS[1], other))["status"] == "cancelled"


async def test_a_confirmation_asked_by_one_gateway_is_answered_through_the_other(stack: Stack) -> None:
    """MCP's requestState is sealed with the key every gateway shares: the human's answer may
    reach another replica behind the load balancer than the one that asked."""
    token = add_client(stack.clients_file, "careful", Role.AGENT, Scope(targets=["10.0.0.0/8"], confirm_over_targets=4))
    arguments = {"targets": "10.82.0.0/28", "name": "sixteen addresses"}
    # A client with a human at hand: it declares elicitation.
    human: dict[str, Any] = {"token": token, "name": "run_untrusted_scan", "capabilities": {"elicitation": {}}}
    async with httpx.AsyncClient(timeout=60) as http:
        call: dict[str, Any] = {"name": "run_untrusted_scan", "arguments": arguments}
        asked = await jsonrpc(http, stack, "tools/call", call, **human, gateway=GATEWAYS[0])
        assert "result" in asked, asked
        result = asked["result"]
        assert result["resultType"] == "input_required", result
        [(key, request)] = result["inputRequests"].items()
        assert request["method"] == "elicitation/create"
        answer = {"action": "accept", "content": {"confirm": True}}
        retry: dict[str, Any] = {
            "name": "run_untrusted_scan",
            "arguments": arguments,
            "inputResponses": {key: answer},
            "requestState": result["requestState"],
        }
        confirmed = await jsonrpc(http, stack, "tools/call", retry, **human, gateway=GATEWAYS[1])
    assert "result" in confirmed, f"the other gateway could not read the sealed requestState: {confirmed}"
    queued = confirmed["result"]["structuredContent"]
    assert queued["status"] == "queued", confirmed
    assert (await wait_terminal(stack, queued["task_id"]))[-1] == "completed"
