"""Access control on the running stack, over MCP and REST alike: tokens, scope, tenancy, audit.

Clients: alice and bob are agents with the same scope, ops operates the default pool, dmzops
the dmz pool, and the stack's local admin. Every call this module makes is counted, and the
audit stream must hold each of them exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import msgspec
import pytest
from mcp.types import CallToolResult

from scanfleet.cli.stack import Stack, StackOptions
from scanfleet.common import audit
from scanfleet.common.clients import OAuthIssuer, Role, find_client, load_clients, save_clients
from scanfleet.common.scope import Scope
from tests.helpers import (
    add_client,
    arest,
    long_scan,
    mcp_client,
    running_stack,
    serving_jwks,
    stack_js,
    tool_error,
    tool_json,
    wait_event,
    wait_terminal,
)

LAB = Scope(targets=["10.0.0.0/28"], max_targets=16, submissions_per_minute=600, max_active=50)
WIDE = Scope(targets=["10.0.0.0/8"], max_targets=4096, submissions_per_minute=600, max_active=50)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(
        StackOptions(data_dir=tmp_path_factory.mktemp("access"), scan_duration=1.0, poll_interval=0.2)
    )


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> dict[str, str]:
    return {
        "alice": add_client(stack.clients_file, "alice", Role.AGENT, LAB),
        "bob": add_client(stack.clients_file, "bob", Role.AGENT, LAB),
        "ops": add_client(stack.clients_file, "ops", Role.OPERATOR, msgspec.structs.replace(WIDE, pools=["default"])),
        "dmzops": add_client(stack.clients_file, "dmzops", Role.OPERATOR, msgspec.structs.replace(WIDE, pools=["dmz"])),
        "local": stack.token,
    }


class Calls:
    """Every call made, as (client, action, decision), to hold the audit stream against."""

    def __init__(self) -> None:
        self.made: Counter[tuple[str, str, str]] = Counter()

    def note(self, client: str, action: str, ok: bool) -> None:
        self.made[(client, action, "allow" if ok else "deny")] += 1

    async def tool(self, stack: Stack, token: str, client: str, name: str, args: dict[str, Any]) -> CallToolResult:
        async with mcp_client(stack, token) as mcp:
            result = await mcp.call_tool(name, args)
        self.note(client, name, not result.is_error)
        return result

    async def http(
        self, stack: Stack, token: str, client: str, action: str, method: str, path: str, **kw: Any
    ) -> httpx.Response:
        async with arest(stack, token) as http:
            response: httpx.Response = await http.request(method, path, **kw)
        self.note(client, action, response.status_code < 400)
        return response


async def audit_records(stack: Stack, clients: set[str], since: Any) -> list[audit.AuditRecord]:
    async with stack_js(stack) as js:
        out: list[audit.AuditRecord] = []
        for client in sorted(clients):
            out += await audit.read(js, audit.AuditQuery(client=client, since=since, limit=100_000))
    return out


async def test_a_new_user_is_told_who_may_scan_what(stack: Stack, tokens: dict[str, str]) -> None:
    """The issue's walk-through: 401 without a token, a scan in scope, three refusals, a second
    client that can neither see nor cancel the first one's scan, and all of it in the audit trail."""
    start = datetime.now(UTC)
    async with httpx.AsyncClient() as anonymous:
        response = await anonymous.post(
            stack.mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"accept": "application/json, text/event-stream"},
        )
        metadata = (await anonymous.get(f"{stack.gateway_url}/.well-known/oauth-protected-resource/mcp")).json()
    assert response.status_code == 401
    assert "resource_metadata=" in response.headers["www-authenticate"]
    assert metadata["resource"] == stack.mcp_url

    async with mcp_client(stack, tokens["alice"]) as alice:
        task = tool_json(await alice.call_tool("run_untrusted_scan", {"targets": "10.0.0.1", "name": "in scope"}))
        for target, code in (
            ("10.0.1.1", "target_out_of_scope"),
            ("169.254.169.254", "target_denied"),
            ("127.0.0.1", "target_denied"),
        ):
            refusal = tool_error(await alice.call_tool("run_untrusted_scan", {"targets": target, "name": "nope"}))
            assert refusal["error"] == code
            assert refusal["target"] == target
            assert refusal["allowed"]["targets"] == ["10.0.0.0/28"]
            assert target in refusal["message"]
        assert (await wait_terminal(stack, task["task_id"]))[-1] == "completed"
        done = tool_json(await alice.call_tool("get_scan_status", {"task_id": task["task_id"]}))
        assert done["status"] == "completed" and done["submitted_by"] == "alice"

    async with mcp_client(stack, tokens["bob"]) as bob:
        for tool in ("get_scan_status", "cancel_scan", "get_host_summary"):
            unseen = tool_error(await bob.call_tool(tool, {"task_id": task["task_id"]}))
            assert unseen["error"] == "task_not_found"
        listed = tool_json(await bob.call_tool("list_tasks", {}))
        assert task["task_id"] not in {t["task_id"] for t in listed["tasks"]}

    env = {**os.environ, "SCANFLEET_NATS_URL": stack.nats.address, **stack.nats_env("admin")}
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scanfleet.cli", "audit", "--client", "alice", "--json",
        env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(cli.communicate(), timeout=60)
    assert cli.returncode == 0
    records = [r for r in json.loads(out) if datetime.fromisoformat(r["at"]) >= start]
    decisions = Counter((r["action"], r["decision"], r.get("code")) for r in records)
    assert decisions[("run_untrusted_scan", "allow", None)] == 1
    assert decisions[("run_untrusted_scan", "deny", "target_out_of_scope")] == 1
    assert decisions[("run_untrusted_scan", "deny", "target_denied")] == 2
    allowed = next(r for r in records if r["decision"] == "allow" and r["action"] == "run_untrusted_scan")
    assert allowed["task_id"] == task["task_id"] and allowed["targets"]["first"] == ["10.0.0.1"]


