"""Scan history end to end: a recurring scan fired by two janitors (one killed), compare_scans against
the emulator's truth (a finding added, one fixed, a host down, a login that fails), a rollover of
exactly the hosts a stopped scan did not reach, and Nessus hygiene that spares hand-made scans."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from scanfleet.cli.stack import Stack, StackOptions
from scanfleet.common import contract
from scanfleet.common.schedules import Claim
from scanfleet.emulator.plugins import OPTIONAL
from tests.helpers import (
    emulator_get,
    long_scan,
    mcp_client,
    running_stack,
    scanner_named,
    stack_js,
    status_of,
    tool_json,
    until,
    wait_terminal,
    watch_task,
)

pytestmark = pytest.mark.e2e
HOSTS = ["10.80.0.1", "10.80.0.2", "10.80.0.3", "10.80.0.4"]
FIXED_ON, ADDED_ON, LOGIN_FAILS_ON, DOWN = HOSTS
HANDMADE = ("weekly audit (made by hand)", "scanfleet-19990101T000000000000-deadbeef")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    options = StackOptions(
        data_dir=tmp_path_factory.mktemp("history"),
        scan_duration=2.0,  # short scans used to export no host at all
        poll_interval=0.2,
        ssh_accounts={"root": "toor"},
        stored_credentials={"lab": {"username": "root", "password": "toor"}},
        emulator_overrides={"seed": 7},
        extra_env={
            "SCANFLEET_SCHEDULE_INTERVAL": "0.3",
            "SCANFLEET_NESSUS_SWEEP_INTERVAL": "0.5",
            "SCANFLEET_PROGRESS_INTERVAL": "0.3",
        },
    )
    yield from running_stack(options)


def emulator_post(stack: Stack, path: str, body: dict[str, Any]) -> Any:
    """To every emulated scanner: the world is the same network whichever scanner looks at it."""
    for scanner in stack.options.fleet:
        access, secret = stack.secrets[scanner]
        response = httpx.post(
            f"{stack.emulator_url(scanner)}{path}",
            json=body,
            headers={"X-ApiKeys": f"accessKey={access}; secretKey={secret}"},
        )
        response.raise_for_status()


def truth_of(stack: Stack, status: dict[str, Any]) -> dict[str, Any]:
    scanner = scanner_named(stack, status["scanner_pool"], status["scanner_instance"])
    truth: dict[str, Any] = emulator_get(stack, scanner, f"/_emulator/scans/{status['nessus_scan_id']}/truth")
    return truth


def findings_of(truth: dict[str, Any]) -> dict[tuple[str, int, int, str], int]:
    return {
        (h["name"], f["plugin_id"], f["port"], f["protocol"]): f["severity"]
        for h in truth["hosts"]
        for f in h["findings"]
    }


def expected_counts(base: dict[str, Any], run: dict[str, Any]) -> dict[str, int]:
    """The diff the truth implies: hosts whose login failed or that were not scanned are not comparable."""
    ok_base = {h["name"] for h in base["hosts"] if h["credentialed"]}
    ok_run = {h["name"] for h in run["hosts"] if h["credentialed"]}
    before, after = findings_of(base), findings_of(run)
    out = {"new": 0, "fixed": 0, "still_open": 0, "not_comparable": 0}
    for key in {*before, *after}:
        if key[0] not in ok_base or key[0] not in ok_run:
            out["not_comparable"] += 1
        elif key not in before:
            out["new"] += 1
        elif key not in after:
            out["fixed"] += 1
        else:
            out["still_open"] += 1
    return out


async def claims(stack: Stack, schedule_id: str) -> list[Claim]:
    async with stack_js(stack) as js:
        kv = await js.key_value(contract.SCHEDULE_RUNS_BUCKET)
        out = []
        for key in await kv.keys():
            if key.startswith(f"{schedule_id}."):
                entry = await kv.get(key)
                out.append(msgspec.json.decode(entry.value or b"", type=Claim))
        return out


async def test_a_recurring_scan_fires_once_per_occurrence_across_janitors_and_compare_tells_what_changed(
    stack: Stack,
) -> None:
    emulator_post(stack, "/_emulator/world", {"reset": True, "seed": 7, "epoch": 1})
    handmade = make_handmade_scans(stack)
    stack.start_service("janitor", name="janitor-2")
    async with mcp_client(stack) as mcp:
        # "Weekly", scaled down to every 8 seconds.
        schedule = tool_json(
            await mcp.call_tool(
                "schedule_scan",
                {
                    "targets": ",".join(HOSTS),
                    "name": "weekly web tier",
                    "rrule": "FREQ=SECONDLY;INTERVAL=8",
                    "timezone": "Europe/Paris",
                    "scan_type": "authenticated",
                    "credential_ref": "lab",
                },
            )
        )
        schedule_id = schedule["schedule_id"]
        assert len(schedule["next_runs"]) == 3

        async def fired(count: int) -> dict[str, Any]:
            listing = tool_json(await mcp.call_tool("list_schedules", {}))
            mine = next(s for s in listing["schedules"] if s["schedule_id"] == schedule_id)
            return mine if mine["fired"] >= count and mine["last_task_id"] else {}

        first = (await until(lambda: fired(1), "the first occurrence", within=30))["last_task_id"]
        assert (await wait_terminal(stack, first, within=60))[-1] == "completed"
        tool_json(await mcp.call_tool("pause_schedule", {"schedule_id": schedule_id}))
        base_status = await status_of(mcp, first)
        base_truth = truth_of(stack, base_status)
        fixed_plugin = next(
            f["plugin_id"]
            for h in base_truth["hosts"]
            if h["name"] == FIXED_ON
            for f in sorted(h["findings"], key=lambda f: -f["severity"])
            if f["severity"] >= 2
        )
        baseline = {f["plugin_id"] for h in base_truth["hosts"] if h["name"] == ADDED_ON for f in h["findings"]}
        added_plugin = next(p.id for p in OPTIONAL if p.severity >= 2 and p.id not in baseline)
        changes = [
            {"host": FIXED_ON, "kind": "fixed", "plugin_id": fixed_plugin},
            {"host": ADDED_ON, "kind": "added", "plugin_id": added_plugin},
            {"host": LOGIN_FAILS_ON, "kind": "login_fails"},
            {"host": DOWN, "kind": "down"},
        ]
        emulator_post(stack, "/_emulator/world", {"epoch": 2, "changes": {"2": changes}})
        stack.kill("janitor")  # kill -9 between the occurrences: janitor-2 fires the next
        tool_json(await mcp.call_tool("resume_schedule", {"schedule_id": schedule_id}))
        second = (await until(lambda: fired(2), "the second occurrence", within=30))["last_task_id"]
        assert second != first
        assert (await wait_terminal(stack, second, within=60))[-1] == "completed"
        tool_json(await mcp.call_tool("delete_schedule", {"schedule_id": schedule_id}))
        run_truth = truth_of(stack, await status_of(mcp, second))

        result = await mcp.call_tool("compare_scans", {"base_task_id": first, "task_id": second})
        size = len(result.content[0].text)  # type: ignore[union-attr]
        diff = tool_json(result)

    occurrences = await claims(stack, schedule_id)
    assert sorted(c.task_id for c in occurrences if c.outcome == "fired") == sorted([first, second])
    assert len({c.occurrence for c in occurrences}) == len(occurrences)

    got = {change: sum(by_severity.values()) for change, by_severity in diff["counts"].items()}
    assert got == expected_counts(base_truth, run_truth)
    assert diff["not_comparable_hosts"] == {LOGIN_FAILS_ON: "login_failed_in_run", DOWN: "not_scanned_in_run"}
    assert {(e["host"], e["plugin_id"]) for e in diff["top_fixed"]} == {(FIXED_ON, fixed_plugin)}
    assert (ADDED_ON, added_plugin) in {(e["host"], e["plugin_id"]) for e in diff["top_new"]}
    assert all(e["host"] != LOGIN_FAILS_ON for e in diff["top_fixed"] + diff["top_new"])
    assert all("fix" in e for e in diff["top_new"])
    assert size < 4096
    print(f"\ncompare_scans: {size} bytes; counts {json.dumps(got)}")
    await scanfleet_scans_deleted(stack, handmade)


def make_handmade_scans(stack: Stack) -> list[tuple[Any, int]]:
    """Scans someone made by hand on the scanners, one even named like scanfleet's: never to be touched."""
    made = []
    for scanner in stack.options.fleet:
        access, secret = stack.secrets[scanner]
        for name in HANDMADE:
            response = httpx.post(
                f"{stack.emulator_url(scanner)}/scans",
                json={
                    "uuid": "ad629e16-03b6-8c1d-cef6-ef8c9dd3c658d24bd260ef5f9e66",
                    "settings": {"name": name, "text_targets": "10.99.0.1"},
                },
                headers={"X-ApiKeys": f"accessKey={access}; secretKey={secret}"},
            )
            response.raise_for_status()
            made.append((scanner, response.json()["scan"]["id"]))
    return made


