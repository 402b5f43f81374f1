"""The audit trail: one record per decision, appended to JetStream stream ``SCAN_AUDIT``.

Who (client, role, how authenticated, source address), did what (action, task, targets),
allowed or denied and why, when, under which trace. Never a secret: records carry target
summaries and codes, not request bodies. Each record has its own id, used as the message id,
so a retried publish is stored once.
"""

from __future__ import annotations

import contextlib
import secrets
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import msgspec
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from scanfleet.common import contract
from scanfleet.common.messages import utcnow

Decision = Literal["allow", "deny"]
ANONYMOUS = "anonymous"
MAX_LISTED_TARGETS = 10


class TargetSummary(msgspec.Struct, kw_only=True, omit_defaults=True):
    entries: int
    addresses: int
    first: list[str] = msgspec.field(default_factory=list)


class AuditRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str = msgspec.field(default_factory=lambda: secrets.token_hex(12))
    at: datetime = msgspec.field(default_factory=utcnow)
    client: str = ANONYMOUS
    role: str | None = None
    auth: str | None = None
    interface: str = "rest"
    action: str
    decision: Decision
    code: str | None = None
    reason: str | None = None
    task_id: str | None = None
    trace_id: str | None = None
    source: str | None = None
    pool: str | None = None
    scanner: str | None = None
    scan_type: str | None = None
    targets: TargetSummary | None = None


def summarize_targets(entries: Sequence[str], addresses: int) -> TargetSummary:
    return TargetSummary(entries=len(entries), addresses=addresses, first=list(entries[:MAX_LISTED_TARGETS]))


async def append(js: JetStreamContext, record: AuditRecord) -> None:
    """Store one record; raises if JetStream does not acknowledge it, so callers can fail closed."""
    await js.publish(
        contract.audit_subject(record.client, record.action),
        msgspec.json.encode(record),
        headers={contract.HDR_MSG_ID: contract.audit_msg_id(record.id)},
    )


class AuditQuery(msgspec.Struct, kw_only=True):
    client: str | None = None
    task_id: str | None = None
    action: str | None = None
    decision: Decision | None = None
    since: datetime | None = None
    limit: int = 100

    def matches(self, record: AuditRecord) -> bool:
        return (
            (self.task_id is None or record.task_id == self.task_id)
            and (self.action is None or record.action == self.action)
            and (self.decision is None or record.decision == self.decision)
        )


async def read(js: JetStreamContext, query: AuditQuery) -> list[AuditRecord]:
    """The newest ``limit`` matching records, oldest first.

    One ephemeral consumer filtered by subject (client and action are subject tokens), starting
    at ``since``, read to its end and deleted; the other filters are applied here.
    """
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME if query.since else DeliverPolicy.ALL,
        opt_start_time=query.since,
        ack_policy=AckPolicy.NONE,
        filter_subject=contract.audit_filter(query.client, query.action),
        inactive_threshold=30.0,
        mem_storage=True,
        num_replicas=1,
    )
    info = await js.add_consumer(contract.AUDIT_STREAM, config)
    found: deque[AuditRecord] = deque(maxlen=max(1, query.limit))
    try:
        sub = await js.pull_subscribe_bind(durable=info.name, stream=contract.AUDIT_STREAM)
        remaining = info.num_pending or 0
        while remaining > 0:
            msgs = await sub.fetch(min(remaining, 512), timeout=5.0)
            remaining -= len(msgs)
            for msg in msgs:
                record = msgspec.json.decode(msg.data, type=AuditRecord)
                if query.matches(record):
                    found.append(record)
        await sub.unsubscribe()
    finally:
        with contextlib.suppress(Exception):
            await js.delete_consumer(contract.AUDIT_STREAM, info.name)
    return list(found)
