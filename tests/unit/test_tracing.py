"""Tracing helpers with an in-memory exporter: messaging spans, redelivery links, HTTP client spans."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from scanfleet.common import bus, contract, telemetry

EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_scanfleet_test_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        provider._scanfleet_test_exporter = True  # type: ignore[attr-defined]
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


class FakeAck:
    stream = "SCAN_EVENTS"
    seq = 42
    duplicate = False


class FakeJetStream:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, dict[str, str]]] = []

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> FakeAck:
        self.published.append((subject, payload, headers))
        return FakeAck()


def delivery(subject: str, headers: dict[str, str], delivered: int) -> Msg:
    reply = f"$JS.ACK.SCAN_EVENTS.validator.{delivered}.42.7.1700000000000000000.3"
    return Msg(_client=None, subject=subject, reply=reply, data=b"{}", headers=headers)  # type: ignore[arg-type]


def by_name(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    return next(s for s in exporter.get_finished_spans() if s.name == name)


async def test_publish_is_a_producer_span_whose_context_the_consumer_continues(spans: InMemorySpanExporter) -> None:
    js = FakeJetStream()
    subject = "scan.event.t1.exported"
    with trace.get_tracer("test").start_as_current_span("submit"):
        await bus.publish(js, subject, b"payload", {"Nats-Msg-Id": "export:t1"})  # type: ignore[arg-type]
    ((_, _, headers),) = js.published
    assert headers["Nats-Msg-Id"] == "export:t1" and headers["traceparent"].startswith("00-")

    with telemetry.consumer_span(delivery(subject, headers, 1), "validate export"):
        pass
    producer = by_name(spans, "publish scan.event.*.*")
    consumer = by_name(spans, "validate export")
    assert producer.kind is SpanKind.PRODUCER and consumer.kind is SpanKind.CONSUMER
    assert producer.attributes is not None and consumer.attributes is not None
    assert producer.attributes["messaging.system"] == "nats"
    assert producer.attributes["messaging.message.id"] == "export:t1"
    assert producer.attributes["messaging.nats.sequence"] == 42
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == producer.context.trace_id == by_name(spans, "submit").context.trace_id
    expected: dict[str, Any] = {
        "messaging.operation": "process",
        "messaging.destination.name": subject,
        "messaging.consumer.group.name": "validator",
        "messaging.nats.stream": "SCAN_EVENTS",
        "messaging.nats.sequence.stream": 42,
        "messaging.nats.num_delivered": 1,
    }
    assert {k: consumer.attributes[k] for k in expected} == expected
    assert not consumer.links


async def test_a_redelivery_links_to_the_message_and_counts_deliveries(spans: InMemorySpanExporter) -> None:
    js = FakeJetStream()
    await bus.publish(js, "scan.assign.p.i.t2", b"x", {})  # type: ignore[arg-type]
    headers = js.published[0][2]
    with telemetry.consumer_span(delivery("scan.assign.p.i.t2", headers, 3), "run scan"):
        pass
    run = by_name(spans, "run scan")
    producer = by_name(spans, "publish scan.assign.*.*.*")
    assert run.attributes is not None and run.attributes["messaging.nats.num_delivered"] == 3
    (link,) = run.links
    assert link.context.span_id == producer.context.span_id
    assert link.attributes is not None and link.attributes["messaging.nats.num_delivered"] == 3


def test_work_resumed_without_headers_joins_its_trace(spans: InMemorySpanExporter) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with telemetry.consumer_span(None, "run scan", trace_id=trace_id):
        assert telemetry.current_trace_id() == trace_id
    with telemetry.consumer_span(delivery("scan.assign.p.i.t3", {}, 1), "run scan", trace_id=trace_id):
        assert telemetry.current_trace_id() == trace_id
    assert telemetry.context_for_trace("not hex") is None


def test_http_client_spans_exist_only_inside_a_trace_and_hide_ids_and_tokens(spans: InMemorySpanExporter) -> None:
    with telemetry.http_client_span("GET", "https", "nessus", 8834, "/server/properties") as span:
        assert span is None
    with trace.get_tracer("test").start_as_current_span("run scan"):
        path = "/tokens/0123abcdef0123abcdef/download"
        with telemetry.http_client_span("GET", "https", "nessus", 8834, path) as span:
            telemetry.record_http_status(span, 503)
    client = by_name(spans, "GET /tokens/{token}/download")
    assert client.kind is SpanKind.CLIENT and client.attributes is not None
    assert client.attributes["http.response.status_code"] == 503 and client.attributes["error.type"] == "503"
    assert "0123abcdef" not in str(dict(client.attributes)) + client.name
    assert not any("header" in key for key in client.attributes)


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/scans/12/export/7/download", "/scans/{id}/export/{id}/download"),
        ("/scans", "/scans"),
        ("/tokens/abc/download", "/tokens/{token}/download"),
    ],
)
def test_url_template(path: str, template: str) -> None:
    assert telemetry.url_template(path) == template


@pytest.mark.parametrize(
    ("env", "choice"),
    [
        ({}, "none"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, "none"),
    ],
)
def test_exporter_choice(env: dict[str, str], choice: str) -> None:
    assert telemetry.exporter_choice(env) == choice


def test_destination_template() -> None:
    assert contract.subject_template("scan.request.default.abc") == "scan.request.*.*"
    assert contract.subject_template("$KV.scan_expiry.t1") == "$KV.scan_expiry.*"
    advisory = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.SCAN_REQUESTS.dispatch-default"
    assert contract.subject_template(advisory) == "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.*"