async def scanfleet_scans_deleted(stack: Stack, handmade: list[tuple[Any, int]]) -> None:
    async def clean() -> bool:
        for scanner in stack.options.fleet:
            for scan in emulator_get(stack, scanner, "/_emulator/stats")["scans"]:
                mine = (scanner, scan["id"]) in handmade
                if mine and scan["deleted"]:
                    raise AssertionError(f"a hand-made scan was deleted: {scan}")
                if not mine and not scan["deleted"] and scan["status"] in ("completed", "canceled"):
                    return False
        return True

    await until(clean, "scanfleet's ended Nessus scans deleted", within=30, every=0.3)


async def test_a_rollover_scans_exactly_the_hosts_a_stopped_scan_did_not_reach(stack: Stack) -> None:
    emulator_post(stack, "/_emulator/world", {"reset": True, "seed": 7})
    targets = [f"10.81.0.{i}" for i in range(1, 7)]
    async with mcp_client(stack) as mcp:
        task = tool_json(
            await mcp.call_tool(
                "run_untrusted_scan", {"targets": ",".join(targets), "name": "stopped", "description": long_scan(12)}
            )
        )
        task_id = task["task_id"]
        await watch_task(stack, task_id, lambda r: 100 in r.host_progress.values(), within=30)
        tool_json(await mcp.call_tool("cancel_scan", {"task_id": task_id, "reason": "window closed"}))
        assert (await wait_terminal(stack, task_id))[-1] == "cancelled"
        stopped = await status_of(mcp, task_id)
        truth = truth_of(stack, stopped)
        left = [h for h in targets if truth["host_progress"].get(h, 0) < 100]
        assert 0 < len(left) < len(targets)
        rolled = tool_json(await mcp.call_tool("rollover_scan", {"task_id": task_id}))
        assert rolled["rollover_of"] == task_id
        assert (await wait_terminal(stack, rolled["task_id"]))[-1] == "completed"
        again = await status_of(mcp, rolled["task_id"])
    assert sorted(h["name"] for h in truth_of(stack, again)["hosts"]) == sorted(left)
