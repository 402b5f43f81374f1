"""The agent's Nessus lifecycle against a real nats-server and an in-process emulator.

Every fault mode must end in its documented state (``validating`` with an export, or
``failed``/``cancelled``/``timeout`` with a reason) with exactly one Nessus scan launched.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from fastapi import FastAPI

from scanfleet.agent.circuit import CircuitBreaker
from scanfleet.agent.lifecycle import Lifecycle, PermanentFailure, nessus_scan_name
from scanfleet.agent.nessus import NessusClient
from scanfleet.agent.secrets import CredentialResolver
from scanfleet.common import capacity, contract, credentials
from scanfleet.common.credentials import CredentialStore, TargetCredential
from scanfleet.common.crypto import Keyring, generate_key_spec
from scanfleet.common.messages import Assignment, ScanRequest, ScanType, utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.emulator.app import create_app
from scanfleet.emulator.state import EmulatorState
from tests.helpers import ACCESS_KEY, SECRET_KEY, make_config, serving, watch_until

POOL, INSTANCE = "default", "scanner-1"
KEY = contract.instance_key(POOL, INSTANCE)
RING = Keyring.parse(generate_key_spec("k1"))


@dataclass
class Emu:
    app: FastAPI
    client: NessusClient

    @property
    def state(self) -> EmulatorState:
        state: EmulatorState = self.app.state.emulator
        return state

    async def faults(self, **body: Any) -> None:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://emu")
        async with http:
            headers = {"X-ApiKeys": f"accessKey={ACCESS_KEY}; secretKey={SECRET_KEY};"}
            (await http.post("/_emulator/faults", json=body, headers=headers)).raise_for_status()

    def scans_named(self, task_id: str) -> list[Any]:
        return [s for s in self.state.scans.values() if s.name == nessus_scan_name(task_id)]


@pytest.fixture
async def emu() -> AsyncIterator[Emu]:
    app = create_app(make_config(scan_duration=0.6, pending_duration=0.1, export_delay=0.1, stopping_duration=0.05))
    client = NessusClient(
        "http://emu", access_key=ACCESS_KEY, secret_key=SECRET_KEY, transport=httpx.ASGITransport(app=app)
    )
    async with client:
        yield Emu(app, client)


@pytest.fixture
async def rt(runtime: Runtime) -> Runtime:
    runtime.settings = msgspec.structs.replace(
        runtime.settings,
        poll_interval=0.05,
        progress_interval=0.0,
        retry_base=0.01,
        retry_cap=0.05,
        retry_attempts=4,
        credential_keys=None,
    )
    await capacity.ensure_limit(runtime.capacity, KEY, 10)
    return runtime


async def dispatched(
    rt: Runtime,
    *,
    targets: list[str] | None = None,
    scan_type: ScanType = "untrusted",
    credential: TargetCredential | None = None,
    ref: str | None = None,
) -> Assignment:
    task_id = f"t{utcnow():%H%M%S%f}"
    now = utcnow()
    record = TaskRecord(
        task_id=task_id,
        trace_id="0" * 32,
        pool=POOL,
        targets=targets or ["10.9.0.1", "10.9.0.2"],
        name="agent test",
        scan_type=scan_type,
        created_at=now,
        updated_at=now,
    )
    await rt.tasks.create(record)
    assert await capacity.reserve(rt.capacity, KEY, task_id)

    def assign(r: TaskRecord) -> None:
        r.instance = INSTANCE

    await rt.tasks.transition(task_id, TaskState.DISPATCHED, assign)
    request = ScanRequest(
        task_id=task_id,
        trace_id=record.trace_id,
        pool=POOL,
        scan_type=scan_type,
        targets=record.targets,
        name=record.name,
        credential_ref=ref,
        credentials=RING.seal(credentials.dump(credential), task_id) if credential else None,
        submitted_at=now,
    )
    return Assignment(
        task_id=task_id, trace_id=record.trace_id, pool=POOL, instance=INSTANCE, request=request, assigned_at=now
    )


def lifecycle(rt: Runtime, emu: Emu, assignment: Assignment, store: Path | None = None) -> Lifecycle:
    resolver = CredentialResolver(RING, CredentialStore(store, env={"ROOT_PW": "toor"}))
    return Lifecycle(rt, emu.client, assignment, agent_id="agent-a", credentials=resolver, breaker=CircuitBreaker())


async def drive(life: Lifecycle) -> PermanentFailure | None:
    try:
        await asyncio.wait_for(life.run(), timeout=20)
    except PermanentFailure as exc:
        return exc
    return None


async def record_of(rt: Runtime, task_id: str) -> TaskRecord:
    record = await rt.tasks.get(task_id)
    assert record is not None
    return record


async def assert_exported(rt: Runtime, emu: Emu, task_id: str) -> None:
    record = await record_of(rt, task_id)
    assert record.state is TaskState.EXPORTING and record.export is not None and record.progress == 100
    store = await rt.js.object_store(contract.EXPORTS_OBJECTS)
    data = (await store.get(record.export.object_name)).data or b""
    assert hashlib.sha256(data).hexdigest() == record.export.sha256 and len(data) == record.export.size
    assert b"</NessusClientData_v2>" in data
    event = await rt.js.get_last_msg(contract.EVENTS_STREAM, contract.event_subject(task_id, "exported"))
    assert record.export.sha256.encode() in (event.data or b"")
    scans = emu.scans_named(task_id)
    assert len(scans) == 1 and len(scans[0].runs) == 1, "exactly one Nessus scan, launched once"
    assert record.nessus_scan_id == scans[0].id and record.claimed_by == "agent-a"


async def test_untrusted_scan_runs_to_export_with_progress(rt: Runtime, emu: Emu) -> None:
    assignment = await dispatched(rt)
    assert await drive(lifecycle(rt, emu, assignment)) is None
    await assert_exported(rt, emu, assignment.task_id)
    history = [e.value async for e in _history(rt, assignment.task_id)]
    assert any(0 < msgspec.json.decode(v)["progress"] < 100 for v in history if v), "progress written while running"


async def _history(rt: Runtime, task_id: str) -> AsyncIterator[Any]:
    for entry in await rt.tasks.kv.history(task_id):
        yield entry


async def test_sealed_inline_credentials_reach_nessus(rt: Runtime, emu: Emu) -> None:
    cred = TargetCredential(username="root", password="toor", escalation="sudo", escalation_password="esc")
    assignment = await dispatched(rt, scan_type="authenticated_privileged", credential=cred)
    assert await drive(lifecycle(rt, emu, assignment)) is None
    await assert_exported(rt, emu, assignment.task_id)
    (scan,) = emu.scans_named(assignment.task_id)
    assert [(c.username, c.password) for c in scan.credentials] == [("root", "toor")]
    assert emu.state.credential_outcome(scan) == ("root", None)


async def test_credential_ref_is_resolved_from_the_store_with_env(rt: Runtime, emu: Emu, tmp_path: Path) -> None:
    store = tmp_path / "credentials.yaml"
    store.write_text("credentials:\n  linux:\n    username: root\n    password: ${ROOT_PW}\n")
    assignment = await dispatched(rt, scan_type="authenticated", ref="linux")
    assert await drive(lifecycle(rt, emu, assignment, store)) is None
    (scan,) = emu.scans_named(assignment.task_id)
    assert scan.credentials[0].password == "toor"


async def test_unknown_credential_ref_fails_before_touching_nessus(rt: Runtime, emu: Emu, tmp_path: Path) -> None:
    store = tmp_path / "credentials.yaml"
    store.write_text("credentials: {}\n")
    assignment = await dispatched(rt, scan_type="authenticated", ref="nope")
    failure = await drive(lifecycle(rt, emu, assignment, store))
    assert failure is not None and failure.reason == "credentials_unavailable"
    assert emu.state.scans_created == 0


@pytest.mark.parametrize(
    "faults",
    [
        {"endpoint_faults": [{"method": "POST", "path": "/scans/{scan_id}/launch", "status": 503, "count": 2}]},
        {"endpoint_faults": [{"method": "GET", "path": "/scans/{scan_id}", "status": 429, "count": 3}]},
        {"endpoint_faults": [{"method": "POST", "path": "/scans/{scan_id}/export", "status": 500, "count": 2}]},
        {"create_then_fail": 1},
        {"session_expiry": True},
        {"endpoint_faults": [{"method": "GET", "path": "/tokens/{token}/download", "status": 503, "count": 1}]},
    ],
    ids=["launch-503", "poll-429", "export-500", "reply-lost-after-create", "session-expiry", "download-503"],
)
async def test_transient_faults_are_retried_without_a_second_scan(
    rt: Runtime, emu: Emu, faults: dict[str, Any]
) -> None:
    await emu.faults(**faults)
    assignment = await dispatched(rt)
    assert await drive(lifecycle(rt, emu, assignment)) is None
    await assert_exported(rt, emu, assignment.task_id)
    assert emu.state.scans_created == 1 and emu.state.launches == 1


async def test_a_hanging_scanner_times_out_each_call_and_is_retried(rt: Runtime, emu: Emu) -> None:
    async with serving(emu.app) as url:
        client = NessusClient(url, access_key=ACCESS_KEY, secret_key=SECRET_KEY, timeout=0.3)
        await emu.faults(endpoint_faults=[{"method": "GET", "path": "/scans", "status": 0, "count": 1}])
        assignment = await dispatched(rt)
        async with client:
            emu.client = client
            assert await drive(lifecycle(rt, emu, assignment)) is None
        await assert_exported(rt, emu, assignment.task_id)


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        ({"scan_api": False}, "scan_api_unavailable"),
        ({"endpoint_faults": [{"method": "POST", "path": "/scans", "status": 400}]}, "targets_rejected"),
        ({"endpoint_faults": [{"method": "GET", "path": "/scans/{scan_id}", "status": 403}]}, "scanner_auth"),
        (
            {"endpoint_faults": [{"method": "POST", "path": "/scans/{scan_id}/launch", "status": 503}]},
            "scanner_unreachable",
        ),
        ({"export_error": True}, "export_error"),
        ({"endpoint_faults": [{"method": "POST", "path": "/scans", "status": 503}]}, "scanner_unreachable"),
        (
            {"endpoint_faults": [{"method": "GET", "path": "/tokens/{token}/download", "status": 503}]},
            "export_download",
        ),
    ],
    ids=["no-scan-api", "targets-rejected", "forbidden", "always-503", "export-error", "create-503", "download-503"],
)
async def test_permanent_faults_fail_with_the_reason(
    rt: Runtime, emu: Emu, faults: dict[str, Any], reason: str
) -> None:
    await emu.faults(**faults)
    assignment = await dispatched(rt)
    failure = await drive(lifecycle(rt, emu, assignment))
    assert failure is not None and failure.reason == reason
    assert emu.state.launches <= 1


async def test_a_scan_that_vanishes_fails_the_task(rt: Runtime, emu: Emu) -> None:
    assignment = await dispatched(rt)
    life = lifecycle(rt, emu, assignment)
    run = asyncio.create_task(drive(life))
    await watch_until(rt.tasks.kv, assignment.task_id, TaskRecord, lambda r: r.state is TaskState.RUNNING)
    await emu.faults(vanish_scan=(await record_of(rt, assignment.task_id)).nessus_scan_id)
    failure = await asyncio.wait_for(run, 10)
    assert failure is not None and failure.reason == "scan_vanished"


async def test_an_aborted_scan_fails_the_task(rt: Runtime, emu: Emu) -> None:
    assignment = await dispatched(rt)
    run = asyncio.create_task(drive(lifecycle(rt, emu, assignment)))
    await watch_until(rt.tasks.kv, assignment.task_id, TaskRecord, lambda r: r.state is TaskState.RUNNING)
    await emu.faults(abort_scan=(await record_of(rt, assignment.task_id)).nessus_scan_id)
    failure = await asyncio.wait_for(run, 10)
    assert failure is not None and failure.reason == "scan_aborted"


async def test_an_operator_retry_on_the_same_scanner_runs_a_new_scan(rt: Runtime, emu: Emu) -> None:
    """The first attempt's Nessus scan (aborted, still listed) must not be adopted by the retry."""
    assignment = await dispatched(rt)
    run = asyncio.create_task(drive(lifecycle(rt, emu, assignment)))
    await watch_until(rt.tasks.kv, assignment.task_id, TaskRecord, lambda r: r.state is TaskState.RUNNING)
    first_scan = (await record_of(rt, assignment.task_id)).nessus_scan_id
    await emu.faults(abort_scan=first_scan)
    assert (await asyncio.wait_for(run, 10)) is not None
    await rt.tasks.transition(assignment.task_id, TaskState.FAILED)
    await rt.tasks.requeue(assignment.task_id)

    def assign(r: TaskRecord) -> None:
        r.instance = INSTANCE

    await rt.tasks.transition(assignment.task_id, TaskState.DISPATCHED, assign)
    assert await drive(lifecycle(rt, emu, assignment)) is None
    record = await record_of(rt, assignment.task_id)
    assert record.state is TaskState.EXPORTING and record.nessus_scan_id not in (None, first_scan)
    assert first_scan is not None and record.nessus_scan_id is not None
    assert emu.state.status(emu.state.scans[first_scan], emu.state.clock()) == "aborted"
    assert len(emu.state.scans[record.nessus_scan_id].runs) == 1


