"""Which operator controls make sense in which task state (``control.refusal``)."""

from __future__ import annotations

import pytest

from scanfleet.common.messages import utcnow
from scanfleet.common.tasks import TERMINAL, TaskRecord, TaskState
from scanfleet.gateway.control import Action, refusal


def record(state: TaskState, **fields: object) -> TaskRecord:
    now = utcnow()
    base = TaskRecord(
        task_id="t1", trace_id="0" * 32, pool="p", targets=["10.0.0.1"], name="n", created_at=now, updated_at=now
    )
    for name, value in {"state": state, **fields}.items():
        setattr(base, name, value)
    return base


ALLOWED: dict[Action, set[TaskState]] = {
    "cancel": {TaskState.QUEUED, TaskState.DISPATCHED, TaskState.RUNNING, TaskState.EXPORTING},
    "pause": {TaskState.RUNNING},
    "resume": set(),  # only with pause_requested, below
}


@pytest.mark.parametrize("action", ["cancel", "pause", "resume"])
@pytest.mark.parametrize("state", list(TaskState))
def test_each_action_in_each_state(action: Action, state: TaskState) -> None:
    why = refusal(action, record(state))
    assert (why is None) == (state in ALLOWED[action])
    if state in TERMINAL:
        assert why is not None and "already ended" in why and str(state) in why


def test_validating_cannot_be_cancelled_and_says_why() -> None:
    why = refusal("cancel", record(TaskState.VALIDATING))
    assert why is not None and "validated" in why


def test_resume_needs_a_pause() -> None:
    assert refusal("resume", record(TaskState.RUNNING, pause_requested=True, paused=True)) is None
    assert refusal("resume", record(TaskState.RUNNING, pause_requested=True, paused=False)) is None
    assert refusal("resume", record(TaskState.RUNNING)) == "the scan is not paused"


def test_pause_before_the_scan_runs_says_when_it_can() -> None:
    for state in (TaskState.QUEUED, TaskState.DISPATCHED):
        why = refusal("pause", record(state))
        assert why is not None and "not started" in why


def test_a_cancel_under_way_blocks_pause_and_resume_but_not_a_repeat_cancel() -> None:
    busy = record(TaskState.RUNNING, cancel_requested="stop it", pause_requested=True)
    assert refusal("pause", busy) == refusal("resume", busy) == "a cancel is already under way (stop it)"
    assert refusal("cancel", busy) is None