READS = {
    # action: (MCP tool, REST method and path)
    "get_scan_status": ("GET", "/v1/scans/{task}"),
    "get_scan_results": ("GET", "/v1/scans/{task}/results"),
    "get_host_summary": ("GET", "/v1/scans/{task}/hosts"),
}
CONTROLS = {
    "pause_scan": ("POST", "/v1/scans/{task}/pause"),
    "resume_scan": ("POST", "/v1/scans/{task}/resume"),
}
SEES = {"alice": True, "bob": False, "ops": True, "dmzops": False, "local": True}


async def test_role_action_matrix_over_mcp_and_rest(stack: Stack, tokens: dict[str, str]) -> None:
    calls = Calls()
    since = datetime.now(UTC)
    done = tool_json(
        await calls.tool(
            stack, tokens["alice"], "alice", "run_untrusted_scan", {"targets": "10.0.0.2", "name": "read me"}
        )
    )
    running = tool_json(
        await calls.tool(
            stack, tokens["alice"], "alice", "run_untrusted_scan",
            {"targets": "10.0.0.3", "name": "control me", "description": long_scan(60)},
        )
    )  # fmt: skip
    await wait_terminal(stack, done["task_id"])
    await wait_event(stack, running["task_id"], "running")

    outcomes: dict[tuple[str, str, str], bool] = {}
    for client, token in tokens.items():
        for action, (method, path) in READS.items():
            args = {"task_id": done["task_id"]}
            result = await calls.tool(stack, token, client, action, args)
            outcomes[(client, "mcp", action)] = not result.is_error
            if result.is_error:
                assert tool_error(result)["error"] == "task_not_found"
            response = await calls.http(stack, token, client, action, method, path.format(task=done["task_id"]))
            outcomes[(client, "rest", action)] = response.status_code == 200
            if response.status_code != 200:
                assert (response.status_code, response.json()["error"]) == (404, "task_not_found")
        # pause then resume over MCP, then again over REST: each allowed caller leaves it running
        for action in CONTROLS:
            result = await calls.tool(stack, token, client, action, {"task_id": running["task_id"]})
            outcomes[(client, "mcp", action)] = not result.is_error
            if result.is_error:
                assert tool_error(result)["error"] == "task_not_found"
        for action, (method, path) in CONTROLS.items():
            response = await calls.http(stack, token, client, action, method, path.format(task=running["task_id"]))
            outcomes[(client, "rest", action)] = response.status_code == 200
            if response.status_code != 200:
                assert (response.status_code, response.json()["error"]) == (404, "task_not_found")
    expected = {key: SEES[key[0]] for key in outcomes}
    assert outcomes == expected
    assert len(outcomes) == len(tokens) * 2 * (len(READS) + len(CONTROLS))

    # Cancels: refused to the other agent and the other pool's operator, then done by the owner.
    for client in ("bob", "dmzops"):
        refused = await calls.http(
            stack, tokens[client], client, "cancel_scan", "POST", f"/v1/scans/{running['task_id']}/cancel", json={}
        )
        assert refused.status_code == 404
    cancelled = await calls.http(
        stack, tokens["alice"], "alice", "cancel_scan", "POST", f"/v1/scans/{running['task_id']}/cancel", json={}
    )
    assert cancelled.status_code == 200
    await wait_terminal(stack, running["task_id"])
    ended = (
        await calls.http(stack, tokens["alice"], "alice", "get_scan_status", "GET", f"/v1/scans/{running['task_id']}")
    ).json()
    assert ended["status"] == "cancelled" and ended["cancelled_by"] == "alice"

    # Lists, queues and pools: one's own tasks; other callers' work only as counts.
    mine = (await calls.http(stack, tokens["alice"], "alice", "list_tasks", "GET", "/v1/scans")).json()
    assert {done["task_id"], running["task_id"]} <= {t["task_id"] for t in mine["tasks"]}
    assert all(t["submitted_by"] == "alice" for t in mine["tasks"])
    foreign = await calls.http(
        stack, tokens["bob"], "bob", "list_tasks", "GET", "/v1/scans", params={"client": "alice"}
    )
    assert foreign.status_code == 403
    as_admin = (
        await calls.http(stack, tokens["local"], "local", "list_tasks", "GET", "/v1/scans", params={"client": "alice"})
    ).json()
    assert {done["task_id"], running["task_id"]} <= {t["task_id"] for t in as_admin["tasks"]}
    pools = (await calls.http(stack, tokens["dmzops"], "dmzops", "list_pools", "GET", "/v1/pools")).json()
    assert [p["pool"] for p in pools["pools"]] == ["dmz"]
    for client in ("alice", "ops", "bob"):
        admin = await calls.http(stack, tokens[client], client, "admin.stats", "GET", "/v1/admin/stats")
        assert admin.status_code == 403
    allowed = await calls.http(stack, tokens["local"], "local", "admin.stats", "GET", "/v1/admin/stats")
    assert allowed.status_code == 200

    records = await audit_records(stack, set(tokens), since)
    stored = Counter((r.client, r.action, r.decision) for r in records)
    assert stored == calls.made
    assert sum(calls.made.values()) >= 60


