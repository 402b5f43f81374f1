"""The whole data flow of scanfleet in one place: subjects, streams, consumers, buckets.

    gateway ──scan.request.<pool>.<task>──▶ SCAN_REQUESTS (work queue)
                                              │ consumer dispatch-<pool>
    dispatcher ◀──────────────────────────────┘
        │ reserves a slot in KV scan_capacity, task queued→dispatched in KV scan_tasks
        └──scan.assign.<pool>.<instance>.<task>──▶ SCAN_ASSIGNMENTS (work queue)
                                              │ consumer agent-<pool>-<instance>
    scanner-agent ◀───────────────────────────┘
        │ drives Nessus, streams the export into object store scan_exports
        └──scan.event.<task>.exported──▶ SCAN_EVENTS (limits: audit and replay)
                                              │ consumer validator (filter *.exported)
    validator ◀───────────────────────────────┘
        │ task validating→completed|failed, releases the slot
    every service ──scan.event.<task>.<state>──▶ SCAN_EVENTS
    every service ──scan.dlq.<stage>.<task>──▶ SCAN_DLQ ──consumer janitor──▶ janitor
    server advisories (max deliveries, terminated) ──▶ SCAN_ADVISORIES ──▶ janitor
    gateway, CLI ──scan.scanner.restart.<pool>.<instance>──▶ the scanner's agent (request-reply)

Names of pools and scanner instances are restricted to ``[A-Za-z0-9_-]`` so they are
valid both as subject tokens and inside consumer names.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
DAY = 24 * 3600.0

# Task states and event kinds --------------------------------------------------------------


class TaskState(StrEnum):
    """Where a task is; its legal moves are ``scanfleet.common.tasks.TRANSITIONS``."""

    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    EXPORTING = "exporting"
    VALIDATING = "validating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMEOUT})


class EventKind(StrEnum):
    """The last token of ``scan.event.<task>.<kind>``: every task state, plus steps that are not states.

    A StrEnum, so the wire carries the same plain strings as before.
    """

    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    EXPORTING = "exporting"
    VALIDATING = "validating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    EXPORTED = "exported"
    PAUSED = "paused"
    RESUMED = "resumed"
    REVALIDATED = "revalidated"


TERMINAL_KINDS = tuple(EventKind(state) for state in TaskState if state in TERMINAL)

# Streams ----------------------------------------------------------------------------------

REQUESTS_STREAM = "SCAN_REQUESTS"
ASSIGNMENTS_STREAM = "SCAN_ASSIGNMENTS"
EVENTS_STREAM = "SCAN_EVENTS"
DLQ_STREAM = "SCAN_DLQ"
ADVISORIES_STREAM = "SCAN_ADVISORIES"

# Subjects ---------------------------------------------------------------------------------
#
# Every subject is built and taken apart here, nowhere else: task ids, pools, instances and
# stages are NAME_RE tokens, so a subject's tokens are exactly its dots' separations.

SUBJECT_ROOT = "scan"
REQUESTS_FILTER = "scan.request.>"
ASSIGNMENTS_FILTER = "scan.assign.>"
EVENTS_FILTER = "scan.event.>"
DLQ_FILTER = "scan.dlq.>"


def request_subject(pool: str, task_id: str) -> str:
    return f"scan.request.{pool}.{task_id}"


def pool_request_filter(pool: str) -> str:
    return f"scan.request.{pool}.>"


def assignment_subject(pool: str, instance: str, task_id: str) -> str:
    return f"scan.assign.{pool}.{instance}.{task_id}"


def instance_assignment_filter(pool: str, instance: str) -> str:
    return f"scan.assign.{pool}.{instance}.>"


def event_subject(task_id: str, kind: str) -> str:
    """Lifecycle event of one task; ``kind`` is an ``EventKind`` (a plain str, so a filter may pass ``*``)."""
    return f"scan.event.{task_id}.{kind}"


def task_events_filter(task_id: str) -> str:
    return f"scan.event.{task_id}.>"


def kind_events_filter(kind: str) -> str:
    """Events of one kind, for every task."""
    return f"scan.event.*.{kind}"


EXPORTED_FILTER = kind_events_filter(EventKind.EXPORTED)
TERMINAL_EVENT_FILTERS = [kind_events_filter(kind) for kind in TERMINAL_KINDS]


def dlq_subject(stage: str, task_id: str) -> str:
    return f"scan.dlq.{stage}.{task_id}"


def dlq_filter(stage: str | None = None, task_id: str | None = None) -> str:
    """Dead letters of one stage and/or task (either may be left open)."""
    return f"scan.dlq.{stage or '*'}.{task_id or '*'}"


def _tokens(subject: str, family: str, count: int) -> list[str] | None:
    tokens = subject.split(".")
    if len(tokens) != count or tokens[0] != SUBJECT_ROOT or tokens[1] != family:
        return None
    return tokens


def pool_of_request(subject: str) -> str | None:
    """``scan.request.<pool>.<task>`` → pool."""
    tokens = _tokens(subject, "request", 4)
    return tokens[2] if tokens else None


def task_of_event(subject: str) -> str | None:
    """``scan.event.<task>.<kind>`` → task id."""
    tokens = _tokens(subject, "event", 4)
    return tokens[2] if tokens else None


def kind_of_event(subject: str) -> str | None:
    """``scan.event.<task>.<kind>`` → kind, as written (an unknown kind is not refused here)."""
    tokens = _tokens(subject, "event", 4)
    return tokens[3] if tokens else None


def stage_of_dlq(subject: str) -> str | None:
    """``scan.dlq.<stage>.<task>`` → stage."""
    tokens = _tokens(subject, "dlq", 4)
    return tokens[2] if tokens else None


def task_of_subject(subject: str) -> str | None:
    """The task a request, assignment, event or dead-letter subject is about; None for any other."""
    for family, count, index in (("request", 4, 3), ("assign", 5, 4), ("event", 4, 2), ("dlq", 4, 3)):
        tokens = _tokens(subject, family, count)
        if tokens:
            return tokens[index]
    return None


def subject_template(subject: str) -> str:
    """``scan.request.default.<task>`` → ``scan.request.*.*``: a span name of low cardinality."""
    tokens = subject.split(".")
    keep = 5 if subject.startswith("$JS.EVENT.") else 2
    return ".".join(tokens[:keep] + ["*"] * max(0, len(tokens) - keep))


# Scanner control: core NATS request-reply, not a stream. A restart is for now or never: an
# operator is told at once that no agent serves the scanner, and no restart waits in a queue
# to fire later on a scanner that has recovered since. The agents of one scanner answer as one
# queue group, so a single one acts.

SCANNER_RESTART_FILTER = "scan.scanner.restart.*.*"
SCANNER_CONTROL_QUEUE = "scanner-agents"


def scanner_restart_subject(pool: str, instance: str) -> str:
    return f"scan.scanner.restart.{pool}.{instance}"


# Message ids ------------------------------------------------------------------------------
#
# ``Nats-Msg-Id`` makes a publish idempotent within a stream's duplicate window: the same
# step published twice (a retry, a redelivered message worked again) lands once.


def request_msg_id(task_id: str, retries: int = 0) -> str:
    """The first request of a task, then one per operator retry (``TaskRecord.retries``)."""
    return task_id if retries == 0 else f"{task_id}-retry{retries}"


def returned_msg_id(task_id: str, retries: int, dispatch_attempt: int) -> str:
    """A request an agent handed back before launch: one per dispatch attempt, never deduplicated
    against the first request of the same try."""
    return f"{request_msg_id(task_id, retries)}-returned{dispatch_attempt}"


def assignment_msg_id(task_id: str, dispatch_attempt: int) -> str:
    return f"assign:{task_id}:{dispatch_attempt}"


def event_msg_id(task_id: str, kind: str, updated_at: datetime) -> str:
    """One event per kind and record revision time."""
    return f"{task_id}:{kind}:{updated_at.timestamp()}"


def export_msg_id(task_id: str, sha256: str) -> str:
    """One ``exported`` event per stored export content."""
    return f"export:{task_id}:{sha256[:16]}"


def dead_letter_msg_id(stream: str, seq: int) -> str:
    """One dead letter per original message: the service that gives up and the janitor reading
    the server's advisory for the same message publish with this id, and the second is a no-op."""
    return f"dlq:{stream}:{seq}"


