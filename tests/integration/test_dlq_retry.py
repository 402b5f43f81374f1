"""``retry`` resets the task properly and queues a new request; ``purge`` removes letters."""

from __future__ import annotations

import pytest

from scanfleet.common import admin_ops as admin
from scanfleet.common import contract, expiry
from scanfleet.common.messages import DeadLetter, ScanRequest, decode, encode, utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskState
from tests.helpers import add_task


async def failed_with_letter(rt: Runtime, task_id: str, scan_type: str = "untrusted") -> int:
    record = await add_task(rt, task_id, TaskState.RUNNING)

    def fail(r):  # type: ignore[no-untyped-def]
        r.error, r.error_reason, r.nessus_scan_id, r.scan_type = "export broke", "export_error", 41, scan_type

    record = await rt.tasks.transition(task_id, TaskState.FAILED, fail)
    await expiry.arm(rt.js, record, rt.settings)
    await rt.dead_letter(
        DeadLetter(
            task_id=task_id,
            trace_id=record.trace_id,
            stage="agent",
            reason="export_error",
            error="export broke",
            failed_at=utcnow(),
            original=b'{"task_id": "%s", "request": {"targets": ["10.0.0.1"]}}' % task_id.encode(),
        )
    )
    [letter] = await admin.list_letters(rt, task_id=task_id)
    return letter.seq


async def test_retry_requeues_a_fresh_attempt(runtime: Runtime) -> None:
    rt = runtime
    seq = await failed_with_letter(rt, "t-retry")
    before = await rt.tasks.get("t-retry")
    assert before is not None

    outcome = await admin.retry(rt, seq, actor="alice")

    assert (outcome.task_id, outcome.retries, outcome.request_msg_id) == ("t-retry", 1, "t-retry-retry1")
    record = await rt.tasks.get("t-retry")
    assert record is not None and record.state is TaskState.QUEUED and record.retries == 1
    assert record.error is None and record.nessus_scan_id is None and record.finished_at is None
    assert (record.targets, record.trace_id, record.created_at) == (before.targets, before.trace_id, before.created_at)
    request = await rt.js.get_last_msg(contract.REQUESTS_STREAM, contract.request_subject("default", "t-retry"))
    assert (request.headers or {})[contract.HDR_MSG_ID] == "t-retry-retry1"
    assert decode(request.data or b"", ScanRequest).targets == ["10.0.0.1"]
    queued = await rt.js.get_last_msg(contract.EVENTS_STREAM, contract.event_subject("t-retry", "queued"))
    assert b"by alice of dead letter" in (queued.data or b"")
    state = await expiry.key_state(rt.js, "t-retry")
    assert state is not None and not state.live  # the clock stopped while the task runs again
    assert await admin.list_letters(rt, task_id="t-retry") == []
    with pytest.raises(admin.AdminError) as again:
        await admin.retry(rt, seq)
    assert again.value.code == "letter_not_found"


async def test_retry_refuses_what_it_cannot_redo(runtime: Runtime) -> None:
    rt = runtime
    seq = await failed_with_letter(rt, "t-auth", scan_type="authenticated")
    with pytest.raises(admin.AdminError) as refused:
        await admin.retry(rt, seq)
    assert refused.value.code == "credentials_unavailable"
    assert (await rt.tasks.get("t-auth")).state is TaskState.FAILED  # type: ignore[union-attr]

    await rt.js.publish(
        contract.dlq_subject("dispatch", "unknown"),
        encode(DeadLetter(task_id=None, stage="dispatch", reason="unparseable", error="x", failed_at=utcnow())),
    )
    [orphan] = await admin.list_letters(rt, task_id="unknown")
    with pytest.raises(admin.AdminError) as no_task:
        await admin.retry(rt, orphan.seq)
    assert no_task.value.code == "no_task"


async def test_purge_by_sequence_and_by_filter(runtime: Runtime) -> None:
    rt = runtime
    first = await failed_with_letter(rt, "t-p1")
    await failed_with_letter(rt, "t-p2")
    await failed_with_letter(rt, "t-p3")
    assert await admin.purge(rt, seqs=[first]) == 1
    assert [letter.task_id for letter in await admin.list_letters(rt)] == ["t-p3", "t-p2"]
    with pytest.raises(admin.AdminError):
        await admin.purge(rt)
    assert await admin.purge(rt, stage="agent") == 2
    assert await admin.list_letters(rt) == []
