"""Re-validating old exports on a real nats-server: the runbook's consumer reset does real work.

Each test validates an export through the validator's durable consumer, stops the validator, rewinds
its consumer (``js.reset_consumer`` to the export event's sequence, as ``nats consumer reset`` does)
and starts a validator again: with a new version it recomputes the ended task's results, with the
same version over the same export it skips, and a changed export is caught by its checksum.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from scanfleet.common import contract
from scanfleet.common.bus import put_object_stream
from scanfleet.common.findings import decode_hosts
from scanfleet.common.messages import DeadLetter, TaskEvent
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.validator.service import Validator
from tests.helpers import submit_export, task_events, until


@pytest.fixture
def export(corpus: Path) -> bytes:
    return (corpus / "mitre-saf__sample.nessus").read_bytes()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def start_validator(rt: Runtime, version: str) -> tuple[Validator, asyncio.Task[None]]:
    service = Validator(rt, version=version, parse_workers=0)
    return service, asyncio.create_task(service.run())


async def stop(rt: Runtime, task: asyncio.Task[None], within: float = 10.0) -> None:
    """Stop a validator and wait for its pull requests to lapse.

    A cancelled ``fetch`` can swallow the cancellation (asyncio.wait_for before 3.12), so cancel
    until the task ends. A pull request the stopped validator left on the server would otherwise
    take the rewound event for a client that is gone, until the consumer's ack wait.
    """
    deadline = time.monotonic() + within
    while not task.done():
        if time.monotonic() > deadline:
            pytest.fail("the validator did not stop")
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)

    async def lapsed() -> bool:
        info = await rt.js.consumer_info(contract.EVENTS_STREAM, contract.VALIDATOR_CONSUMER)
        return not info.num_waiting

    await until(lapsed, "the stopped validator's pull requests to expire", within=within, every=0.1)


async def submit(rt: Runtime, data: bytes) -> tuple[str, int]:
    """A task in ``exporting``, its stored export and the ``exported`` event; returns the event's sequence."""
    task_id = await submit_export(rt, data)
    event = await rt.js.get_last_msg(contract.EVENTS_STREAM, contract.event_subject(task_id, "exported"))
    return task_id, int(event.seq or 0)


async def next_event(rt: Runtime, task_id: str, kinds: set[str], within: float = 20.0) -> TaskEvent:
    """The first event of ``kinds`` for the task, replayed from the start of SCAN_EVENTS."""
    async with asyncio.timeout(within):
        events = await task_events(rt.js, task_id, kinds, within)
    return msgspec.json.decode(events[-1].data, type=TaskEvent)


async def events_of(rt: Runtime, task_id: str) -> list[str]:
    info = await rt.js.stream_info(contract.EVENTS_STREAM, subjects_filter=contract.task_events_filter(task_id))
    return sorted(kind for subject in info.state.subjects or {} if (kind := contract.kind_of_event(subject)))


async def drained(rt: Runtime, within: float = 20.0) -> None:
    """Wait until the validator's consumer has acknowledged everything it was given."""

    async def acknowledged() -> bool:
        info = await rt.js.consumer_info(contract.EVENTS_STREAM, contract.VALIDATOR_CONSUMER)
        return info.num_pending == 0 and info.num_ack_pending == 0 and bool(info.delivered.stream_seq)

    await until(acknowledged, "the validator consumer to drain", within=within, every=0.1)


async def validated(rt: Runtime, data: bytes, version: str = "v-a") -> tuple[str, int, TaskRecord]:
    _, task = await start_validator(rt, version)
    try:
        task_id, seq = await submit(rt, data)
        await next_event(rt, task_id, {"completed", "failed"})
    finally:
        await stop(rt, task)
    record = await rt.tasks.get(task_id)
    assert record is not None
    return task_id, seq, record


async def test_first_validation_stamps_version_and_export(runtime: Runtime, export: bytes) -> None:
    _, _, record = await validated(runtime, export)
    assert record.state is TaskState.COMPLETED
    assert record.validation is not None
    assert record.validation.validator_version == "v-a"
    assert record.validation.export_sha256 == hashlib.sha256(export).hexdigest()
    assert record.validation.revalidated_at is None


