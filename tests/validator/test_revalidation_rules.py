"""When an ended task's export is validated again, and how its record changes (pure rules)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scanfleet.common.messages import ResultsSummary, SeverityCounts, utcnow
from scanfleet.common.tasks import FindingsRef, TaskRecord, TaskState, ValidationStamp
from scanfleet.validator.results import Verdict
from scanfleet.validator.revalidation import StateChanged, apply_revalidation, first_stamp, skip_reason

SHA = "a" * 64
OTHER_SHA = "b" * 64
T0 = utcnow() - timedelta(days=1)


def summary(items: int) -> ResultsSummary:
    return ResultsSummary(
        hosts_scanned=1,
        total_items=items,
        total_vulnerabilities=items,
        severity_counts=SeverityCounts(high=items),
        auth_status="not_applicable",
    )


def findings(count: int) -> FindingsRef:
    return FindingsRef(findings_object="t.findings", hosts_object="t.hosts", count=count, size=1, sha256="c" * 64)


def record(state: TaskState = TaskState.COMPLETED, **fields: object) -> TaskRecord:
    r = TaskRecord(
        task_id="t1",
        trace_id="0" * 32,
        state=state,
        pool="default",
        targets=["10.0.0.1"],
        name="n",
        created_at=T0,
        updated_at=T0,
        finished_at=T0,
    )
    for name, value in fields.items():
        setattr(r, name, value)
    return r


def stamp(version: str = "1", sha: str = SHA, ok: bool = True, reason: str | None = None) -> ValidationStamp:
    return ValidationStamp(validator_version=version, export_sha256=sha, validated_at=T0, ok=ok, reason=reason)


OK = Verdict(ok=True, reason=None, message="1 host(s), 7 vulnerabilities", summary=summary(7))
AUTH_FAILED = Verdict(ok=False, reason="auth_failed", message="authentication failed", summary=summary(7))
MISMATCH = Verdict.rejected("checksum_mismatch", "export sha256 b != announced a")


def test_same_version_over_same_export_is_skipped() -> None:
    assert skip_reason(record(validation=stamp()), "1", SHA) is not None


@pytest.mark.parametrize(("version", "sha"), [("2", SHA), ("1", OTHER_SHA)])
def test_new_version_or_changed_export_is_validated_again(version: str, sha: str) -> None:
    assert skip_reason(record(validation=stamp()), version, sha) is None


def test_records_from_before_stamps_are_validated_again() -> None:
    assert skip_reason(record(results=summary(3)), "1", SHA) is None
    assert skip_reason(record(TaskState.FAILED, error_reason="xml_invalid"), "1", SHA) is None


@pytest.mark.parametrize(
    "ended",
    [
        record(TaskState.CANCELLED),
        record(TaskState.TIMEOUT),
        record(TaskState.FAILED, error_reason="scan_error"),
    ],
)
def test_tasks_whose_export_was_never_judged_are_left_alone(ended: TaskRecord) -> None:
    assert skip_reason(ended, "2", SHA) is not None


def test_a_deleted_export_is_left_alone() -> None:
    assert skip_reason(record(validation=stamp()), "2", None) is not None


def test_revalidation_replaces_results_and_keeps_state_and_first_time() -> None:
    r = record(results=summary(3), findings=findings(3), validation=stamp(), warnings=["old"])
    now = utcnow()
    apply_revalidation(r, state=TaskState.COMPLETED, verdict=OK, findings=findings(7), version="2", sha256=SHA, now=now)
    assert r.state is TaskState.COMPLETED and r.finished_at == T0
    assert r.results == summary(7) and r.findings == findings(7)
    assert r.warnings == []
    assert r.validation == ValidationStamp(
        validator_version="2", export_sha256=SHA, validated_at=T0, ok=True, revalidated_at=now, revalidations=1
    )


def test_a_rejected_export_keeps_previous_results_and_says_so() -> None:
    r = record(results=summary(3), findings=findings(3), validation=stamp())
    apply_revalidation(
        r, state=TaskState.COMPLETED, verdict=MISMATCH, findings=None, version="1", sha256=OTHER_SHA, now=utcnow()
    )
    assert r.results == summary(3) and r.findings == findings(3)
    assert r.validation is not None and (r.validation.ok, r.validation.reason) == (False, "checksum_mismatch")
    assert r.validation.export_sha256 == OTHER_SHA
    assert len(r.warnings) == 1 and "stays completed" in r.warnings[0] and "previous results" in r.warnings[0]


def test_a_verdict_that_contradicts_the_state_is_a_warning_not_a_transition() -> None:
    r = record(results=summary(3), validation=stamp())
    apply_revalidation(
        r, state=TaskState.COMPLETED, verdict=AUTH_FAILED, findings=findings(7), version="2", sha256=SHA, now=utcnow()
    )
    assert r.state is TaskState.COMPLETED
    assert r.error_reason is None
    assert any("fails (auth_failed)" in w and "stays completed" in w for w in r.warnings)


def test_a_failed_task_judged_the_same_again_gets_no_warning() -> None:
    r = record(TaskState.FAILED, error_reason="auth_failed", validation=stamp(ok=False, reason="auth_failed"))
    apply_revalidation(
        r, state=TaskState.FAILED, verdict=AUTH_FAILED, findings=findings(7), version="2", sha256=SHA, now=utcnow()
    )
    assert r.warnings == []
    assert r.validation is not None and r.validation.revalidations == 1


def test_revalidations_count_up() -> None:
    r = record(validation=stamp())
    for n in (1, 2):
        apply_revalidation(
            r, state=TaskState.COMPLETED, verdict=OK, findings=findings(7), version=str(n + 1), sha256=SHA, now=utcnow()
        )
        assert r.validation is not None and r.validation.revalidations == n


def test_a_task_that_moved_on_is_not_touched() -> None:
    r = record(TaskState.QUEUED)
    with pytest.raises(StateChanged):
        apply_revalidation(
            r, state=TaskState.FAILED, verdict=OK, findings=findings(7), version="2", sha256=SHA, now=utcnow()
        )


def test_first_stamp_records_the_verdict() -> None:
    now = utcnow()
    assert first_stamp(AUTH_FAILED, "3", SHA, now) == ValidationStamp(
        validator_version="3", export_sha256=SHA, validated_at=now, ok=False, reason="auth_failed"
    )
