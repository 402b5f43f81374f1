"""What access control adds to a submission, and what each of its steps costs.

    .venv/bin/python -m benchmarks.access [--submissions 300]
    .venv/bin/python -m benchmarks.access --url http://127.0.0.1:8080 [--token T]   # any running gateway

Prints one JSON object. Without ``--url`` it starts the embedded stack (as ``scanfleet up``
does) and submits scans over REST one after another (``POST /v1/scans``, durable, 202),
first with an API token, then with an OAuth JWT verified against a JWKS served on loopback;
it also times each step in-process on the same machine: token lookup, JWT verification,
the scope check, one audit append and one active-task claim on the stack's nats-server.

With ``--url`` it only times submissions against that gateway, with ``--token`` if given: run
it against a gateway of an earlier version (which ignores the header) to compare like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import nats

from scanfleet.cli.stack import Stack, StackOptions
from scanfleet.common import audit, client_tasks
from scanfleet.common.clients import ClientDirectory, OAuthIssuer, Role, load_clients, save_clients
from scanfleet.common.scope import CompiledScope, DenyList, Scope, Submission, check_submission
from scanfleet.common.targets import parse_targets
from scanfleet.gateway.auth import Authenticator
from tests.helpers import add_client, serving_jwks

ISSUER = "https://idp.bench/realms/sec"
WIDE = Scope(targets=["10.0.0.0/8"], max_targets=65_536, max_active=100_000, submissions_per_minute=1_000_000)


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
        "mean_ms": round(1000 * statistics.fmean(ordered), 2),
    }


async def submit_latency(url: str, token: str | None, count: int, tag: str) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    samples = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        for i in range(count + 10):
            body = {"targets": f"10.{200 + i // 65536 % 50}.{i // 256 % 256}.{i % 256}", "name": f"{tag} {i}"}
            started = time.perf_counter()
            response = await http.post("/v1/scans", json=body)
            elapsed = time.perf_counter() - started
            assert response.status_code == 202, response.text
            if i >= 10:  # the first few warm connections and caches
                samples.append(elapsed)
    return summary(samples)


async def timed(step: Callable[[], Awaitable[Any]], count: int) -> dict[str, float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await step()
        samples.append(time.perf_counter() - started)
    return {
        "p50_us": round(1e6 * statistics.median(samples), 1),
        "p99_us": round(1e6 * sorted(samples)[-max(1, count // 100)], 1),
    }


async def step_costs(stack: Stack, token: str, bearer_jwt: str, count: int) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        auth = Authenticator(ClientDirectory(stack.clients_file), stack.mcp_url, http)
        await auth.verify_token(bearer_jwt)  # fetch the JWKS once
        scope = CompiledScope.of(WIDE)
        submission = Submission(parse_targets("10.1.2.0/24, 10.9.9.9"), "untrusted", "default")
        deny = DenyList.build()

        async def check_scope() -> None:
            check_submission(submission, scope, deny)

        nc = await nats.connect(stack.nats.url)
        js = nc.jetstream()
        kv = await js.key_value("scan_client_tasks")
        n = 0

        async def claim_and_release() -> None:
            nonlocal n
            n += 1
            await client_tasks.claim_active(kv, "bench-steps", f"t{n}", 1_000, lambda ids: _same(ids))
            await client_tasks.release_active(kv, "bench-steps", f"t{n}")

        async def append() -> None:
            await audit.append(js, audit.AuditRecord(client="bench-steps", action="bench", decision="allow"))

        try:
            return {
                "api_token_verify": await timed(lambda: auth.verify_token(token), count),
                "jwt_verify_rs256": await timed(lambda: auth.verify_token(bearer_jwt), count),
                "scope_check_2_targets": await timed(check_scope, count),
                "audit_append": await timed(append, count),
                "active_claim_and_release": await timed(claim_and_release, count),
            }
        finally:
            await nc.close()


async def _same(ids: list[str]) -> list[str]:
    return ids


def configure(stack: Stack, jwks_url: str) -> tuple[str, str]:
    data = load_clients(stack.clients_file)
    data.oauth = OAuthIssuer(issuer=ISSUER, jwks_url=jwks_url)
    save_clients(stack.clients_file, data)
    token = add_client(stack.clients_file, "bench-token", Role.AGENT, WIDE)
    add_client(stack.clients_file, "bench-oauth", Role.AGENT, WIDE, oauth_subjects=["svc-bench"])
    return token, ISSUER


async def run(submissions: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scanfleet-bench-") as tmp, serving_jwks() as (jwks_url, keys):
        stack = Stack(StackOptions(data_dir=Path(tmp), scan_duration=600.0, poll_interval=1.0))
        await asyncio.to_thread(stack.start)
        try:
            token, issuer = configure(stack, jwks_url)
            claims = {"iss": issuer, "aud": stack.mcp_url, "sub": "svc-bench", "exp": int(time.time()) + 3600}
            bearer_jwt = jwt.encode(claims, keys.rsa, "RS256", headers={"kid": "rsa-1"})
            with_token = await submit_latency(stack.gateway_url, token, submissions, "token")
            with_jwt = await submit_latency(stack.gateway_url, bearer_jwt, submissions, "jwt")
            steps = await step_costs(stack, token, bearer_jwt, 500)
        finally:
            await asyncio.to_thread(stack.stop)
    return {
        "benchmark": "access_control_submit_latency",
        "submissions_each": submissions,
        "rest_submit_with_api_token": with_token,
        "rest_submit_with_oauth_jwt": with_jwt,
        "steps_in_process": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=300)
    parser.add_argument("--url", help="time submissions against this running gateway only")
    parser.add_argument("--token", help="with --url: the bearer token to send")
    args = parser.parse_args()
    if args.url:
        result: dict[str, Any] = {
            "benchmark": "access_control_submit_latency",
            "gateway": args.url,
            "rest_submit": asyncio.run(submit_latency(args.url, args.token, args.submissions, "external")),
        }
    else:
        result = asyncio.run(run(args.submissions))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
