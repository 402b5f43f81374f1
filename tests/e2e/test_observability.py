"""Observability of the running stack: one trace per scan across all five services, received
by a real OTLP/HTTP endpoint; live metrics on every service's /metrics; /health and /ready."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from prometheus_client.parser import text_string_to_metric_families

from scanfleet.cli.stack import SERVICES, Stack, StackOptions
from tests.helpers import arest, mcp_client, running_stack, tool_json, until, wait_terminal

pytestmark = pytest.mark.e2e

SSH_PASSWORD = "observability-pw-6c1f"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    links: list[str]


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which else None


@dataclass
class OtlpReceiver:
    """A minimal OTLP/HTTP trace endpoint: POST /v1/traces, protobuf, kept in memory."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    received.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name")),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=[link.span_id.hex() for link in span.links],
                        )
                    )
        with self.lock:
            self.spans.extend(received)

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[OtlpReceiver, str]]:
    store = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
            else:
                store.add(body)
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield store, f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, receiver: tuple[OtlpReceiver, str]) -> Iterator[Stack]:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver[1], "OTEL_BSP_SCHEDULE_DELAY": "100"}
    options = StackOptions(
        data_dir=tmp_path_factory.mktemp("observed"),
        scan_duration=1.0,
        poll_interval=0.2,
        ssh_accounts={"root": SSH_PASSWORD},
        extra_env=env,
    )
    yield from running_stack(options)


async def fleet_usable(stack: Stack, count: int = 3) -> None:
    async with arest(stack) as http:

        async def usable() -> bool:
            return bool(sum(s["usable"] for s in (await http.get("/v1/scanners")).json()["scanners"]) >= count)

        await until(usable, f"{count} usable scanners", within=30.0, every=0.2)


async def scrape(stack: Stack, service: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{stack.service_url(service)}/metrics")).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_one_scan_is_one_trace_across_all_five_services(
    observed: Stack, receiver: tuple[OtlpReceiver, str]
) -> None:
    await fleet_usable(observed)
    async with mcp_client(observed) as mcp:
        submitted = tool_json(await mcp.call_tool("run_untrusted_scan", {"targets": "10.80.0.1", "name": "traced"}))
    trace_id, task_id = submitted["trace_id"], submitted["task_id"]
    assert (await wait_terminal(observed, task_id))[-1] == "completed"

    wanted = {f"scanfleet-{s}" for s in SERVICES}

    async def exported() -> bool:
        spans = receiver[0].of_trace(trace_id)
        return {s.service for s in spans} >= wanted and any(s.service == "scanfleet-janitor" for s in spans)

    await until(exported, "spans of every service", within=20.0, every=0.2)
    spans = receiver[0].of_trace(trace_id)
    janitor = [s for s in spans if s.service == "scanfleet-janitor"]
    assert {s.service for s in spans} == wanted
    by_id = {s.span_id: s for s in spans}

    producer, consumer, client = 4, 5, 3
    request_publish = next(
        s for s in spans if s.kind == producer and s.attributes["messaging.destination.template"] == "scan.request.*.*"
    )
    assert request_publish.service == "scanfleet-gateway"
    assert request_publish.attributes["messaging.system"] == "nats"
    assert request_publish.attributes["messaging.message.id"] == task_id
    dispatch = next(s for s in spans if s.service == "scanfleet-dispatcher" and s.kind == consumer)
    assert dispatch.parent_span_id == request_publish.span_id
    assert dispatch.attributes["messaging.destination.name"] == f"scan.request.default.{task_id}"
    assert dispatch.attributes["messaging.consumer.group.name"] == "dispatch-default"
    assert dispatch.attributes["messaging.nats.num_delivered"] == 1

    run = next(s for s in spans if s.service == "scanfleet-agent" and s.kind == consumer)
    assert by_id[run.parent_span_id].service == "scanfleet-dispatcher"
    nessus_calls = [s for s in spans if s.kind == client]
    assert {s.service for s in nessus_calls} == {"scanfleet-agent"}
    routes = {s.attributes["url.template"] for s in nessus_calls}
    assert {"/scans", "/scans/{id}/launch", "/scans/{id}/export"} <= routes, routes
    assert all(s.attributes["http.response.status_code"] < 400 for s in nessus_calls)

    validate = next(s for s in spans if s.service == "scanfleet-validator" and s.kind == consumer)
    assert by_id[validate.parent_span_id].service == "scanfleet-agent"
    assert validate.attributes["messaging.destination.name"] == f"scan.event.{task_id}.exported"
    ended = next(
        s for s in janitor if s.attributes.get("messaging.destination.name") == f"scan.event.{task_id}.completed"
    )
    assert by_id[ended.parent_span_id].service == "scanfleet-validator"

    secrets = {v for pair in observed.secrets.values() for v in pair}
    for span in spans:
        assert not any(str(secret) in str(span.attributes) for secret in secrets), span
        assert not any("header" in key or "cookie" in key.lower() for key in span.attributes), span


