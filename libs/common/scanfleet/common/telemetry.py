"""Tracing: one trace per scan, carried across services in NATS headers (W3C ``traceparent``).

Spans follow the OpenTelemetry messaging conventions: a PRODUCER span around every publish
(``publish``), a CONSUMER span around the processing of every delivery (``process``), with
``messaging.system=nats`` and the ``messaging.nats.*`` delivery facts. A redelivery is still
a child of the message's creation context, and also links to it with its delivery count,
so a backend shows every attempt at one message side by side.

Export: OTLP/HTTP when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``
is set (Jaeger takes OTLP/HTTP on :4318), the console when ``OTEL_TRACES_EXPORTER=console``,
nothing otherwise: ids still flow through headers, logs and tool responses.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from scanfleet.common.contract import HDR_MSG_ID, subject_template

if TYPE_CHECKING:
    from nats.aio.msg import Msg

MESSAGING_SYSTEM = "nats"
_provider: TracerProvider | None = None

Exporter = Literal["otlp", "console", "none"]


def exporter_choice(env: Mapping[str, str]) -> Exporter:
    """Which exporter the environment asks for; the standard OTEL_* variables decide."""
    explicit = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if explicit in ("otlp", "console", "none"):
        return explicit  # type: ignore[return-value]
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return "otlp"
    return "none"


def span_processor(choice: Exporter) -> SpanProcessor | None:
    if choice == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return BatchSpanProcessor(OTLPSpanExporter())
    if choice == "console":
        return BatchSpanProcessor(ConsoleSpanExporter())
    return None


def setup_tracing(service: str, env: Mapping[str, str] | None = None) -> TracerProvider:
    """Install the SDK tracer provider of this process (once) with the configured exporter."""
    global _provider
    if _provider is not None:
        return _provider
    env = os.environ if env is None else env
    resource = Resource.create({"service.name": f"scanfleet-{service}", "service.namespace": "scanfleet"})
    provider = TracerProvider(resource=resource)
    processor = span_processor(exporter_choice(env))
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing(timeout_ms: int = 5_000) -> None:
    """Flush buffered spans; called when the service stops, so a SIGTERM loses none."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    carrier = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> Context:
    return propagate.extract(dict(headers or {}))


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def context_for_trace(trace_id: str | None) -> Context | None:
    """A remote parent in a known trace, for work resumed without the message's headers."""
    try:
        tid = int(trace_id or "", 16)
    except ValueError:
        return None
    if not tid or tid >= 1 << 128:
        return None
    parent = SpanContext(tid, secrets.randbits(64) | 1, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


# Messaging spans ---------------------------------------------------------------------------


def _tracer() -> trace.Tracer:
    return trace.get_tracer("scanfleet.messaging")


@contextlib.contextmanager
def producer_span(subject: str, size: int, msg_id: str | None = None) -> Iterator[trace.Span]:
    """A PRODUCER span around one publish; ``inject_headers`` inside it carries its context."""
    attributes: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation": "publish",
        "messaging.operation.type": "send",
        "messaging.destination.name": subject,
        "messaging.destination.template": subject_template(subject),
        "messaging.message.body.size": size,
    }
    if msg_id is not None:
        attributes["messaging.message.id"] = msg_id
    with _tracer().start_as_current_span(
        f"publish {subject_template(subject)}", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield span


def record_publish(span: trace.Span, stream: str, seq: int, duplicate: bool | None) -> None:
    span.set_attribute("messaging.nats.stream", stream)
    span.set_attribute("messaging.nats.sequence", seq)
    if duplicate:
        span.set_attribute("messaging.nats.duplicate", True)


def delivery_attributes(msg: Msg) -> tuple[dict[str, Any], int]:
    """The messaging attributes of one delivery, and how many times it has been delivered."""
    attributes: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": msg.subject,
        "messaging.destination.template": subject_template(msg.subject),
        "messaging.message.body.size": len(msg.data or b""),
    }
    headers = msg.headers or {}
    if HDR_MSG_ID in headers:
        attributes["messaging.message.id"] = headers[HDR_MSG_ID]
    delivered = 1
    with contextlib.suppress(Exception):  # a core NATS message has no JetStream metadata
        meta = msg.metadata
        delivered = meta.num_delivered or 1
        attributes["messaging.consumer.group.name"] = meta.consumer
        attributes["messaging.nats.stream"] = meta.stream
        attributes["messaging.nats.sequence.stream"] = meta.sequence.stream
        attributes["messaging.nats.sequence.consumer"] = meta.sequence.consumer
        attributes["messaging.nats.num_pending"] = meta.num_pending
    attributes["messaging.nats.num_delivered"] = delivered
    return attributes, delivered


@contextlib.contextmanager
def consumer_span(
    msg: Msg | None,
    name: str,
    *,
    trace_id: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[trace.Span]:
    """A CONSUMER span for processing one delivery, in the trace the message carries.

    Without a delivery (work resumed from the stream after a restart) the span joins the
    trace named by ``trace_id``.
    """
    attrs: dict[str, Any] = dict(attributes or {})
    links: list[Link] = []
    parent: Context | None
    if msg is not None:
        delivery, delivered = delivery_attributes(msg)
        attrs.update(delivery)
        parent = extract_context(msg.headers)
        created = trace.get_current_span(parent).get_span_context()
        if not created.is_valid:
            parent = context_for_trace(trace_id)
        elif delivered > 1:
            links.append(Link(created, {"messaging.nats.num_delivered": delivered, "scanfleet.redelivery": True}))
    else:
        parent = context_for_trace(trace_id)
    with _tracer().start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=attrs, links=links
    ) as span:
        yield span


# HTTP client spans --------------------------------------------------------------------------

_SECRETISH = re.compile(r"[A-Za-z0-9_-]{16,}")


def url_template(path: str) -> str:
    """``/scans/12/export/7/download`` → ``/scans/{id}/export/{id}/download``; tokens become ``{token}``,
    so neither ids nor download tokens reach span names or attributes."""
    out = []
    previous = ""
    for segment in path.split("/"):
        if segment.isdigit():
            out.append("{id}")
        elif previous == "tokens" or _SECRETISH.fullmatch(segment):
            out.append("{token}")
        else:
            out.append(segment)
        previous = segment
    return "/".join(out)


@contextlib.contextmanager
def http_client_span(method: str, scheme: str, host: str, port: int | None, path: str) -> Iterator[trace.Span | None]:
    """A CLIENT span for one HTTP call made on behalf of traced work (none outside a trace:
    health probes every few seconds would bury the scans). Never headers, never a query."""
    if not trace.get_current_span().get_span_context().is_valid:
        yield None
        return
    route = url_template(path)
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.scheme": scheme,
        "url.template": route,
        "server.address": host,
    }
    if port is not None:
        attributes["server.port"] = port
    with _tracer().start_as_current_span(
        f"{method} {route}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def record_http_status(span: trace.Span | None, status: int) -> None:
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))


def record_http_error(span: trace.Span | None, exc: BaseException) -> None:
    """Only the exception type: messages of transport errors can quote URLs."""
    if span is None:
        return
    span.set_attribute("error.type", type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