@pytest.mark.parametrize(
    ("settings", "faults", "reason"),
    [
        ({"pending_timeout": 0.3}, {"stay_pending": True}, "pending_timeout"),
        ({"running_timeout": 0.2}, {}, "running_timeout"),
        # A scanner unreachable while the scan runs is waited out, up to the running deadline.
        (
            {"running_timeout": 0.5},
            {"endpoint_faults": [{"method": "GET", "path": "/scans/{scan_id}", "status": 503}]},
            "running_timeout",
        ),
        ({"export_timeout": 0.3}, {"export_stuck": True}, "export_timeout"),
    ],
)
async def test_deadlines_stop_the_scan_and_end_as_timeout(
    rt: Runtime, emu: Emu, settings: dict[str, float], faults: dict[str, Any], reason: str
) -> None:
    rt.settings = msgspec.structs.replace(rt.settings, **settings)
    await emu.faults(**faults)
    assignment = await dispatched(rt)
    assert await drive(lifecycle(rt, emu, assignment)) is None
    record = await record_of(rt, assignment.task_id)
    assert record.state is TaskState.TIMEOUT and record.error_reason == reason and record.error
    (scan,) = emu.scans_named(assignment.task_id)
    status = emu.state.status(scan, emu.state.clock())
    assert status in ({"stopping", "canceled"} if reason != "export_timeout" else {"completed"})


