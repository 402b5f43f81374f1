"""Validating an export again after its task ended: whether to, and what changes. Pure, no I/O.

The runbook rewinds the validator's consumer to re-judge old exports, say after a parser fix. An
ended task keeps its state (terminal states have no way out), but its results, findings, warnings
and troubleshooting are recomputed and the record says when and by which validator version. A
plain redelivery of an event that this validator version already judged over the same export bytes
is acknowledged without downloading anything.
"""

from __future__ import annotations

from datetime import datetime

from scanfleet.common.tasks import FindingsRef, TaskRecord, TaskState, ValidationStamp
from scanfleet.validator.parsing import REJECT_REASONS
from scanfleet.validator.results import Verdict

VALIDATOR_VERSION = "2"
"""Bump when parsing or judging changes what an export yields; a rewound consumer then re-validates."""

REVALIDATABLE = frozenset({TaskState.COMPLETED, TaskState.FAILED})
VALIDATION_REASONS = frozenset({*REJECT_REASONS, "checksum_mismatch", "auth_failed", "invalid"})
"""``error_reason`` values only the validator writes: a task failed with one of them had its export judged."""


class StateChanged(Exception):
    """The task left the state it was re-validated in (an operator retried it meanwhile)."""


def was_validated(record: TaskRecord) -> bool:
    return (
        record.validation is not None
        or record.results is not None
        or record.findings is not None
        or record.error_reason in VALIDATION_REASONS
    )


def skip_reason(record: TaskRecord, version: str, stored_sha256: str | None) -> str | None:
    """Why an export event for an ended task needs no work; ``None`` means validate it again."""
    if record.state not in REVALIDATABLE:
        return f"the task ended {record.state} before its export was validated"
    if not was_validated(record):
        return "the task failed before its export was validated"
    if stored_sha256 is None:
        return "the export object no longer exists"
    stamp = record.validation
    if stamp is not None and stamp.validator_version == version and stamp.export_sha256 == stored_sha256:
        return f"validator {version} already judged this export (sha256 {stored_sha256[:12]}…)"
    return None


def first_stamp(verdict: Verdict, version: str, sha256: str, now: datetime) -> ValidationStamp:
    return ValidationStamp(
        validator_version=version, export_sha256=sha256, validated_at=now, ok=verdict.ok, reason=verdict.reason
    )


def apply_revalidation(
    record: TaskRecord,
    *,
    state: TaskState,
    verdict: Verdict,
    findings: FindingsRef | None,
    version: str,
    sha256: str,
    now: datetime,
) -> None:
    """Record a new judgement on an ended task, as a same-state update.

    A usable export replaces results and findings; a rejected one (say the stored object no longer
    matches the announced checksum) keeps the previous results. When the new verdict disagrees with
    the state the task ended in, a warning says so rather than silently contradicting it.
    """
    if record.state is not state:
        raise StateChanged(f"task is {record.state} now, was {state}")
    warnings = list(record.warnings)
    if verdict.summary is not None:
        record.results = verdict.summary
        record.findings = findings
        record.troubleshooting = dict(verdict.troubleshooting)
        warnings = list(verdict.warnings)
    agrees = verdict.ok if state is TaskState.COMPLETED else (not verdict.ok and verdict.reason == record.error_reason)
    if not agrees:
        outcome = "passes" if verdict.ok else f"fails ({verdict.reason})"
        kept = "" if verdict.summary is not None else "; the previous results are kept"
        warnings.append(
            f"re-validation by validator {version} at {now.isoformat()} {outcome}: {verdict.message}; "
            f"the task stays {state}{kept}"
        )
    record.warnings = warnings
    previous = record.validation
    record.validation = ValidationStamp(
        validator_version=version,
        export_sha256=sha256,
        validated_at=previous.validated_at if previous is not None else (record.finished_at or now),
        ok=verdict.ok,
        reason=verdict.reason,
        revalidated_at=now,
        revalidations=(previous.revalidations if previous is not None else 0) + 1,
    )