AUDIT_STREAM = "SCAN_AUDIT"
AUDIT_FILTER = "scan.audit.>"
AUDIT_MAX_AGE = 365 * DAY


def audit_subject(client: str, action: str) -> str:
    """One decision of one client; ``action`` may hold dots (``clients.add``)."""
    return f"scan.audit.{client}.{action}"


def audit_filter(client: str | None = None, action: str | None = None) -> str:
    return f"scan.audit.{client or '*'}.{action or '>'}"


# Who an automatic action is recorded as: the agents' restarts after a long-open circuit.
SYSTEM_ACTOR = "system"
SCANNER_RESTART_ACTION = "admin.scanner_restart"


def audit_msg_id(record_id: str) -> str:
    return f"audit:{record_id}"


def audit_stream(max_age: float = AUDIT_MAX_AGE) -> StreamConfig:
    """Append-only: no deletes, no purges; kept for ``max_age`` (a year unless configured)."""
    return StreamConfig(
        name=AUDIT_STREAM,
        description="Audit trail: every access decision (who, what, allowed or denied, why); no secrets",
        subjects=[AUDIT_FILTER],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=max_age,
        duplicate_window=600.0,
        deny_delete=True,
        deny_purge=True,
    )


ADVISORY_SUBJECTS = [
    f"$JS.EVENT.ADVISORY.CONSUMER.{kind}.{stream}.*"
    for kind in ("MAX_DELIVERIES", "MSG_TERMINATED")
    for stream in (REQUESTS_STREAM, ASSIGNMENTS_STREAM, EVENTS_STREAM)
]