async def test_cancel_while_running_stops_the_nessus_scan(rt: Runtime, emu: Emu) -> None:
    emu.state.config = msgspec.structs.replace(emu.state.config, scan_duration=30.0)
    assignment = await dispatched(rt)
    run = asyncio.create_task(drive(lifecycle(rt, emu, assignment)))
    await watch_until(rt.tasks.kv, assignment.task_id, TaskRecord, lambda r: r.state is TaskState.RUNNING)

    def cancel(r: TaskRecord) -> None:
        r.cancel_requested = "operator says stop"

    await rt.tasks.update(assignment.task_id, cancel)
    assert await asyncio.wait_for(run, 10) is None
    record = await record_of(rt, assignment.task_id)
    assert record.state is TaskState.CANCELLED and "operator says stop" in (record.error or "")
    (scan,) = emu.scans_named(assignment.task_id)
    assert emu.state.status(scan, emu.state.clock()) in {"stopping", "canceled"}


async def test_cancel_before_the_scan_exists_creates_nothing(rt: Runtime, emu: Emu) -> None:
    assignment = await dispatched(rt)

    def cancel(r: TaskRecord) -> None:
        r.cancel_requested = "changed my mind"

    await rt.tasks.update(assignment.task_id, cancel)
    assert await drive(lifecycle(rt, emu, assignment)) is None
    assert (await record_of(rt, assignment.task_id)).state is TaskState.CANCELLED
    assert emu.state.scans_created == 0