async def test_browser_and_abuse_hardening(stack: Stack, tokens: dict[str, str]) -> None:
    """CSRF, DNS rebinding, sizes, rates and bad input: 4xx with a reason, never a 500, nothing queued."""
    async with arest(stack, tokens["local"]) as http:
        body = {"targets": "10.0.0.9", "name": "x"}
        plain = await http.post("/v1/scans", content=json.dumps(body), headers={"content-type": "text/plain"})
        assert plain.status_code == 415
        foreign = await http.post("/v1/scans", json=body, headers={"origin": "https://evil.example"})
        assert (foreign.status_code, foreign.json()["error"]) == (403, "invalid_origin")
        rebound = await http.get("/v1/scanners", headers={"host": "evil.example"})
        assert (rebound.status_code, rebound.json()["error"]) == (421, "invalid_host")
        huge = await http.post("/v1/scans", json={"targets": "10.0.0.1 " * 200_000, "name": "x"})
        assert huge.status_code == 413
        many = await http.post(
            "/v1/scans", json={"targets": [f"10.{i // 256}.{i % 256}.1" for i in range(5000)], "name": "x"}
        )
        assert (many.status_code, many.json()["error"]) == (413, "too_many_targets")
        for bad in ("0", "-1", "99999999999999999999", "abc"):
            assert (await http.get(f"/v1/admin/dlq/{bad}")).status_code == 422
        assert (await http.get("/v1/admin/dlq/987654")).status_code == 404
        garbage = await http.post("/v1/scans", content=b"{not json", headers={"content-type": "application/json"})
        assert garbage.status_code == 422
        secret = "hunter2-Pl4nted"
        leaky = {"targets": "10.0.0.9", "name": "x", "scan_type": "authenticated",
                 "credentials": {"username": "root", "password": "p", "escalation": secret}}  # fmt: skip
        refused = await http.post("/v1/scans", json=leaky)
        assert refused.status_code == 422 and secret not in refused.text
    async with stack_js(stack) as js:
        refusals = await audit.read(js, audit.AuditQuery(client="anonymous", action="http_request"))
    assert {r.code for r in refusals} >= {"unsupported_media_type", "invalid_origin", "invalid_host", "body_too_large"}
    async with mcp_client(stack, tokens["local"]) as mcp:
        result = await mcp.call_tool(
            "run_authenticated_scan",
            {"targets": "10.0.0.9", "name": "x", "username": "root", "password": "p", "escalation": secret},
        )
        assert tool_error(result)["error"] == "invalid_arguments" and secret not in str(result.content)

    burst = add_client(
        stack.clients_file, "burst", Role.AGENT, msgspec.structs.replace(LAB, submissions_per_minute=3, max_active=2)
    )
    async with arest(stack, burst) as http:
        answers = [
            await http.post("/v1/scans", json={"targets": "10.0.0.4", "name": f"b{i}", "description": long_scan(30)})
            for i in range(4)
        ]
    codes = [a.status_code for a in answers]
    assert codes[:2] == [202, 202]
    assert answers[2].status_code == 429 and answers[2].json()["error"] == "too_many_active"
    assert answers[3].status_code == 429 and answers[3].json()["error"] == "rate_limited"
    assert int(answers[3].headers["retry-after"]) >= 1