STREAMS: list[StreamConfig] = [
    StreamConfig(
        name=REQUESTS_STREAM,
        description="Scan requests waiting for a scanner, one subject per task",
        subjects=[REQUESTS_FILTER],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_age=30 * DAY,
        duplicate_window=600.0,
    ),
    StreamConfig(
        name=ASSIGNMENTS_STREAM,
        description="Tasks assigned to one scanner instance, held by its agent until exported",
        subjects=[ASSIGNMENTS_FILTER],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_age=30 * DAY,
        duplicate_window=600.0,
    ),
    StreamConfig(
        name=EVENTS_STREAM,
        description="Lifecycle events of every task, kept for audit and replay",
        subjects=[EVENTS_FILTER],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=30 * DAY,
        duplicate_window=600.0,
    ),
    StreamConfig(
        name=DLQ_STREAM,
        description="Dead letters: everything that failed permanently, credentials removed",
        subjects=[DLQ_FILTER],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=30 * DAY,
        duplicate_window=600.0,
    ),
    StreamConfig(
        name=ADVISORIES_STREAM,
        description="JetStream max-deliveries and terminated advisories for the work streams",
        subjects=ADVISORY_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=14 * DAY,
        duplicate_window=120.0,
    ),
]

# Consumers --------------------------------------------------------------------------------

DISPATCH_ACK_WAIT = 30.0
AGENT_ACK_WAIT = 60.0
VALIDATOR_ACK_WAIT = 120.0


def dispatch_consumer_name(pool: str) -> str:
    return f"dispatch-{pool}"


def agent_consumer_name(pool: str, instance: str) -> str:
    return f"agent-{pool}-{instance}"


VALIDATOR_CONSUMER = "validator"
JANITOR_DLQ_CONSUMER = "janitor-dlq"
JANITOR_ADVISORIES_CONSUMER = "janitor-advisories"
JANITOR_TERMINAL_CONSUMER = "janitor-terminal"
JANITOR_EXPIRY_CONSUMER = "janitor-expiry"
EXPIRY_BUCKET = "scan_expiry"


