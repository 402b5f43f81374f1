"""The pure parts of the metrics: fleet gauges from a mirror snapshot, task census, DLQ pools."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from scanfleet.common import capacity
from scanfleet.common.messages import DeadLetter, Heartbeat, encode, utcnow
from scanfleet.common.registry import ScannerEntry, ScannerView
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.dispatcher import metrics as fleet
from scanfleet.janitor import metrics as janitor
from scanfleet.janitor.stale import entered


def view(pool: str, instance: str, limit: int, tasks: list[str], *, circuit: str | None = "closed") -> ScannerView:
    now = utcnow()
    entry = ScannerEntry(
        pool=pool, instance=instance, url="http://x", max_concurrent_scans=limit, enabled=True, updated_at=now
    )
    beat = None
    if circuit is not None:
        beat = Heartbeat(
            pool=pool,
            instance=instance,
            agent_id="a",
            at=now,
            reachable=True,
            authenticated=True,
            scan_api=True,
            circuit=circuit,  # type: ignore[arg-type]
        )
    return ScannerView(entry=entry, slots=capacity.Slots(limit=limit, tasks=tasks), heartbeat=beat)


def test_fleet_samples() -> None:
    views = [
        view("default", "s1", 2, ["t1"]),
        view("default", "s2", 4, ["t2", "t3", "t4"], circuit="open"),
        view("dmz", "s3", 1, [], circuit=None),
    ]
    samples = fleet.fleet_samples(views)
    s1, s2, s3 = ("default", "default:s1"), ("default", "default:s2"), ("dmz", "dmz:s3")
    assert samples[fleet.SCANNER_ACTIVE] == {s1: 1, s2: 3, s3: 0}
    assert samples[fleet.SCANNER_UTILIZATION] == {s1: 50.0, s2: 75.0, s3: 0.0}
    assert samples[fleet.CIRCUIT_STATE] == {s1: 0, s2: 1}
    assert samples[fleet.AGENT_ALIVE] == {s1: 1.0, s2: 1.0, s3: 0.0}
    assert samples[fleet.SCANNER_USABLE] == {s1: 1.0, s2: 0.0, s3: 0.0}
    assert samples[fleet.POOL_CAPACITY] == {("default",): 6, ("dmz",): 1}
    assert samples[fleet.POOL_ACTIVE] == {("default",): 4, ("dmz",): 0}
    assert samples[fleet.ACTIVE_SCANS] == {(): 4}
    assert samples[fleet.SCANNER_INSTANCES] == {("nessus", "true"): 3, ("nessus", "false"): 0}


def test_apply_drops_series_of_removed_scanners() -> None:
    fleet.apply(fleet.fleet_samples([view("gone", "old", 1, [])]))
    fleet.apply(fleet.fleet_samples([view("kept", "new", 3, [])]))
    families = {s.labels.get("pool") for m in fleet.SCANNER_CAPACITY.collect() for s in m.samples}
    assert families == {"kept"}


def record(task_id: str, state: TaskState, age: float, *, paused: bool = False) -> TaskRecord:
    now = utcnow()
    return TaskRecord(
        task_id=task_id,
        trace_id="0" * 32,
        scan_type="untrusted",
        pool="default",
        targets=["10.0.0.1"],
        name="x",
        state=state,
        paused=paused,
        created_at=now - timedelta(seconds=age),
        updated_at=now - timedelta(seconds=age),
    )


def test_task_census_counts_states_and_finds_the_oldest_unpaused() -> None:
    now = utcnow()
    records = [
        record("a", TaskState.QUEUED, 10),
        record("b", TaskState.QUEUED, 500),
        record("c", TaskState.RUNNING, 9000, paused=True),
        record("d", TaskState.COMPLETED, 99999),
    ]
    counts, oldest = janitor.task_census(records, now, entered)
    assert counts["queued"] == 2 and counts["running"] == 1 and counts["completed"] == 1
    assert 499 <= oldest["queued"] <= 501
    assert oldest["running"] == 0.0
    assert "completed" not in oldest


def test_letter_pool_reads_the_original_message() -> None:
    def letter(original: object) -> bytes:
        return encode(
            DeadLetter(
                task_id="t",
                stage="agent",
                reason="r",
                error="e",
                failed_at=utcnow(),
                original=msgspec.json.encode(original) if original is not None else None,
            )
        )

    assert janitor.letter_pool(letter({"pool": "dmz", "task_id": "t"})) == "dmz"
    assert janitor.letter_pool(letter({"request": {"pool": "default"}})) == "default"
    assert janitor.letter_pool(letter({"pool": "bad pool!"})) == "unknown"
    assert janitor.letter_pool(letter(None)) == "unknown"
    assert janitor.letter_pool(b"not json") == "unknown"
