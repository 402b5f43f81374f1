"""Scan history end to end: a recurring scan fired by two janitors (one killed), compare_scans against
the emulator's truth (a finding added, one fixed, a host down, a login that fails), a rollover of
exactly the hosts a stopped scan did not reach, and Nessus hygiene that spares hand-made scans."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest

from scanfleet.cli.stack import Stack, StackOptions
from scanfleet.common import audit, contract
from scanfleet.common.clients import Role, find_client, load_clients, save_clients
from scanfleet.common.schedules import Claim
from scanfleet.common.scope import Scope
from scanfleet.common.tasks import TaskRecord
from scanfleet.emulator.plugins import OPTIONAL
from scanfleet.gateway import schemas
from tests.helpers import (
    add_client,
    emulator_get,
    long_scan,
    mcp_client,
    running_stack,
    scanner_named,
    stack_js,
    status_of,
    tool_error,
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


async def task_record(stack: Stack, task_id: str) -> TaskRecord:
    async with stack_js(stack) as js:
        entry = await (await js.key_value(contract.TASKS_BUCKET)).get(task_id)
        return msgspec.json.decode(entry.value or b"", type=TaskRecord)


async def test_a_schedule_fires_no_scan_once_its_owner_is_disabled_or_rescoped_and_the_refusal_is_audited(
    stack: Stack,
) -> None:
    since = datetime.now(UTC)
    scope = Scope(targets=["10.85.0.0/24"])
    tokens = {owner: add_client(stack.clients_file, owner, Role.AGENT, scope) for owner in ("rescoped", "disabled")}
    schedule_ids = {}
    for owner, token in tokens.items():
        async with mcp_client(stack, token=token) as mcp:
            every_5s = {"targets": "10.85.0.1", "name": f"{owner} nightly", "rrule": "FREQ=SECONDLY;INTERVAL=5"}
            created = await mcp.call_tool("schedule_scan", every_5s)
        assert created.structured_content == tool_json(created)
        schedule_ids[owner] = msgspec.convert(tool_json(created), schemas.ScheduleOut).schedule_id
    clients = load_clients(stack.clients_file)
    find_client(clients, "rescoped").scope = Scope(targets=["10.86.0.0/24"])
    find_client(clients, "disabled").disabled = True
    save_clients(stack.clients_file, clients)

    async with mcp_client(stack) as admin:

        async def refused() -> dict[str, dict[str, Any]]:
            listing = msgspec.convert(tool_json(await admin.call_tool("list_schedules", {})), schemas.ScheduleList)
            mine = {s.owner: s for s in listing.schedules if s.schedule_id in schedule_ids.values()}
            done = len(mine) == 2 and all(s.last_refusal for s in mine.values())
            return {owner: msgspec.to_builtins(s) for owner, s in mine.items()} if done else {}

        schedules = await until(refused, "both schedules refused when they fire", within=30, every=0.3)
        for schedule_id in schedule_ids.values():
            deleted = tool_json(await admin.call_tool("delete_schedule", {"schedule_id": schedule_id}))
            assert msgspec.convert(deleted, schemas.ScheduleDeleted).deleted

    assert schedules["rescoped"]["last_refusal"].startswith("target_out_of_scope")
    assert schedules["disabled"]["last_refusal"].startswith("client_disabled")
    assert all(s["fired"] == 0 and s["last_task_id"] is None for s in schedules.values())
    async with stack_js(stack) as js:
        records = [r for owner in tokens for r in await audit.read(js, audit.AuditQuery(client=owner, since=since))]
    fired = [r for r in records if r.interface == "schedule"]
    assert fired and all(r.decision == "deny" and r.action == "schedule_fire" for r in fired)
    assert {(r.client, r.code) for r in fired} == {
        ("rescoped", "target_out_of_scope"),
        ("disabled", "client_disabled"),
    }


async def test_rescan_repeats_a_scan_and_history_and_compare_of_fifty_hosts_stay_small(stack: Stack) -> None:
    emulator_post(stack, "/_emulator/world", {"reset": True, "seed": 11})
    targets = "10.84.0.1-50"
    async with mcp_client(stack) as mcp:
        first = tool_json(
            await mcp.call_tool(
                "run_authenticated_scan", {"targets": targets, "name": "fifty hosts", "credential_ref": "lab"}
            )
        )["task_id"]
        assert (await wait_terminal(stack, first, within=90))[-1] == "completed"
        base_status = await status_of(mcp, first)
        base_truth = truth_of(stack, base_status)
        alive = sorted(h["name"] for h in base_truth["hosts"] if h["findings"])
        assert len(alive) >= 10, "enough hosts answer to make the diff realistic"
        fixed_on, login_fails_on, down = alive[:3]
        fixed = max(f["plugin_id"] for h in base_truth["hosts"] if h["name"] == fixed_on for f in h["findings"])
        changes = [
            {"host": fixed_on, "kind": "fixed", "plugin_id": fixed},
            {"host": login_fails_on, "kind": "login_fails"},
            {"host": down, "kind": "down"},
        ]
        emulator_post(stack, "/_emulator/world", {"epoch": 2, "changes": {"2": changes}})

        requeued = await mcp.call_tool("rescan", {"task_id": first})
        again = msgspec.convert(tool_json(requeued), schemas.ScanRequeued)
        assert requeued.structured_content == tool_json(requeued)
        assert again.rescan_of == first and again.task_id != first
        assert (await wait_terminal(stack, again.task_id, within=90))[-1] == "completed"
        run_status = await status_of(mcp, again.task_id)
        run_truth = truth_of(stack, run_status)

        result = await mcp.call_tool("compare_scans", {"base_task_id": first, "task_id": again.task_id})
        size = len(result.content[0].text)  # type: ignore[union-attr]
        diff = msgspec.convert(tool_json(result), schemas.ScanComparison)
        history = msgspec.convert(
            tool_json(await mcp.call_tool("scan_history", {"targets": targets})), schemas.ScanHistory
        )

    original, repeated = await task_record(stack, first), await task_record(stack, again.task_id)
    same = ("targets", "scan_type", "pool", "credential_ref")
    assert [getattr(repeated, f) for f in same] == [getattr(original, f) for f in same]
    assert repeated.credential_ref == "lab" and repeated.rescan_of == first

    got = {change: sum(by_severity.values()) for change, by_severity in msgspec.to_builtins(diff.counts).items()}
    assert got == expected_counts(base_truth, run_truth)
    assert diff.not_comparable_hosts == {login_fails_on: "login_failed_in_run", down: "not_scanned_in_run"}
    assert (fixed_on, fixed) in {(e.host, e.plugin_id) for e in diff.top_fixed}
    print(f"\ncompare_scans over {len(alive)} answering hosts of 50: {size} bytes; counts {json.dumps(got)}")
    assert size <= 6 * 1024

    assert [r.task_id for r in history.runs[:2]] == [again.task_id, first]
    for run, status in zip(history.runs[:2], (run_status, base_status), strict=True):
        assert msgspec.to_builtins(run.severity_counts) == status["results_summary"]["severity_breakdown"]
        assert run.hosts_scanned == status["results_summary"]["hosts_scanned"]
    assert history.runs[0].rescan_of == first


async def test_a_schedule_asks_for_a_priority_within_its_owners_scope_and_its_runs_carry_it(stack: Stack) -> None:
    token = add_client(stack.clients_file, "batch", Role.AGENT, Scope(targets=["10.87.0.0/24"]))
    async with mcp_client(stack, token=token) as mcp:
        every_5s = {"targets": "10.87.0.1", "name": "batch nightly", "rrule": "FREQ=SECONDLY;INTERVAL=5"}
        refused = tool_error(await mcp.call_tool("schedule_scan", {**every_5s, "priority": "high"}))
        assert refused["error"] == "priority_not_allowed"
        created = msgspec.convert(
            tool_json(await mcp.call_tool("schedule_scan", {**every_5s, "priority": "low"})), schemas.ScheduleOut
        )
        assert created.priority == "low"

        async def first_run() -> str | None:
            listing = msgspec.convert(tool_json(await mcp.call_tool("list_schedules", {})), schemas.ScheduleList)
            return next((s.last_task_id for s in listing.schedules if s.schedule_id == created.schedule_id), None)

        task_id = await until(first_run, "the schedule's first run", within=30)
        assert task_id is not None
        tool_json(await mcp.call_tool("delete_schedule", {"schedule_id": created.schedule_id}))
    fired = await task_record(stack, task_id)
    assert (fired.priority, fired.schedule_id, fired.submitted_by) == ("low", created.schedule_id, "batch")