def kv_stream(bucket: str) -> str:
    """The stream behind a KV bucket."""
    return f"KV_{bucket}"


def kv_subject(bucket: str, key: str) -> str:
    """The subject of one key of a KV bucket, for raw writes nats-py's KV cannot make (TTLs, purges)."""
    return f"$KV.{bucket}.{key}"


def key_of_kv_subject(bucket: str, subject: str) -> str | None:
    """``$KV.<bucket>.<key>`` → key."""
    prefix = kv_subject(bucket, "")
    return subject[len(prefix) :] if subject.startswith(prefix) else None


EXPIRY_STREAM = kv_stream(EXPIRY_BUCKET)


def dispatch_consumer(pool: str, ack_wait: float = DISPATCH_ACK_WAIT) -> ConsumerConfig:
    """Held by the dispatcher while the request waits; in-progress acks keep it alive.

    ``ack_wait`` bounds how long a crashed dispatcher's waiting requests stay out of reach.
    """
    return ConsumerConfig(
        durable_name=dispatch_consumer_name(pool),
        filter_subject=pool_request_filter(pool),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=20,
        max_ack_pending=10_000,
    )


def agent_consumer(pool: str, instance: str) -> ConsumerConfig:
    """An assignment stays unacked for the whole scan so a crashed agent's work is redelivered."""
    return ConsumerConfig(
        durable_name=agent_consumer_name(pool, instance),
        filter_subject=instance_assignment_filter(pool, instance),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=AGENT_ACK_WAIT,
        max_deliver=10,
        max_ack_pending=1_000,
    )


VALIDATOR = ConsumerConfig(
    durable_name=VALIDATOR_CONSUMER,
    filter_subject=EXPORTED_FILTER,
    ack_policy=AckPolicy.EXPLICIT,
    deliver_policy=DeliverPolicy.ALL,
    ack_wait=VALIDATOR_ACK_WAIT,
    max_deliver=5,
    max_ack_pending=64,
)

JANITOR_DLQ = ConsumerConfig(
    durable_name=JANITOR_DLQ_CONSUMER,
    ack_policy=AckPolicy.EXPLICIT,
    deliver_policy=DeliverPolicy.ALL,
    ack_wait=60.0,
    max_deliver=5,
)

JANITOR_ADVISORIES = ConsumerConfig(
    durable_name=JANITOR_ADVISORIES_CONSUMER,
    ack_policy=AckPolicy.EXPLICIT,
    deliver_policy=DeliverPolicy.ALL,
    ack_wait=60.0,
    max_deliver=5,
)

JANITOR_TERMINAL = ConsumerConfig(
    durable_name=JANITOR_TERMINAL_CONSUMER,
    filter_subjects=TERMINAL_EVENT_FILTERS,
    ack_policy=AckPolicy.EXPLICIT,
    deliver_policy=DeliverPolicy.ALL,
    ack_wait=60.0,
    max_deliver=10,
)

JANITOR_EXPIRY = ConsumerConfig(
    durable_name=JANITOR_EXPIRY_CONSUMER,
    ack_policy=AckPolicy.EXPLICIT,
    deliver_policy=DeliverPolicy.ALL,
    ack_wait=120.0,
    max_deliver=10,
)

STATIC_CONSUMERS: list[tuple[str, ConsumerConfig]] = [
    (EVENTS_STREAM, VALIDATOR),
    (DLQ_STREAM, JANITOR_DLQ),
    (ADVISORIES_STREAM, JANITOR_ADVISORIES),
    (EVENTS_STREAM, JANITOR_TERMINAL),
    (EXPIRY_STREAM, JANITOR_EXPIRY),
]

# Key-value buckets and object stores ------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    name: str
    description: str
    history: int = 1
    ttl: float | None = None
    direct: bool = True
    limit_marker_ttl: float | None = None


