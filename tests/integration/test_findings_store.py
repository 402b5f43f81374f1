"""The validator writes each task's findings store on a real nats-server; the gateway pages through it.

Exports go through the real path: object store ``scan_exports``, an ``exported`` event on SCAN_EVENTS,
the validator's durable consumer, then ``get_scan_results`` / ``get_host_summary`` / ``get_finding``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from lxml import etree
from nats.js.errors import NotFoundError

from scanfleet.common import contract
from scanfleet.common.messages import DeadLetter
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.gateway.errors import GatewayError
from scanfleet.gateway.results import Results
from scanfleet.gateway.status import StatusView
from scanfleet.validator import metrics
from scanfleet.validator.service import Validator
from tests.helpers import MALFORMED, make_caller, make_gateway, submit_export, task_events

TERMINAL = {"completed", "failed"}
CALLER = make_caller()


@pytest.fixture
async def validator(runtime: Runtime) -> AsyncIterator[Validator]:
    service = Validator(runtime)
    task = asyncio.create_task(service.run())
    yield service
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    assert done, "the validator did not stop when cancelled"


async def wait_terminal(rt: Runtime, task_id: str, within: float = 30.0) -> TaskRecord:
    await task_events(rt.js, task_id, TERMINAL, within)
    record = await rt.tasks.get(task_id)
    assert record is not None
    return record


def lxml_items(corpus: Path, name: str) -> list[Any]:
    return list(etree.parse(str(corpus / name)).iter("ReportItem"))


async def test_pages_cover_every_match_once_in_order(corpus: Path, runtime: Runtime, validator: Validator) -> None:
    name = "mitre-saf__nessus_sample.nessus"
    task_id = await submit_export(runtime, (corpus / name).read_bytes(), hosts=3)
    record = await wait_terminal(runtime, task_id)
    assert record.state is TaskState.COMPLETED
    assert record.findings is not None and record.findings.count == 420
    results = Results(make_gateway(runtime))
    seen: list[tuple[str, int, int]] = []
    cursor = None
    pages = 0
    while True:
        page = await results.scan_results(CALLER, task_id, filters={"severity": ">=3"}, page_size=7, cursor=cursor)
        assert page["summary"]["matched"] == 333
        assert page["summary"]["severity_counts"] == {"critical": 0, "high": 333, "medium": 6, "low": 42, "info": 39}
        seen += [(f["host"], f["port"], f["plugin_id"]) for f in page["findings"]]
        assert all(f["severity"] == 3 for f in page["findings"])
        pages += 1
        cursor = page["page"]["next_cursor"]
        if cursor is None:
            break
    assert pages == 48
    expected = sorted(
        (item.getparent().get("name"), int(item.get("port")), int(item.get("pluginID")))
        for item in lxml_items(corpus, name)
        if item.get("severity") == "3"
    )
    assert sorted(seen) == expected
    assert len(set(seen)) == len(seen) or len(expected) != len(set(expected))
    assert results.cache.loads == 1

    first = await results.scan_results(CALLER, task_id, filters={"severity": ">=3"}, page_size=7)
    with pytest.raises(GatewayError) as info:
        await results.scan_results(CALLER, task_id, filters={"severity": ">=2"}, cursor=first["page"]["next_cursor"])
    assert info.value.code == "cursor_mismatch"


async def test_host_summary_and_finding(corpus: Path, runtime: Runtime, validator: Validator) -> None:
    name = "mitre-saf__sample.nessus"
    task_id = await submit_export(runtime, (corpus / name).read_bytes(), scan_type="authenticated", hosts=3)
    record = await wait_terminal(runtime, task_id)
    assert record.state is TaskState.COMPLETED
    assert record.results is not None and record.results.auth_status == "partial"
    results = Results(make_gateway(runtime))
    listing = await results.host_summary(CALLER, task_id)
    assert {h["host"]: h["auth"] for h in listing["hosts"]} == {
        "10.0.0.1": "failed",
        "10.0.0.2": "failed",
        "10.0.0.3": "success",
    }
    one = await results.host_summary(CALLER, task_id, "10.0.0.3")
    assert one["credentialed_checks"] == "yes (on the localhost)"
    assert any("141118" in e for e in one["auth_evidence"])

    item = next(
        i for i in lxml_items(corpus, name) if i.get("pluginID") == "19506" and i.getparent().get("name") == "10.0.0.3"
    )
    got = await results.finding(CALLER, task_id, "10.0.0.3", 19506)
    (finding,) = got["findings"]
    assert finding["plugin_output"] == item.findtext("plugin_output")
    assert finding["description"] == item.findtext("description")
    with pytest.raises(GatewayError) as info:
        await results.finding(CALLER, task_id, "10.0.0.99", 19506)
    assert info.value.code == "host_not_found" and "10.0.0.3" in info.value.details["hosts"]


async def test_failed_authentication_fails_task_but_keeps_findings(
    corpus: Path, runtime: Runtime, validator: Validator
) -> None:
    before = metrics.AUTH_FAILURES.labels(pool="default", scan_type="authenticated")._value.get()
    data = (corpus / "python-libnessus__nessus_report_local_3.nessus").read_bytes()
    task_id = await submit_export(runtime, data, scan_type="authenticated", hosts=3)
    record = await wait_terminal(runtime, task_id)
    assert record.state is TaskState.FAILED and record.error_reason == "auth_failed"
    assert record.troubleshooting["next_steps"]
    assert metrics.AUTH_FAILURES.labels(pool="default", scan_type="authenticated")._value.get() == before + 1
    page = await Results(make_gateway(runtime)).scan_results(CALLER, task_id, filters={"severity": "critical"})
    assert page["summary"]["authentication_status"] == "failed"
    assert "authentication failed" in page["summary"]["warning"]
    assert page["summary"]["matched"] == 2


def hostile_exports(corpus: Path) -> Iterator[tuple[str, bytes, str]]:
    good = (corpus / "sner4__parser-nessus-simple.nessus").read_bytes()
    yield (
        "malformed_corpus_file",
        (corpus / MALFORMED).read_bytes(),
        "xml_invalid",
    )
    yield (
        "xml_bomb",
        b'<?xml version="1.0"?><!DOCTYPE NessusClientData_v2 [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(9))
        + b"]><NessusClientData_v2><Report name='r'><ReportHost name='h'><ReportItem severity='0' pluginID='1'>"
        b"<plugin_output>&j;</plugin_output></ReportItem></ReportHost></Report></NessusClientData_v2>",
        "xml_forbidden",
    )
    yield (
        "external_entity",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<NessusClientData_v2><Report name='&x;'/></NessusClientData_v2>",
        "xml_forbidden",
    )
    yield "wrong_root", good.replace(b"NessusClientData_v2", b"NessusClientData"), "wrong_root"
    yield (
        "huge_attribute",
        b"<NessusClientData_v2><Report name='r'><ReportHost name='h'><ReportItem severity='0' pluginID='1' "
        b"pluginName='" + b"A" * 200_000 + b"'/></ReportHost></Report></NessusClientData_v2>",
        "too_large",
    )
    yield "truncated", good[: len(good) // 2], "xml_invalid"


async def test_hostile_exports_fail_with_reason_and_dead_letter(
    corpus: Path, runtime: Runtime, validator: Validator
) -> None:
    cases = list(hostile_exports(corpus))
    tasks = {await submit_export(runtime, data): (label, reason) for label, data, reason in cases}
    for task_id, (label, reason) in tasks.items():
        record = await wait_terminal(runtime, task_id)
        assert record.state is TaskState.FAILED, label
        assert record.error_reason == reason, (label, record.error)
        assert record.findings is None
        msg = await runtime.js.get_last_msg(contract.DLQ_STREAM, contract.dlq_subject("validator", task_id))
        letter = msgspec.json.decode(msg.data or b"", type=DeadLetter)
        assert letter.reason == reason
        with pytest.raises(GatewayError) as info:
            await Results(make_gateway(runtime)).scan_results(CALLER, task_id)
        assert info.value.code == "no_results"
    assert metrics.VALIDATION_FAILURES.labels(pool="default", reason="xml_forbidden")._value.get() >= 2

    after = await submit_export(runtime, (corpus / "sner4__parser-nessus-simple.nessus").read_bytes(), hosts=2)
    record = await wait_terminal(runtime, after)
    assert record.state is TaskState.COMPLETED
    results = Results(make_gateway(runtime))
    both = await results.scan_results(CALLER, after, filters={"host": "127.128.129.130"})
    assert both["summary"]["matched"] == 2, "both ReportHosts of this file carry host-ip 127.128.129.130"
    alias = await results.scan_results(CALLER, after, filters={"host": "serveralias.localhost"})
    assert [f["plugin_id"] for f in alias["findings"]] == [19506]


ZERO_HOSTS = b"<NessusClientData_v2><Report name='r'/></NessusClientData_v2>"


async def test_an_export_without_hosts_is_a_result_not_a_broken_export(runtime: Runtime, validator: Validator) -> None:
    """No host answered: an untrusted scan completes with zero hosts and a warning; an
    authenticated one fails (no host to log in to). Neither leaves a dead letter."""
    untrusted = await submit_export(runtime, ZERO_HOSTS)
    record = await wait_terminal(runtime, untrusted)
    assert record.state is TaskState.COMPLETED, record.error
    assert record.results is not None and record.results.hosts_scanned == 0
    assert any("scanner can reach them" in w for w in record.warnings)
    status = await StatusView(make_gateway(runtime), Results(make_gateway(runtime))).status(CALLER, untrusted)
    assert status["digest"]["hosts_scanned"] == 0 and status["digest"]["top_findings"] == []
    assert "No host answered" in status["digest"]["next"]

    authenticated = await submit_export(runtime, ZERO_HOSTS, scan_type="authenticated")
    record = await wait_terminal(runtime, authenticated)
    assert record.state is TaskState.FAILED
    assert record.error_reason == "no_hosts"
    assert record.error is not None and "no host to log in to" in record.error
    for task_id in (untrusted, authenticated):
        with pytest.raises(NotFoundError):
            await runtime.js.get_last_msg(contract.DLQ_STREAM, contract.dlq_subject("validator", task_id))
