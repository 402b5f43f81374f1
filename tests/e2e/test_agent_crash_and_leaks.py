"""Full stack: kill -9 of the agent mid-scan launches nothing twice; a planted password leaks nowhere."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from scanfleet.cli.stack import Stack, StackOptions
from scanfleet.common import contract
from tests.helpers import arest, mcp_client, running_stack, scanner_named, tool_error_text, tool_json, wait_terminal

pytestmark = pytest.mark.e2e

PLANTED = "pl4nted-Pa55-7f3a9c"
STORED = "st0red-Pa55-b81d2e"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    options = StackOptions(
        data_dir=tmp_path_factory.mktemp("agent-stack"),
        scan_duration=4.0,
        poll_interval=0.2,
        ssh_accounts={"root": PLANTED, "svc": STORED},
        stored_credentials={"linux": {"username": "svc", "password": STORED}},
    )
    yield from running_stack(options)


def emulator_stats(stack: Stack, pool: str, instance: str) -> dict[str, Any]:
    scanner = scanner_named(stack, pool, instance)
    access, secret = stack.secrets[scanner]
    response = httpx.get(
        f"{stack.emulator_url(scanner)}/_emulator/stats",
        headers={"X-ApiKeys": f"accessKey={access}; secretKey={secret}"},
    )
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


async def test_kill_9_of_the_agent_mid_scan_adopts_the_one_nessus_scan(stack: Stack) -> None:
    async with mcp_client(stack) as mcp:
        task = tool_json(await mcp.call_tool("run_untrusted_scan", {"targets": "10.60.0.1", "name": "crash"}))
        task_id = task["task_id"]
        nc = await nats.connect(stack.nats.url)
        try:
            sub = await nc.jetstream().subscribe(contract.event_subject(task_id, "running"), ordered_consumer=True)
            await sub.next_msg(timeout=30)
        finally:
            await nc.close()
        stack.kill("agent")
        stack.start_service("agent")
        assert (await wait_terminal(stack, task_id, within=45))[-1] == "completed"
        status = tool_json(await mcp.call_tool("get_scan_status", {"task_id": task_id}))
    name = f"scanfleet-{task_id}"
    scans = [s for s in emulator_stats(stack, status["scanner_pool"], status["scanner_instance"])["scans"]]
    mine = [s for s in scans if s["name"] == name]
    assert len(mine) == 1 and mine[0]["launches"] == 1 and mine[0]["id"] == status["nessus_scan_id"]


async def test_planted_passwords_appear_nowhere(stack: Stack) -> None:
    responses: list[str] = []
    async with mcp_client(stack) as mcp:

        async def tool(name: str, args: dict[str, Any]) -> dict[str, Any]:
            result = await mcp.call_tool(name, args)
            responses.append(json.dumps([c.model_dump() for c in result.content]))
            return tool_json(result)

        ok = await tool(
            "run_authenticated_scan",
            {"targets": "10.61.0.1", "name": "auth ok", "username": "root", "password": PLANTED},
        )
        wrong = await tool(
            "run_authenticated_scan",
            {"targets": "10.61.0.2", "name": "auth wrong", "username": "nobody", "password": PLANTED},
        )
        ref = await tool(
            "run_authenticated_scan", {"targets": "10.61.0.3", "name": "auth ref", "credential_ref": "linux"}
        )
        missing = await tool(
            "run_authenticated_scan", {"targets": "10.61.0.4", "name": "bad ref", "credential_ref": "absent"}
        )
        refused = await mcp.call_tool(
            "run_authenticated_scan",
            {"targets": "10.61.0.5", "name": "x", "scan_type": "authenticated_privileged", "password": PLANTED},
        )
        responses.append(tool_error_text(refused))
        # A password typed into the wrong field (an enum, a name) must not come back in the refusal.
        for misplaced in ({"escalation": PLANTED}, {"scan_type": PLANTED}, {"username": "root", "password": 7}):
            wrong_field = await mcp.call_tool(
                "run_authenticated_scan", {"targets": "10.61.0.6", "name": "x", "password": PLANTED, **misplaced}
            )
            responses.append(tool_error_text(wrong_field))
        async with arest(stack) as http:
            body = {"targets": "10.61.0.7", "name": "x", "scan_type": "authenticated",
                    "credentials": {"username": "root", "password": PLANTED, "escalation": PLANTED}}  # fmt: skip
            for sent in (body, {**body, "scan_type": PLANTED}, {**body, "credentials": PLANTED}):
                answer = await http.post("/v1/scans", json=sent)
                assert answer.status_code == 422
                responses.append(answer.text)
        ends = {t["task_id"]: (await wait_terminal(stack, t["task_id"], within=60))[-1] for t in (ok, wrong, ref)}
        ends[missing["task_id"]] = (await wait_terminal(stack, missing["task_id"], within=60))[-1]
        statuses = {t["task_id"]: await tool("get_scan_status", {"task_id": t["task_id"]}) for t in (ok, wrong, ref)}
        await tool("list_scanners", {})
    assert ends[ok["task_id"]] == "completed" and ends[ref["task_id"]] == "completed"
    assert ends[missing["task_id"]] == "failed"
    assert statuses[ok["task_id"]]["authentication_status"] == "success"
    assert statuses[wrong["task_id"]].get("authentication_status") in ("failed", None)

    haystacks = await every_stored_message(stack) + logs(stack.logs) + responses
    assert any(h.startswith("KV_scan_tasks") and "10.61.0.1" in h for h in haystacks), "the search sees task records"
    audited = [h for h in haystacks if h.startswith(contract.AUDIT_STREAM)]
    assert any("run_authenticated_scan" in h and "10.61.0.1" in h for h in audited), "the search sees the audit trail"
    assert sum('"deny"' in h for h in audited) >= 6, "the refusals above are audited, and searched"
    for secret in (PLANTED, STORED):
        needles = {
            secret,
            base64.b64encode(secret.encode()).decode(),
            base64.urlsafe_b64encode(secret.encode()).decode(),
        }
        leaks = [h[:200] for h in haystacks for n in needles if n in h]
        assert not leaks, f"{secret!r} leaked: {leaks[:3]}"


async def every_stored_message(stack: Stack) -> list[str]:
    """Every message of every stream, KV bucket and object store, decoded leniently."""
    nc = await nats.connect(stack.nats.url)
    out: list[str] = []
    try:
        js = nc.jetstream()
        streams = await js.streams_info()
        assert {s.config.name for s in streams} >= {contract.REQUESTS_STREAM, "KV_scan_tasks", "OBJ_scan_exports"}
        for info in streams:
            name = info.config.name
            assert name is not None
            if not info.state.messages:
                continue
            for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(name, seq)
                except nats.js.errors.NotFoundError:
                    continue
                headers = json.dumps(msg.headers or {})
                out.append(f"{name} {msg.subject} {headers} " + (msg.data or b"").decode(errors="replace"))
    finally:
        await nc.close()
    assert len(out) > 20
    return out


def logs(folder: Path) -> list[str]:
    lines = [line for path in sorted(folder.glob("*.log")) for line in path.read_text(errors="replace").splitlines()]
    assert lines
    return lines