async def test_pause_and_resume_act_on_nessus_and_are_recorded(rt: Runtime, emu: Emu) -> None:
    emu.state.config = msgspec.structs.replace(emu.state.config, scan_duration=1.5)
    assignment = await dispatched(rt)
    run = asyncio.create_task(drive(lifecycle(rt, emu, assignment)))
    await watch_until(rt.tasks.kv, assignment.task_id, TaskRecord, lambda r: r.state is TaskState.RUNNING)

    def pause(r: TaskRecord) -> None:
        r.pause_requested = True

    await rt.tasks.update(assignment.task_id, pause)
    await watch_until(rt.tasks.kv, assignment.task_id, TaskRecord, lambda r: r.paused)
    (scan,) = emu.scans_named(assignment.task_id)
    assert emu.state.status(scan, emu.state.clock()) == "paused"

    def resume(r: TaskRecord) -> None:
        r.pause_requested = False

    await rt.tasks.update(assignment.task_id, resume)
    await watch_until(rt.tasks.kv, assignment.task_id, TaskRecord, lambda r: not r.paused)
    assert emu.state.status(scan, emu.state.clock()) in {"running", "pending", "completed"}
    assert await asyncio.wait_for(run, 15) is None
    record = await record_of(rt, assignment.task_id)
    assert record.state is TaskState.EXPORTING and record.paused_seconds > 0