async def test_rewound_consumer_with_a_new_version_recomputes_results(runtime: Runtime, export: bytes) -> None:
    task_id, seq, before = await validated(runtime, export)
    assert before.results is not None and before.findings is not None
    # Damage what validation produced, so only a real recomputation can bring it back.
    findings_store = await runtime.js.object_store(contract.FINDINGS_OBJECTS)
    await findings_store.delete(before.findings.hosts_object)

    def damage(r: TaskRecord) -> None:
        assert r.results is not None
        r.results.total_items = -1
        r.results.hosts = []

    await runtime.tasks.update(task_id, damage)

    await runtime.js.reset_consumer(contract.EVENTS_STREAM, contract.VALIDATOR_CONSUMER, seq)
    _, task = await start_validator(runtime, "v-b")
    try:
        event = await next_event(runtime, task_id, {"revalidated"})
    finally:
        await stop(runtime, task)

    after = await runtime.tasks.get(task_id)
    assert after is not None and after.validation is not None
    assert event.state == "completed" and after.state is TaskState.COMPLETED
    assert after.finished_at == before.finished_at
    assert after.results == before.results
    assert after.validation.validator_version == "v-b"
    assert after.validation.revalidations == 1
    assert after.validation.revalidated_at is not None and after.validation.revalidated_at > before.updated_at
    assert before.validation is not None and after.validation.validated_at == before.validation.validated_at
    assert after.findings is not None
    hosts = decode_hosts((await findings_store.get(after.findings.hosts_object)).data or b"")
    assert [h.name for h in hosts.hosts] == [h.name for h in before.results.hosts]
    assert await events_of(runtime, task_id) == ["completed", "exported", "revalidated", "validating"]


async def test_redelivery_to_the_same_version_is_skipped(runtime: Runtime, export: bytes) -> None:
    task_id, seq, before = await validated(runtime, export)
    _, revision = await runtime.tasks.read(task_id)

    await runtime.js.reset_consumer(contract.EVENTS_STREAM, contract.VALIDATOR_CONSUMER, seq)
    _, task = await start_validator(runtime, "v-a")
    try:
        await drained(runtime)
    finally:
        await stop(runtime, task)

    after, revision_after = await runtime.tasks.read(task_id)
    assert revision_after == revision
    assert after == before
    assert "revalidated" not in await events_of(runtime, task_id)


async def test_changed_export_is_caught_and_previous_results_kept(runtime: Runtime, export: bytes) -> None:
    task_id, seq, before = await validated(runtime, export)
    tampered = export.replace(b'severity="3"', b'severity="4"', 1)
    assert tampered != export
    await put_object_stream(
        runtime.js, contract.EXPORTS_OBJECTS, contract.export_object_name(task_id), _chunks(tampered)
    )
    dlq = await runtime.js.subscribe(f"scan.dlq.validator.{task_id}", ordered_consumer=True)

    await runtime.js.reset_consumer(contract.EVENTS_STREAM, contract.VALIDATOR_CONSUMER, seq)
    _, task = await start_validator(runtime, "v-a")
    try:
        await next_event(runtime, task_id, {"revalidated"})
        letter = msgspec.json.decode((await dlq.next_msg(timeout=10)).data, type=DeadLetter)
    finally:
        await stop(runtime, task)
        await dlq.unsubscribe()

    after = await runtime.tasks.get(task_id)
    assert after is not None and after.validation is not None
    assert letter.reason == "checksum_mismatch"
    assert after.state is TaskState.COMPLETED
    assert after.results == before.results and after.findings == before.findings
    assert after.validation.ok is False and after.validation.reason == "checksum_mismatch"
    assert after.validation.export_sha256 == hashlib.sha256(tampered).hexdigest()
    assert any("checksum_mismatch" in w and "stays completed" in w for w in after.warnings)


async def test_ended_without_a_validated_export_is_left_alone(runtime: Runtime, export: bytes) -> None:
    task_id, seq, _ = await validated(runtime, export)
    exports = await runtime.js.object_store(contract.EXPORTS_OBJECTS)
    await exports.delete(contract.export_object_name(task_id))
    _, revision = await runtime.tasks.read(task_id)

    await runtime.js.reset_consumer(contract.EVENTS_STREAM, contract.VALIDATOR_CONSUMER, seq)
    _, task = await start_validator(runtime, "v-b")
    try:
        await drained(runtime)
    finally:
        await stop(runtime, task)

    assert (await runtime.tasks.read(task_id))[1] == revision
    assert "revalidated" not in await events_of(runtime, task_id)
