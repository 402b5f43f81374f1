"""Every NATS helper the services share: connect, provision, publish (traced), pull consumers,
dead letters, KV and object-store helpers. Tracing itself (spans, headers) is ``telemetry``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    PubAck,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    FetchTimeoutError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from scanfleet.common import contract
from scanfleet.common.aio import honour_cancel
from scanfleet.common.messages import DeadLetter, utcnow
from scanfleet.common.nats_auth import inbox_prefix
from scanfleet.common.telemetry import inject_headers, producer_span, record_publish

log = logging.getLogger("scanfleet.bus")

UNANSWERED: tuple[type[Exception], ...] = (
    TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)
"""What NATS answers while a server restarts or a cluster elects a leader: nothing, or
"unavailable". The same request may succeed a moment later."""

PING_INTERVAL = 5.0
MAX_OUTSTANDING_PINGS = 2
"""A server that stops answering (cut off by the network while it keeps running, so no TCP
reset ever comes) is given up after about 15 s and the client moves to another one; nats-py's
defaults (2 min, 2 pings) left a service talking to a dead server for up to six minutes."""


async def connect(
    url: str | list[str],
    *,
    name: str,
    connect_timeout: float = 5.0,
    user: str | None = None,
    password: str | None = None,
) -> NATS:
    """Connect with endless reconnects; connection events are logged, never raised.

    ``url``: one server, or every server of a cluster (a list or comma-separated): the client
    picks one and fails over to the others.

    With a ``user``, replies come to that user's own inbox prefix, the only one its NATS
    permissions let it subscribe to (``nats_auth.inbox_prefix``).
    """

    async def on_error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def on_disconnected() -> None:
        log.warning("nats disconnected")

    async def on_reconnected() -> None:
        log.info("nats reconnected")

    async def on_closed() -> None:
        log.info("nats connection closed")

    servers = [u.strip() for u in url.split(",") if u.strip()] if isinstance(url, str) else url
    return await nats.connect(
        servers,
        name=name,
        connect_timeout=connect_timeout,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        allow_reconnect=True,
        ping_interval=PING_INTERVAL,
        max_outstanding_pings=MAX_OUTSTANDING_PINGS,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        closed_cb=on_closed,
        user=user,
        password=password,
        inbox_prefix=inbox_prefix(user) if user else "_INBOX",
    )


# Provisioning -----------------------------------------------------------------------------


def _differs(wanted: StreamConfig, current: StreamConfig) -> bool:
    for key, value in wanted.as_dict().items():
        if key == "name" or value is None:
            continue
        if current.as_dict().get(key) != value:
            return True
    return False


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> str | None:
    """Create the stream, or bring an existing one to ``config``; safe to run at every start.

    Returns what changed (None: nothing), replicas included: JetStream moves a stream to a
    new replica count in place, and its consumers (replicas 0) follow it.
    """
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("created stream %s", config.name)
        return f"created stream {config.name}" + _replicas_note(config.num_replicas)
    if not _differs(config, info.config):
        return None
    merged = StreamConfig.from_response({**info.config.as_dict(), **_set_fields(config)})
    await js.update_stream(merged)
    log.info("updated stream %s", config.name)
    return f"updated stream {config.name}" + _replicas_change(info.config.num_replicas, config.num_replicas)


def _replicas_note(replicas: int | None) -> str:
    return f" (replicas {replicas})" if replicas else ""


def _replicas_change(before: int | None, after: int | None) -> str:
    if after is None or (before or 1) == after:
        return ""
    return f" (replicas {before or 1} -> {after})"


def _set_fields(config: StreamConfig) -> dict[str, Any]:
    return {k: v for k, v in config.as_dict().items() if v is not None}


def direct_gets(bucket: contract.Bucket, replicas: int) -> bool:
    """Direct gets on one server only: with replicas any replica answers them, a follower
    that has not yet applied the last write too, so a read right after a write (a CAS
    refused, then the current value read) could miss it. Reads of a replicated bucket go to
    its leader."""
    return bucket.direct and replicas == 1


async def provision_bucket(js: JetStreamContext, bucket: contract.Bucket, replicas: int) -> tuple[KeyValue, str | None]:
    """Create the bucket or bring its stream to the contract and ``replicas``; what changed."""
    stream = contract.kv_stream(bucket.name)
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        kv = await js.create_key_value(
            KeyValueConfig(
                bucket=bucket.name,
                description=bucket.description,
                history=bucket.history,
                ttl=bucket.ttl,
                direct=direct_gets(bucket, replicas),
                storage=StorageType.FILE,
                limit_marker_ttl=bucket.limit_marker_ttl,
                replicas=replicas,
            )
        )
        return kv, f"created bucket {bucket.name}" + _replicas_note(replicas)
    wanted = {
        "description": bucket.description,
        "max_msgs_per_subject": bucket.history,
        "max_age": bucket.ttl or 0.0,
        "num_replicas": replicas,
        "allow_direct": direct_gets(bucket, replicas),
    }
    current = info.config
    now = (
        current.description,
        current.max_msgs_per_subject,
        current.max_age or 0.0,
        current.num_replicas or 1,
        bool(current.allow_direct),
    )
    changed = None
    if now != tuple(wanted.values()):
        # Only the fields we manage: StreamConfig's defaults would clear the bucket's own flags.
        fields = {k: v for k, v in StreamConfig(**wanted).as_dict().items() if k in wanted}  # type: ignore[arg-type]
        await js.update_stream(StreamConfig.from_response({**current.as_dict(), **fields, "name": stream}))
        log.info("updated bucket %s", bucket.name)
        changed = f"updated bucket {bucket.name}" + _replicas_change(current.num_replicas, replicas)
    return await js.key_value(bucket.name), changed


async def ensure_object_store(js: JetStreamContext, store: contract.ObjectBucket, replicas: int = 1) -> str | None:
    stream = contract.object_stream(store.name)
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        await js.create_object_store(
            store.name,
            ObjectStoreConfig(
                description=store.description, ttl=store.ttl, storage=StorageType.FILE, replicas=replicas
            ),
        )
        return f"created object store {store.name}" + _replicas_note(replicas)
    if (info.config.num_replicas or 1) == replicas:
        return None
    await js.update_stream(StreamConfig.from_response({**info.config.as_dict(), "num_replicas": replicas}))
    return f"updated object store {store.name}" + _replicas_change(info.config.num_replicas, replicas)


async def provision(js: JetStreamContext, topology: contract.Topology) -> list[str]:
    """Create or update every stream, bucket, object store and consumer of the contract.

    Returns what changed, one line each (empty when the server already matched).
    """
    changes: list[str | None] = []
    for stream in topology.streams():
        changes.append(await ensure_stream(js, stream))
    for bucket in contract.BUCKETS:
        changes.append((await provision_bucket(js, bucket, topology.replicas))[1])
    for store in contract.OBJECT_STORES:
        changes.append(await ensure_object_store(js, store, topology.replicas))
    for stream_name, consumer in topology.consumers():
        changes.append(await ensure_consumer(js, stream_name, consumer))
    return [c for c in changes if c is not None]


async def ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> str | None:
    """Create or update a durable consumer, but only when it is missing or differs: a service
    whose NATS user may only read consumer info passes when provisioning already ran."""
    assert config.durable_name is not None
    try:
        current = (await js.consumer_info(stream, config.durable_name)).config.as_dict()
    except NotFoundError:
        current = None
    if current is None or any(current.get(k) != v for k, v in config.as_dict().items() if v is not None):
        await js.add_consumer(stream, config)
        return f"{'created' if current is None else 'updated'} consumer {stream}/{config.durable_name}"
    return None


# Publishing and consuming ----------------------------------------------------------------


async def publish(
    js: JetStreamContext, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
) -> PubAck:
    """A JetStream publish inside a PRODUCER span whose context travels in the headers."""
    msg_id = (headers or {}).get(contract.HDR_MSG_ID)
    with producer_span(subject, len(payload), msg_id) as span:
        ack = await js.publish(subject, payload, headers=inject_headers(dict(headers or {})))
        record_publish(span, ack.stream, ack.seq, ack.duplicate)
        return ack


async def pull(
    js: JetStreamContext, stream: str, durable: str, *, batch: int, wait: float = 2.0
) -> AsyncIterator[list[Msg]]:
    """Batches from a durable pull consumer, forever; an empty poll or a NATS outage just loops.

    nats-py's ``fetch(n)`` that catches one message mid-wait keeps waiting for ``n`` until
    its timeout, so a lone message could sit for the whole ``wait``. Instead: block for one,
    then take whatever else is already there.
    """
    sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
    try:
        while True:
            honour_cancel()
            try:
                msgs = await sub.fetch(batch=1, timeout=wait)
            except (NatsTimeout, FetchTimeoutError, TimeoutError):
                continue
            except NatsError as exc:
                # While the server restarts: no responders, JetStream not ready, connection reset.
                log.warning("pull from %s/%s failed (%s); retrying", stream, durable, exc)
                await asyncio.sleep(0.5)
                continue
            if batch > 1:
                with contextlib.suppress(NatsTimeout, FetchTimeoutError, TimeoutError, NatsError):
                    msgs += await sub.fetch(batch=batch - 1, timeout=0.01)
            yield msgs
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def keep_in_progress(msg: Msg, every: float) -> None:
    """Tell the server the message is still being worked on, until cancelled."""
    while True:
        honour_cancel()
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await msg.in_progress()


def dead_letter_for(
    msg: Msg,
    *,
    stage: str,
    reason: str,
    error: str,
    task_id: str | None = None,
    trace_id: str | None = None,
    keep_original: bool = False,
) -> DeadLetter:
    """The dead letter of one delivery, with where it came from and how often it was tried."""
    return DeadLetter(
        task_id=task_id,
        trace_id=trace_id,
        stage=stage,
        reason=reason,
        error=error,
        attempts=msg.metadata.num_delivered if msg.metadata else 1,
        failed_at=utcnow(),
        original_subject=msg.subject,
        original=msg.data if keep_original else None,
        original_stream=msg.metadata.stream if msg.metadata else None,
        original_seq=msg.metadata.sequence.stream if msg.metadata and msg.metadata.sequence else None,
    )


# KV ---------------------------------------------------------------------------------------


async def kv_get(kv: KeyValue, key: str) -> KeyValue.Entry | None:
    """Get a key, treating deletes and nats-py 2.16's value-less TTL markers as absent."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    if entry.value is None or entry.operation in ("DEL", "PURGE"):
        return None
    return entry


