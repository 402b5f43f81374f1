"""The JetStream API calls behind each `nats` command in docs/operations.md, on a real server.

natscli is a Go binary that is not installable here (no Debian, PyPI or npm package), so each
runbook command is checked through the API request it makes, with nats-py.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from nats.errors import TimeoutError as NatsTimeout

from scanfleet.common import contract
from scanfleet.common.contract import EventKind
from scanfleet.common.messages import DeadLetter, encode, utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskState
from tests.helpers import add_task


async def a_letter(rt: Runtime, task_id: str, stage: str = "agent") -> int:
    letter = DeadLetter(
        task_id=task_id,
        trace_id="ef" * 16,
        stage=stage,
        reason="export_error",
        error="e",
        failed_at=utcnow(),
        original=b'{"task_id": "%s"}' % task_id.encode(),
    )
    return (await rt.js.publish(contract.dlq_subject(stage, task_id), encode(letter))).seq


async def test_view_and_get_dead_letters(runtime: Runtime) -> None:
    rt = runtime
    first = await a_letter(rt, "t-a", "agent")
    await a_letter(rt, "t-b", "validator")
    # nats stream view SCAN_DLQ --subject 'scan.dlq.validator.>'
    sub = await rt.js.subscribe("scan.dlq.validator.>", ordered_consumer=True)
    viewed = await sub.next_msg(timeout=5)
    assert viewed.subject == "scan.dlq.validator.t-b"
    await sub.unsubscribe()
    # nats stream get SCAN_DLQ <seq> --json  →  .data is base64; the letter's .original is base64 too
    got = await rt.js.get_msg(contract.DLQ_STREAM, first)
    body = json.loads(got.data or b"")
    assert body["stage"] == "agent" and json.loads(base64.b64decode(body["original"]))["task_id"] == "t-a"
    # nats stream get SCAN_DLQ --last-for scan.dlq.agent.t-a
    last = await rt.js.get_last_msg(contract.DLQ_STREAM, contract.dlq_subject("agent", "t-a"))
    assert last.seq == first
    # nats stream rmm SCAN_DLQ <seq> -f
    assert await rt.js.delete_msg(contract.DLQ_STREAM, first)


async def test_replay_needs_a_new_message_id(runtime: Runtime) -> None:
    rt = runtime
    subject = contract.request_subject("dmz", "t-replay")
    # nats pub scan.request.dmz.t-replay --jetstream -H Nats-Msg-Id:t-replay ...
    first = await rt.js.publish(subject, b"{}", headers={contract.HDR_MSG_ID: "t-replay"})
    again = await rt.js.publish(subject, b"{}", headers={contract.HDR_MSG_ID: "t-replay"})
    assert again.duplicate and again.seq == first.seq
    replay = await rt.js.publish(subject, b"{}", headers={contract.HDR_MSG_ID: "t-replay-retry1"})
    assert not replay.duplicate and replay.seq > first.seq


async def test_replay_one_tasks_event_history(runtime: Runtime) -> None:
    rt = runtime
    record = await add_task(rt, "t-hist", TaskState.QUEUED)
    other = await add_task(rt, "t-other", TaskState.QUEUED)
    for kind in (EventKind.QUEUED, EventKind.DISPATCHED, EventKind.RUNNING):
        await rt.publish_event(record, kind)
        await rt.publish_event(other, kind)
    # nats stream view SCAN_EVENTS --subject 'scan.event.t-hist.>'
    sub = await rt.js.subscribe(contract.task_events_filter("t-hist"), ordered_consumer=True)
    kinds = [contract.kind_of_event((await sub.next_msg(timeout=5)).subject) for _ in range(3)]
    assert kinds == ["queued", "dispatched", "running"]
    with pytest.raises(NatsTimeout):
        await sub.next_msg(timeout=0.5)


async def test_pause_and_resume_a_pools_consumer(runtime: Runtime) -> None:
    rt = runtime
    durable = contract.dispatch_consumer_name("dmz")
    until = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # nats consumer pause SCAN_REQUESTS dispatch-dmz <until>
    paused = await rt.js.pause_consumer(contract.REQUESTS_STREAM, durable, until)
    assert paused.paused
    await rt.js.publish(contract.request_subject("dmz", "t-maint"), b"{}")
    sub = await rt.js.pull_subscribe_bind(durable=durable, stream=contract.REQUESTS_STREAM)
    with pytest.raises(NatsTimeout):
        await sub.fetch(1, timeout=1)
    # nats consumer resume SCAN_REQUESTS dispatch-dmz
    await rt.js.resume_consumer(contract.REQUESTS_STREAM, durable)
    [msg] = await sub.fetch(1, timeout=5)
    assert msg.subject == contract.request_subject("dmz", "t-maint")


async def test_reset_the_validator_to_an_old_export(runtime: Runtime) -> None:
    rt = runtime
    seqs = [(await rt.js.publish(contract.event_subject(f"t-x{i}", "exported"), b"{}")).seq for i in range(3)]
    sub = await rt.js.pull_subscribe_bind(durable=contract.VALIDATOR_CONSUMER, stream=contract.EVENTS_STREAM)
    for msg in await sub.fetch(3, timeout=5):
        await msg.ack_sync()
    # nats stream get SCAN_EVENTS --last-for scan.event.t-x1.exported  → its sequence
    old = await rt.js.get_last_msg(contract.EVENTS_STREAM, contract.event_subject("t-x1", "exported"))
    assert old.seq == seqs[1]
    # nats consumer reset SCAN_EVENTS validator --sequence <seq>   (server ≥ 2.14)
    await rt.js.reset_consumer(contract.EVENTS_STREAM, contract.VALIDATOR_CONSUMER, seq=old.seq)
    again = await sub.fetch(2, timeout=5)
    assert [m.subject for m in again] == [contract.event_subject(f"t-x{i}", "exported") for i in (1, 2)]
