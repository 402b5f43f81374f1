"""Every source of dead letters lands in SCAN_DLQ with the fields an operator needs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from scanfleet.agent.instance import InstanceAgent, Work
from scanfleet.agent.lifecycle import PermanentFailure
from scanfleet.common import admin_ops as admin
from scanfleet.common import contract
from scanfleet.common.admin_ops import StoredLetter
from scanfleet.common.bus import put_object_stream
from scanfleet.common.config import ScannerAuth, ScannerConfig
from scanfleet.common.contract import EventKind
from scanfleet.common.messages import (
    Assignment,
    ExportEvent,
    ScanRequest,
    SealedCredentials,
    encode,
    utcnow,
)
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.validator.service import Validator
from tests.helpers import add_task, until, watch_until

SEALED = SealedCredentials(key_id="k1", nonce="bm9uY2U=", ciphertext="c2VjcmV0LXBhc3N3b3Jk")


async def letters_for(rt: Runtime, task_id: str, count: int = 1) -> list[StoredLetter]:
    async def arrived() -> bool:
        return len(await admin.list_letters(rt, task_id=task_id)) >= count

    await until(arrived, f"{count} dead letter(s) for {task_id}", within=15.0)
    return await admin.list_letters(rt, task_id=task_id)


def request_for(task_id: str, pool: str = "default") -> ScanRequest:
    return ScanRequest(
        task_id=task_id,
        trace_id="cd" * 16,
        pool=pool,
        scan_type="authenticated",
        targets=["10.1.0.1"],
        name="n",
        credentials=SEALED,
        submitted_at=utcnow(),
    )


async def fetch_one(rt: Runtime, stream: str, durable: str) -> Msg:
    sub = await rt.js.pull_subscribe_bind(durable=durable, stream=stream)
    return (await sub.fetch(1, timeout=5))[0]


async def test_max_deliveries_moves_the_request_and_ends_the_task(janitor: Runtime) -> None:
    rt = janitor
    await rt.js.add_consumer(
        contract.REQUESTS_STREAM,
        ConsumerConfig(
            durable_name="dispatch-lab",
            filter_subject=contract.pool_request_filter("lab"),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=1.0,
            max_deliver=2,
        ),
    )
    record = await add_task(rt, "t-maxdel", TaskState.QUEUED)
    ack = await rt.js.publish(
        contract.request_subject("lab", record.task_id),
        encode(request_for(record.task_id, "lab")),
        headers={contract.HDR_TASK_ID: record.task_id},
    )
    sub = await rt.js.pull_subscribe_bind(durable="dispatch-lab", stream=contract.REQUESTS_STREAM)
    delivered = 0
    while delivered < 2:  # take it twice and never ack; the next pull makes the server give up
        delivered += len(await sub.fetch(1, timeout=5))
    with contextlib.suppress(NatsTimeout):
        await sub.fetch(1, timeout=2)

    [letter] = await letters_for(rt, record.task_id)
    assert (letter.stage, letter.reason, letter.attempts) == ("dispatch", "max_deliveries", 2)
    assert letter.trace_id == "cd" * 16
    assert letter.original_stream == contract.REQUESTS_STREAM and letter.original_seq == ack.seq
    assert letter.original["targets"] == ["10.1.0.1"] and "credentials" not in letter.original
    assert "c2VjcmV0" not in str(letter.original)
    assert letter.failed_at.tzinfo is not None

    await watch_until(rt.tasks.kv, record.task_id, TaskRecord, lambda r: r.state is TaskState.FAILED, within=15.0)
    assert (await rt.tasks.get(record.task_id)).error_reason == "max_deliveries"  # type: ignore[union-attr]
    try:
        await rt.js.get_msg(contract.REQUESTS_STREAM, ack.seq)
        raise AssertionError("the original is still in the work queue")
    except NotFoundError:
        pass


async def test_operator_termination_is_copied_with_its_reason(janitor: Runtime) -> None:
    rt = janitor
    await rt.js.add_consumer(
        contract.EVENTS_STREAM,
        ConsumerConfig(durable_name="ops-test", filter_subject="scan.event.t-term.>", ack_policy=AckPolicy.EXPLICIT),
    )
    record = await add_task(rt, "t-term", TaskState.RUNNING)
    await rt.publish_event(record, EventKind.RUNNING)
    msg = await fetch_one(rt, contract.EVENTS_STREAM, "ops-test")
    await rt.nc.publish(msg.reply, b"+TERM operator says no")

    [letter] = await letters_for(rt, record.task_id)
    assert (letter.stage, letter.reason) == ("janitor", "terminated")
    assert "operator says no" in letter.error
    assert letter.original["kind"] == "running" and letter.trace_id == record.trace_id


def agent_for(rt: Runtime) -> InstanceAgent:
    scanner = ScannerConfig(id="scanner-1", url="http://127.0.0.1:9", auth=ScannerAuth(access_key="a", secret_key="b"))
    return InstanceAgent(rt, "default", scanner, "agent-test")


async def test_unparseable_message_lands_once_despite_the_terminated_advisory(janitor: Runtime) -> None:
    rt = janitor
    ack = await rt.js.publish(contract.assignment_subject("default", "scanner-1", "t-garbage"), b"{not json")
    msg = await fetch_one(rt, contract.ASSIGNMENTS_STREAM, contract.agent_consumer_name("default", "scanner-1"))
    await agent_for(rt).handle(msg)

    [letter] = await letters_for(rt, "unknown")
    assert (letter.stage, letter.reason, letter.task_id) == ("agent", "unparseable", None)
    assert letter.original_seq == ack.seq and letter.original == "<unparseable message withheld>"

    # The advisory for the +TERM arrives and is handled; its copy must be a duplicate.
    async def advised() -> bool:
        stored = (await rt.js.stream_info(contract.ADVISORIES_STREAM)).state.messages
        info = await rt.js.consumer_info(contract.ADVISORIES_STREAM, contract.JANITOR_ADVISORIES_CONSUMER)
        return stored >= 1 and info.num_pending == 0 and info.num_ack_pending == 0

    await until(advised, "the advisory to be handled", within=15.0)
    assert len(await admin.list_letters(rt, task_id="unknown")) == 1


async def test_agent_give_up_carries_the_assignment_without_credentials(janitor: Runtime) -> None:
    rt = janitor
    record = await add_task(rt, "t-agent", TaskState.RUNNING)
    assignment = Assignment(
        task_id=record.task_id,
        trace_id=record.trace_id,
        pool="default",
        instance="scanner-1",
        request=request_for(record.task_id),
        assigned_at=utcnow(),
    )
    await rt.js.publish(contract.assignment_subject("default", "scanner-1", record.task_id), encode(assignment))
    msg = await fetch_one(rt, contract.ASSIGNMENTS_STREAM, contract.agent_consumer_name("default", "scanner-1"))
    agent = agent_for(rt)
    work = Work()
    work.msgs.append(msg)
    await agent._fail(assignment, work, PermanentFailure("scanner_auth", "the scanner refused the API keys"))

    [letter] = await letters_for(rt, record.task_id)
    assert (letter.stage, letter.reason, letter.attempts) == ("agent", "scanner_auth", 1)
    assert letter.trace_id == record.trace_id
    assert letter.original["request"]["targets"] == ["10.1.0.1"]
    assert "credentials" not in letter.original["request"]
    assert (await rt.tasks.get(record.task_id)).state is TaskState.FAILED  # type: ignore[union-attr]


async def test_validator_rejection_is_dead_lettered(janitor: Runtime) -> None:
    rt = janitor
    record = await add_task(rt, "t-valid", TaskState.EXPORTING)

    async def body() -> AsyncIterator[bytes]:
        yield b"<NessusClientData_v2></NessusClientData_v2>"

    stored = await put_object_stream(rt.js, contract.EXPORTS_OBJECTS, contract.export_object_name("t-valid"), body())
    event = ExportEvent(
        task_id=record.task_id,
        trace_id=record.trace_id,
        pool="default",
        instance="scanner-1",
        scan_type="untrusted",
        expected_hosts=1,
        object_name=stored.name,
        size=stored.size,
        sha256="0" * 64,  # not what was stored
        nessus_scan_id=7,
        exported_at=utcnow(),
    )
    await rt.js.publish(contract.event_subject(record.task_id, "exported"), encode(event))
    msg = await fetch_one(rt, contract.EVENTS_STREAM, contract.VALIDATOR_CONSUMER)
    await Validator(rt).handle(msg)

    [letter] = await letters_for(rt, record.task_id)
    assert (letter.stage, letter.reason) == ("validator", "checksum_mismatch")
    assert letter.trace_id == record.trace_id and letter.original["sha256"] == "0" * 64
    assert (await rt.tasks.get(record.task_id)).state is TaskState.FAILED  # type: ignore[union-attr]
    await asyncio.sleep(0)