async def kv_items(kv: KeyValue, key_prefix: str = "") -> dict[str, bytes]:
    """Every live key (under ``key_prefix``) with its current value, read by one consumer that
    is deleted afterwards.

    nats-py's ``keys()`` leaves its watcher's consumer on the server for five minutes, and a
    stream holds at most 1000 consumers: a sweep every few seconds would exhaust them. KeyValue
    has no public handle on its stream, hence the private attributes.
    """
    js: JetStreamContext = kv._js
    stream: str = kv._stream
    prefix: str = kv._pre
    info = await js.add_consumer(
        stream,
        ConsumerConfig(
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            filter_subject=f"{prefix}{key_prefix}>",
            inactive_threshold=30.0,
            mem_storage=True,
            num_replicas=1,
        ),
    )
    out: dict[str, bytes] = {}
    try:
        sub = await js.pull_subscribe_bind(durable=info.name, stream=stream)
        remaining = info.num_pending or 0
        while remaining > 0:
            msgs = await sub.fetch(min(remaining, 256), timeout=5.0)
            remaining -= len(msgs)
            for msg in msgs:
                key = msg.subject[len(prefix) :]
                operation = (msg.headers or {}).get("KV-Operation")
                if msg.data and operation not in ("DEL", "PURGE"):
                    out[key] = msg.data
                else:
                    out.pop(key, None)
        await sub.unsubscribe()
    finally:
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(stream, info.name)
    return out