async def test_a_rerun_after_a_crash_adopts_the_launched_scan(rt: Runtime, emu: Emu) -> None:
    assignment = await dispatched(rt)
    first = asyncio.create_task(drive(lifecycle(rt, emu, assignment)))
    await watch_until(rt.tasks.kv, assignment.task_id, TaskRecord, lambda r: r.state is TaskState.RUNNING)
    first.cancel()
    assert await drive(lifecycle(rt, emu, assignment)) is None
    await assert_exported(rt, emu, assignment.task_id)


async def test_a_lost_record_write_after_create_is_healed_by_name(rt: Runtime, emu: Emu) -> None:
    """Crash between creating the scan and recording its id: the rerun finds it by name."""
    assignment = await dispatched(rt)

    def claimed_by_the_dead_agent(r: TaskRecord) -> None:
        r.claimed_by = "agent-dead"

    await rt.tasks.update(assignment.task_id, claimed_by_the_dead_agent)
    await emu.client.create_scan(name=nessus_scan_name(assignment.task_id), targets=assignment.request.targets)
    assert await drive(lifecycle(rt, emu, assignment)) is None
    await assert_exported(rt, emu, assignment.task_id)


@pytest.mark.parametrize("corrupt", ["truncate", "garbage"])
async def test_corrupt_exports_are_stored_as_received_for_the_validator(rt: Runtime, emu: Emu, corrupt: str) -> None:
    await emu.faults(export_corrupt=corrupt)
    assignment = await dispatched(rt)
    assert await drive(lifecycle(rt, emu, assignment)) is None
    record = await record_of(rt, assignment.task_id)
    assert record.export is not None
    store = await rt.js.object_store(contract.EXPORTS_OBJECTS)
    data = (await store.get(record.export.object_name)).data or b""
    assert b"</NessusClientData_v2>" not in data and hashlib.sha256(data).hexdigest() == record.export.sha256