TASKS_BUCKET = "scan_tasks"
REGISTRY_BUCKET = "scan_registry"
CAPACITY_BUCKET = "scan_capacity"
AGENTS_BUCKET = "scan_agents"
IDEMPOTENCY_BUCKET = "scan_idempotency"
LEASES_BUCKET = "scan_leases"
POOL_STATS_BUCKET = "scan_pool_stats"
CLIENT_TASKS_BUCKET = "scan_client_tasks"
CLIENT_TASKS_TTL = 31 * DAY

SCHEDULES_BUCKET = "scan_schedules"
SCHEDULE_RUNS_BUCKET = "scan_schedule_runs"
SCHEDULE_RUNS_TTL = 90 * DAY
NESSUS_SCANS_BUCKET = "scan_nessus_scans"
AGENT_HEARTBEAT_INTERVAL = 5.0
AGENT_LEASE_TTL = 15.0
IDEMPOTENCY_TTL = 2 * DAY
EXPIRY_MARKER_TTL = DAY

BUCKETS: list[Bucket] = [
    Bucket(TASKS_BUCKET, "Task records, key <task_id>; every write is a compare-and-set", history=5),
    Bucket(REGISTRY_BUCKET, "Scanner registry from scanners.yaml, key <pool>.<instance>, no secrets"),
    Bucket(CAPACITY_BUCKET, "Slots per scanner instance, key <pool>.<instance>: the tasks holding one"),
    Bucket(
        AGENTS_BUCKET,
        "Agent leases, key <pool>.<instance>; a key vanishes when its agent stops heartbeating",
        ttl=AGENT_LEASE_TTL,
        limit_marker_ttl=AGENT_LEASE_TTL,
    ),
    Bucket(IDEMPOTENCY_BUCKET, "Idempotency keys of submissions, key sha256(key)", ttl=IDEMPOTENCY_TTL),
    Bucket(
        EXPIRY_BUCKET,
        "Expiry leases of ended tasks, key <task_id>, per-message TTL; the MaxAge marker deletes the task",
        limit_marker_ttl=EXPIRY_MARKER_TTL,
    ),
    Bucket(LEASES_BUCKET, "Leader leases, key <role> (dispatcher): holder and expiry, renewed by CAS"),
    Bucket(
        POOL_STATS_BUCKET,
        "Per-pool scan statistics, key <pool>: moving average of scan durations; "
        "order.<pool>: the waiting order as the dispatcher's policy sees it",
    ),
    Bucket(
        CLIENT_TASKS_BUCKET,
        "Tasks by client: key task.<client>.<task_id> per submission, active.<client> the unended ones",
        ttl=CLIENT_TASKS_TTL,
    ),
    Bucket(SCHEDULES_BUCKET, "Recurring scans, key <owner>.<schedule_id>; credentials only by credential_ref"),
    Bucket(
        SCHEDULE_RUNS_BUCKET,
        "Claims of schedule occurrences (<schedule_id>.<utc seconds>) and rollovers (rollover.<task_id>): "
        "created once, so each fires exactly once",
        ttl=SCHEDULE_RUNS_TTL,
    ),
    Bucket(
        NESSUS_SCANS_BUCKET,
        "Nessus scans scanfleet created, key <pool>.<instance>.<scan_id>: the agents delete these and no others",
    ),
]


def pool_order_key(pool: str) -> str:
    """Key in ``POOL_STATS_BUCKET`` of the pool's published waiting order (``queue_order``)."""
    return f"order.{pool}"


def schedule_key(owner: str, schedule_id: str) -> str:
    return f"{owner}.{schedule_id}"


def schedules_prefix(owner: str | None = None) -> str:
    return f"{owner}." if owner else ""


def schedule_of_key(key: str) -> tuple[str, str]:
    """``<owner>.<schedule_id>`` → (owner, schedule id)."""
    owner, _, schedule_id = key.partition(".")
    return owner, schedule_id


