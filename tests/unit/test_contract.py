"""Subject builders and parsers agree, and the enums keep the wire strings."""

from __future__ import annotations

from datetime import UTC, datetime

from scanfleet.common import contract
from scanfleet.common.contract import EventKind, TaskState
from scanfleet.common.tasks import TERMINAL


def test_every_task_state_is_an_event_kind_with_the_same_string() -> None:
    for state in TaskState:
        assert EventKind(state.value) == state.value


def test_terminal_kinds_follow_the_terminal_states() -> None:
    assert set(contract.TERMINAL_KINDS) == {EventKind(s) for s in TERMINAL}
    assert contract.TERMINAL_EVENT_FILTERS == [
        "scan.event.*.completed",
        "scan.event.*.failed",
        "scan.event.*.cancelled",
        "scan.event.*.timeout",
    ]


def test_parsers_invert_the_builders() -> None:
    assert contract.pool_of_request(contract.request_subject("p1", "t1")) == "p1"
    assert contract.task_of_subject(contract.request_subject("p1", "t1")) == "t1"
    assert contract.task_of_subject(contract.assignment_subject("p1", "i1", "t2")) == "t2"
    assert contract.task_of_subject(contract.event_subject("t3", EventKind.EXPORTED)) == "t3"
    assert contract.task_of_event(contract.event_subject("t3", EventKind.FAILED)) == "t3"
    assert contract.kind_of_event(contract.event_subject("t3", EventKind.FAILED)) == EventKind.FAILED
    assert contract.stage_of_dlq(contract.dlq_subject("agent", "t4")) == "agent"
    assert contract.task_of_subject(contract.dlq_subject("agent", "t4")) == "t4"
    key = contract.kv_subject(contract.EXPIRY_BUCKET, "t5")
    assert contract.key_of_kv_subject(contract.EXPIRY_BUCKET, key) == "t5"
    assert contract.instance_of_key(contract.instance_key("p1", "i1")) == "i1"


def test_parsers_refuse_other_subjects() -> None:
    assert contract.pool_of_request(contract.dlq_subject("agent", "t")) is None
    assert contract.task_of_event("scan.event.t1") is None
    assert contract.stage_of_dlq("other.dlq.agent.t") is None
    assert contract.task_of_subject("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.S.C") is None
    assert contract.key_of_kv_subject(contract.TASKS_BUCKET, contract.kv_subject(contract.EXPIRY_BUCKET, "t")) is None


def test_message_ids_keep_their_wire_format() -> None:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    assert contract.request_msg_id("t1") == "t1"
    assert contract.request_msg_id("t1", 2) == "t1-retry2"
    assert contract.assignment_msg_id("t1", 3) == "assign:t1:3"
    assert contract.event_msg_id("t1", EventKind.QUEUED, at) == f"t1:queued:{at.timestamp()}"
    assert contract.export_msg_id("t1", "ab" * 32) == "export:t1:" + "ab" * 8
    assert contract.dead_letter_msg_id("SCAN_REQUESTS", 7) == "dlq:SCAN_REQUESTS:7"