async def test_revoked_tokens_and_disabled_clients_stop_at_once(stack: Stack) -> None:
    token = add_client(stack.clients_file, "temp", Role.AGENT, LAB)
    async with arest(stack, token) as http:
        assert (await http.get("/v1/scans")).status_code == 200
        data = load_clients(stack.clients_file)
        find_client(data, "temp").disabled = True
        save_clients(stack.clients_file, data)
        assert (await http.get("/v1/scans")).status_code == 401
        find_client(data, "temp").disabled = False
        record = find_client(data, "temp").tokens[0]
        record.revoked_at = record.created_at
        save_clients(stack.clients_file, data)
        assert (await http.get("/v1/scans")).status_code == 401


async def test_oauth_jwts_from_the_identity_provider_over_mcp_and_rest(stack: Stack) -> None:
    """The gateway process fetches the test's JWKS over HTTP; a token for this gateway's /mcp works,
    one for another audience or signed by another key does not."""
    with serving_jwks() as (jwks_url, keys):
        data = load_clients(stack.clients_file)
        data.oauth = OAuthIssuer(issuer="https://idp.test/realms/sec", jwks_url=jwks_url)
        save_clients(stack.clients_file, data)
        add_client(stack.clients_file, "oidc-agent", Role.AGENT, LAB, oauth_subjects=["svc-oidc"])
        now = int(time.time())
        claims = {"iss": "https://idp.test/realms/sec", "aud": stack.mcp_url, "sub": "svc-oidc", "exp": now + 300}
        good = jwt.encode(claims, keys.rsa, "RS256", headers={"kid": "rsa-1"})
        wrong_audience = jwt.encode(
            {**claims, "aud": "http://elsewhere/mcp"}, keys.rsa, "RS256", headers={"kid": "rsa-1"}
        )
        expired = jwt.encode({**claims, "exp": now - 120}, keys.ec, "ES256", headers={"kid": "ec-1"})
        async with mcp_client(stack, good) as mcp:
            task = tool_json(await mcp.call_tool("run_untrusted_scan", {"targets": "10.0.0.6", "name": "oidc"}))
        async with arest(stack, good) as http:
            status = (await http.get(f"/v1/scans/{task['task_id']}")).json()
        assert status["submitted_by"] == "oidc-agent"
        for token in (wrong_audience, expired):
            async with arest(stack, token) as http:
                assert (await http.get("/v1/scans")).status_code == 401
        assert keys.requests >= 1
    async with stack_js(stack) as js:
        records = await audit.read(js, audit.AuditQuery(client="oidc-agent", action="run_untrusted_scan"))
    assert [(r.auth, r.decision, r.task_id) for r in records] == [("oauth", "allow", task["task_id"])]