def occurrence_key(schedule_id: str, token: str) -> str:
    return f"{schedule_id}.{token}"


def rollover_claim_key(task_id: str) -> str:
    return f"rollover.{task_id}"


def nessus_scan_key(pool: str, instance: str, scan_id: int) -> str:
    return f"{pool}.{instance}.{scan_id}"


def nessus_scans_prefix(pool: str, instance: str) -> str:
    return f"{pool}.{instance}."


def client_task_key(client: str, task_id: str) -> str:
    return f"task.{client}.{task_id}"


def client_tasks_prefix(client: str) -> str:
    return f"task.{client}."


def client_active_key(client: str) -> str:
    return f"active.{client}"


def instance_key(pool: str, instance: str) -> str:
    return f"{pool}.{instance}"


def instance_of_key(key: str) -> str:
    """``<pool>.<instance>`` → instance."""
    return key.split(".", 1)[1]


@dataclass(frozen=True)
class ObjectBucket:
    name: str
    description: str
    ttl: float | None = None


EXPORTS_OBJECTS = "scan_exports"
FINDINGS_OBJECTS = "scan_findings"

OBJECT_STORES: list[ObjectBucket] = [
    ObjectBucket(EXPORTS_OBJECTS, "Raw .nessus exports, object <task_id>.nessus"),
    ObjectBucket(
        FINDINGS_OBJECTS,
        "Typed findings (<task_id>.findings) and host summaries (<task_id>.hosts), written once per task",
    ),
]


def export_object_name(task_id: str) -> str:
    return f"{task_id}.nessus"


def findings_object_name(task_id: str) -> str:
    return f"{task_id}.findings"


def hosts_object_name(task_id: str) -> str:
    return f"{task_id}.hosts"


def object_stream(bucket: str) -> str:
    """The stream behind an object store."""
    return f"OBJ_{bucket}"


def object_chunk_subject(bucket: str, nuid: str) -> str:
    return f"$O.{bucket}.C.{nuid}"


def object_meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def object_store_filter(bucket: str) -> str:
    """Every chunk and meta subject of one object store."""
    return f"$O.{bucket}.>"


def task_objects(task_id: str) -> list[tuple[str, str]]:
    """Every (object store, object) that belongs to one task; all of it goes when the task expires."""
    return [
        (EXPORTS_OBJECTS, export_object_name(task_id)),
        (FINDINGS_OBJECTS, findings_object_name(task_id)),
        (FINDINGS_OBJECTS, hosts_object_name(task_id)),
    ]


# Message headers --------------------------------------------------------------------------

HDR_MSG_ID = "Nats-Msg-Id"
HDR_TASK_ID = "Scanfleet-Task-Id"
HDR_SCHEMA = "Scanfleet-Schema"
# Publish only if the subject's last message has this sequence ("0": the subject is empty).
HDR_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
# JetStream's error code for a failed expected-sequence check (KV CAS uses it too).
ERR_WRONG_LAST_SEQUENCE = 10071


@dataclass(frozen=True)
class Topology:
    """Everything provisioning creates for a given set of pools and instances."""

    pools: dict[str, list[str]] = field(default_factory=dict)
    dispatch_ack_wait: float = DISPATCH_ACK_WAIT
    audit_max_age: float = AUDIT_MAX_AGE
    # JetStream replicas of every stream, bucket and object store; consumers follow their stream.
    replicas: int = 1

    def streams(self) -> list[StreamConfig]:
        return [
            dataclasses.replace(s, num_replicas=self.replicas) for s in [*STREAMS, audit_stream(self.audit_max_age)]
        ]

    def consumers(self) -> list[tuple[str, ConsumerConfig]]:
        out = list(STATIC_CONSUMERS)
        for pool, instances in sorted(self.pools.items()):
            out.append((REQUESTS_STREAM, dispatch_consumer(pool, self.dispatch_ack_wait)))
            out.extend((ASSIGNMENTS_STREAM, agent_consumer(pool, i)) for i in sorted(instances))
        return out