async def kv_create(kv: KeyValue, key: str, value: bytes) -> int:
    """``create`` that also succeeds over an expired key's leftover marker (nats-py 2.16 bug).

    Refused because the key exists, nats-py's ``create`` reads the key to tell a deleted one
    from a live one; a replica that has not caught up (a node just back from a partition)
    answers that read with "not found". The key exists at the stream's leader all the same:
    that is the refusal ``KeyWrongLastSequenceError``, which compare-and-set loops retry.
    """
    try:
        return int(await kv.create(key, value))
    except KeyNotFoundError:
        raise _exists_but_unread(key) from None
    except KeyWrongLastSequenceError:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            raise _exists_but_unread(key) from None
        if entry.value is not None and entry.operation not in ("DEL", "PURGE"):
            raise
        return int(await kv.update(key, value, last=entry.revision))


def _exists_but_unread(key: str) -> KeyWrongLastSequenceError:
    return KeyWrongLastSequenceError(f"{key} exists, but a lagging replica read it as absent")


# Object store -----------------------------------------------------------------------------

CHUNK_SIZE = 128 * 1024


@dataclass(frozen=True)
class StoredObject:
    name: str
    size: int
    sha256: str


async def put_object_stream(js: JetStreamContext, bucket: str, name: str, chunks: AsyncIterator[bytes]) -> StoredObject:
    """Write an object chunk by chunk (ADR-20 layout, readable by ``nats object get``).

    nats-py's ``put`` takes only synchronous readers; exports arrive as an async HTTP stream
    and must never be held whole in memory.
    """
    nuid = js._nc._nuid.next().decode()
    chunk_subject = contract.object_chunk_subject(bucket, nuid)
    digest = hashlib.sha256()
    buffer = bytearray()
    size = count = 0

    async def flush(data: bytes) -> None:
        nonlocal count
        await js.publish(chunk_subject, data)
        count += 1

    try:
        async for piece in chunks:
            digest.update(piece)
            size += len(piece)
            buffer.extend(piece)
            while len(buffer) >= CHUNK_SIZE:
                await flush(bytes(buffer[:CHUNK_SIZE]))
                del buffer[:CHUNK_SIZE]
        if buffer:
            await flush(bytes(buffer))
        raw = digest.digest()
        meta = {
            "name": name,
            "bucket": bucket,
            "nuid": nuid,
            "size": size,
            "chunks": count,
            "mtime": datetime.now(UTC).isoformat(),
            "digest": "SHA-256=" + base64.urlsafe_b64encode(raw).decode(),
            "options": {"max_chunk_size": CHUNK_SIZE},
        }
        meta_subject = contract.object_meta_subject(bucket, name)
        previous = await _previous_nuid(js, bucket, meta_subject)
        await js.publish(meta_subject, json.dumps(meta).encode(), headers={"Nats-Rollup": "sub"})
    except BaseException:
        await js.purge_stream(contract.object_stream(bucket), subject=chunk_subject)
        raise
    if previous and previous != nuid:
        await js.purge_stream(contract.object_stream(bucket), subject=contract.object_chunk_subject(bucket, previous))
    return StoredObject(name=name, size=size, sha256=raw.hex())


async def _previous_nuid(js: JetStreamContext, bucket: str, meta_subject: str) -> str | None:
    try:
        msg = await js.get_last_msg(contract.object_stream(bucket), meta_subject)
    except NotFoundError:
        return None
    nuid = json.loads(msg.data or b"{}").get("nuid")
    return str(nuid) if nuid else None
