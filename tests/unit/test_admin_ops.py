"""Pure parts of the janitor and the admin CLI: no NATS needed."""

from __future__ import annotations

import argparse
import io
import json
from datetime import timedelta

import pytest

from scanfleet.cli import parser
from scanfleet.cli.admin import confirmed, describe_purge, render_letters, table
from scanfleet.common.admin_ops import StoredLetter
from scanfleet.common.config import Settings
from scanfleet.common.expiry import remaining, retention, ttl_header
from scanfleet.common.messages import utcnow
from scanfleet.common.tasks import REQUEUEABLE, IllegalTransition, TaskRecord, TaskState, reset_for_retry
from scanfleet.janitor.deadletters import Advisory, stage_of
from scanfleet.janitor.stale import slot_release_reason, stale_reason

NOW = utcnow()


def record(state: TaskState, **changes: object) -> TaskRecord:
    base = TaskRecord(
        task_id="t1",
        trace_id="ab" * 16,
        state=state,
        pool="default",
        instance="scanner-1",
        targets=["10.0.0.1"],
        name="n",
        created_at=NOW,
        updated_at=NOW,
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_table_aligns_columns_and_shows_missing_as_dash() -> None:
    out = table([(1, "agent", None), (12345, "validator", "x")], ("SEQ", "STAGE", "TASK"))
    lines = out.splitlines()
    assert lines[0].split() == ["SEQ", "STAGE", "TASK"]
    assert lines[1].split() == ["1", "agent", "-"]
    assert len({line.index(line.split()[1]) for line in lines}) == 1  # second column starts in one place


def test_letter_listing_clips_long_errors() -> None:
    letter = StoredLetter(
        seq=7,
        subject="scan.dlq.agent.t1",
        task_id="t1",
        trace_id=None,
        stage="agent",
        reason="export_error",
        error="x" * 500,
        attempts=3,
        failed_at=NOW,
    )
    out = render_letters([letter])
    assert "export_error" in out and "x" * 500 not in out and "…" in out
    assert render_letters([]).startswith("SCAN_DLQ is empty")


def test_purge_confirmation() -> None:
    args = argparse.Namespace(yes=False, seq=[], all=False, stage="agent", task=None)
    assert not confirmed(args, stdin=io.StringIO("y\n"))  # not a terminal: refuse, never guess
    assert describe_purge(args) == "every dead letter of stage agent"
    assert confirmed(argparse.Namespace(yes=True), stdin=io.StringIO(""))


def test_cli_parses_the_admin_commands() -> None:
    args = parser().parse_args(["dlq", "purge", "3", "4", "--yes", "--json"])
    assert (args.seq, args.yes, args.json) == ([3, 4], True, True)
    args = parser().parse_args(["dlq", "list", "--stage", "agent", "--limit", "5"])
    assert (args.stage, args.limit, args.json) == ("agent", 5, False)
    assert parser().parse_args(["stats", "--json"]).json


def test_advisories_parse_into_kinds() -> None:
    max_deliver = {
        "type": "io.nats.jetstream.advisory.v1.max_deliver",
        "stream": "SCAN_REQUESTS",
        "consumer": "dispatch-default",
        "stream_seq": 9,
        "deliveries": 20,
    }
    parsed = Advisory.parse(json.dumps(max_deliver).encode())
    assert parsed is not None and (parsed.kind, parsed.stream_seq, parsed.deliveries) == ("max_deliveries", 9, 20)
    terminated = {**max_deliver, "type": "io.nats.jetstream.advisory.v1.terminated", "reason": "scan_aborted"}
    parsed = Advisory.parse(json.dumps(terminated).encode())
    assert parsed is not None and (parsed.kind, parsed.reason) == ("terminated", "scan_aborted")
    assert Advisory.parse(b'{"type": "io.nats.jetstream.advisory.v1.nak"}') is None
    assert Advisory.parse(b"not json") is None
    assert [stage_of(c) for c in ("dispatch-dmz", "agent-dmz-s3", "validator", "janitor-dlq")] == [
        "dispatch",
        "agent",
        "validator",
        "janitor",
    ]


def test_retention_per_state_and_never_for_live_tasks() -> None:
    settings = Settings(completed_ttl=100.0, failed_ttl=300.0)
    assert retention(TaskState.COMPLETED, settings) == 100.0
    for state in (TaskState.FAILED, TaskState.TIMEOUT, TaskState.CANCELLED):
        assert retention(state, settings) == 300.0
    for state in (TaskState.QUEUED, TaskState.RUNNING, TaskState.VALIDATING):
        assert retention(state, settings) is None
    ended = record(TaskState.COMPLETED, finished_at=NOW - timedelta(seconds=40))
    assert remaining(ended, settings, NOW) == pytest.approx(60.0)
    long_ago = record(TaskState.COMPLETED, finished_at=NOW - timedelta(days=9))
    assert remaining(long_ago, settings, NOW) == 1.0
    assert [ttl_header(s) for s in (0.2, 1.0, 1.5, 604800.0)] == ["1", "1", "2", "604800"]


def test_stale_reasons_by_state() -> None:
    limits = {TaskState.QUEUED: 60.0, TaskState.RUNNING: 60.0, TaskState.VALIDATING: 60.0}
    old = NOW - timedelta(seconds=120)
    running = record(TaskState.RUNNING, started_at=old)
    stale = stale_reason(running, NOW, limits)
    assert stale is not None and (stale.target, stale.reason) == (TaskState.TIMEOUT, "stale_running")
    assert stale_reason(record(TaskState.QUEUED, updated_at=old), NOW, limits).target is TaskState.FAILED  # type: ignore[union-attr]
    assert stale_reason(record(TaskState.VALIDATING, updated_at=old), NOW, limits).target is TaskState.FAILED  # type: ignore[union-attr]
    assert stale_reason(record(TaskState.RUNNING, started_at=NOW), NOW, limits) is None
    assert stale_reason(record(TaskState.RUNNING, started_at=old, paused=True), NOW, limits) is None
    assert stale_reason(record(TaskState.FAILED, updated_at=old), NOW, limits) is None


def test_slots_are_released_only_for_accounted_tasks() -> None:
    assert slot_release_reason("scanner-1", None, True) == "task record is gone"
    assert slot_release_reason("scanner-1", record(TaskState.FAILED), True) == "task is failed"
    assert slot_release_reason("scanner-1", record(TaskState.RUNNING), False) is None
    assert slot_release_reason("scanner-1", record(TaskState.QUEUED), True) is None
    assert slot_release_reason("scanner-1", record(TaskState.QUEUED), False) is not None
    assert slot_release_reason("scanner-1", record(TaskState.RUNNING, instance="scanner-2"), True) is not None


def test_reset_for_retry_keeps_the_request_and_clears_the_attempt() -> None:
    failed = record(
        TaskState.FAILED,
        error="boom",
        error_reason="export_error",
        nessus_scan_id=4,
        finished_at=NOW,
        dispatch_attempts=2,
        progress=80,
    )
    reset_for_retry(failed, NOW)
    assert (failed.state, failed.retries, failed.dispatch_attempts) == (TaskState.QUEUED, 1, 2)
    assert (failed.error, failed.nessus_scan_id, failed.finished_at, failed.progress, failed.instance) == (
        None,
        None,
        None,
        0,
        None,
    )
    assert failed.targets == ["10.0.0.1"] and failed.created_at == NOW
    assert TaskState.COMPLETED not in REQUEUEABLE
    with pytest.raises(IllegalTransition):
        reset_for_retry(record(TaskState.COMPLETED), NOW)
    with pytest.raises(IllegalTransition):
        reset_for_retry(record(TaskState.RUNNING), NOW)