async def test_metrics_are_live_after_a_success_and_failures(observed: Stack) -> None:
    await fleet_usable(observed)
    before = {s: await scrape(observed, s) for s in SERVICES}
    async with mcp_client(observed) as mcp:
        ok = tool_json(await mcp.call_tool("run_untrusted_scan", {"targets": "10.81.0.1", "name": "fine"}))
        wrong = tool_json(
            await mcp.call_tool(
                "run_authenticated_scan",
                {"targets": "10.81.0.2", "name": "wrong login", "username": "nobody", "password": SSH_PASSWORD},
            )
        )
        missing = tool_json(
            await mcp.call_tool(
                "run_authenticated_scan", {"targets": "10.81.0.3", "name": "no such ref", "credential_ref": "absent"}
            )
        )
    ends = [(await wait_terminal(observed, t["task_id"]))[-1] for t in (ok, wrong, missing)]
    assert ends == ["completed", "failed", "failed"]

    def grew(service: str, name: str, by: float, **labels: str) -> bool:
        return value(after[service], name, **labels) - value(before[service], name, **labels) >= by

    after: dict[str, dict[tuple[str, frozenset[tuple[str, str]]], float]] = {}

    async def counted() -> bool:
        after.update({s: await scrape(observed, s) for s in SERVICES})
        return grew("janitor", "nessus_scans_total", 2, scan_type="authenticated", pool="default", status="failed")

    await until(counted, "the janitor to count both failures", within=20.0, every=0.2)

    assert grew("gateway", "nessus_scans_total", 1, scan_type="untrusted", pool="default", status="queued")
    assert grew("gateway", "nessus_scans_total", 2, scan_type="authenticated", pool="default", status="queued")
    assert grew("janitor", "nessus_scans_total", 1, scan_type="untrusted", pool="default", status="completed")
    assert grew(
        "janitor", "nessus_task_duration_seconds_count", 1, scan_type="untrusted", pool="default", status="completed"
    )
    assert grew("validator", "nessus_validation_total", 1, pool="default", result="success")
    assert grew("validator", "nessus_validation_failures_total", 1, pool="default", reason="auth_failed")
    assert grew("validator", "nessus_auth_failures_total", 1, pool="default", scan_type="authenticated")

    async def dead_lettered() -> bool:
        if value(after["janitor"], "nessus_pool_dlq_depth", pool="default") >= 1:
            return True
        after["janitor"] = await scrape(observed, "janitor")
        return False

    await until(dead_lettered, "the pool's dead-letter depth", within=20.0, every=0.2)
    assert value(after["janitor"], "nessus_dlq_size") >= value(
        after["janitor"], "nessus_pool_dlq_depth", pool="default"
    )

    fleet = after["dispatcher"]
    for scanner in observed.options.fleet:
        labels = {"pool": scanner.pool, "scanner_instance": f"{scanner.pool}:{scanner.id}"}
        assert value(fleet, "nessus_scanner_capacity", **labels) == scanner.max_concurrent_scans
        assert value(fleet, "nessus_scanner_agent_alive", **labels) == 1
        assert value(fleet, "nessus_scanner_enabled", **labels) == 1
        assert value(fleet, "nessus_circuit_state", **labels) == 0
    default_capacity = sum(s.max_concurrent_scans for s in observed.options.fleet if s.pool == "default")
    assert value(fleet, "nessus_pool_total_capacity", pool="default") == default_capacity
    assert value(fleet, "nessus_pool_queue_depth", pool="default") == 0
    for service in SERVICES:
        assert value(after[service], "nessus_nats_connected", service=service) == 1, service


async def test_every_service_is_alive_and_ready(observed: Stack) -> None:
    await fleet_usable(observed)
    async with httpx.AsyncClient(timeout=5) as http:
        for service in SERVICES:
            assert (await http.get(f"{observed.service_url(service)}/health")).json()["status"] == "alive"
            ready = await http.get(f"{observed.service_url(service)}/ready")
            assert ready.status_code == 200, (service, ready.text)
            checks = ready.json()["checks"]
            assert checks["nats"] is True and checks["streams"] is True, (service, checks)
        agent = (await http.get(f"{observed.service_url('agent')}/ready")).json()
        assert agent["checks"]["scanners_reachable"] is True
        dispatcher = (await http.get(f"{observed.service_url('dispatcher')}/ready")).json()
        assert dispatcher["checks"]["fleet_mirror"] is True
