"""What every service process shares: its NATS handles, signal handling and a clean drain."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from scanfleet.common import contract
from scanfleet.common.bus import UNANSWERED, connect, provision, publish
from scanfleet.common.config import Settings
from scanfleet.common.logs import setup_logging
from scanfleet.common.messages import DeadLetter, TaskEvent, encode, scrub_credentials, utcnow
from scanfleet.common.tasks import TaskRecord, TaskStore
from scanfleet.common.telemetry import setup_tracing, shutdown_tracing

log = logging.getLogger("scanfleet.runtime")


@dataclass
class Runtime:
    service: str
    settings: Settings
    nc: NATS
    js: JetStreamContext
    tasks: TaskStore
    registry: KeyValue
    capacity: KeyValue
    agents: KeyValue
    idempotency: KeyValue
    leases: KeyValue
    pool_stats: KeyValue
    client_tasks: KeyValue
    schedules: KeyValue
    schedule_runs: KeyValue
    nessus_scans: KeyValue
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # The clock scan windows are judged by (tests move it together with the emulators' clock).
    now: Callable[[], datetime] = utcnow
    # What provisioning changed when this runtime opened (``scanfleet provision`` prints it).
    provisioned: list[str] = field(default_factory=list)

    async def publish_event(self, record: TaskRecord, kind: contract.EventKind, detail: str | None = None) -> None:
        """Append a lifecycle event; the message id makes a retried publish a no-op."""
        event = TaskEvent(
            task_id=record.task_id,
            trace_id=record.trace_id,
            kind=kind,
            state=str(record.state),
            at=utcnow(),
            service=self.service,
            detail=detail,
            instance=record.instance,
        )
        headers = {contract.HDR_MSG_ID: contract.event_msg_id(record.task_id, kind, record.updated_at)}
        await publish(self.js, contract.event_subject(record.task_id, kind), encode(event), headers)

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Publish a dead letter; any credentials in the original message are removed first."""
        if letter.original is not None:
            letter.original = scrub_credentials(letter.original)
        subject = contract.dlq_subject(letter.stage, letter.task_id or "unknown")
        ids: dict[str, str] = {}
        if letter.original_stream and letter.original_seq:
            ids[contract.HDR_MSG_ID] = contract.dead_letter_msg_id(letter.original_stream, letter.original_seq)
        await publish(self.js, subject, encode(letter), ids)

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)


PROVISION_WITHIN = 60.0


async def open_runtime(service: str, settings: Settings, *, topology: contract.Topology | None = None) -> Runtime:
    """Connect, make sure the contract exists (idempotent), and open the buckets."""
    nc = await connect(
        settings.nats_urls, name=f"scanfleet-{service}", user=settings.nats_user, password=settings.nats_password
    )
    js = nc.jetstream()
    retention = settings.audit_retention_days * contract.DAY
    wanted = dataclasses.replace(
        topology or contract.Topology(), audit_max_age=retention, replicas=settings.nats_replicas
    )
    changes, buckets = await _provisioned(js, wanted)
    return Runtime(
        service=service,
        settings=settings,
        nc=nc,
        js=js,
        tasks=TaskStore(buckets[contract.TASKS_BUCKET]),
        registry=buckets[contract.REGISTRY_BUCKET],
        capacity=buckets[contract.CAPACITY_BUCKET],
        agents=buckets[contract.AGENTS_BUCKET],
        idempotency=buckets[contract.IDEMPOTENCY_BUCKET],
        leases=buckets[contract.LEASES_BUCKET],
        pool_stats=buckets[contract.POOL_STATS_BUCKET],
        client_tasks=buckets[contract.CLIENT_TASKS_BUCKET],
        schedules=buckets[contract.SCHEDULES_BUCKET],
        schedule_runs=buckets[contract.SCHEDULE_RUNS_BUCKET],
        nessus_scans=buckets[contract.NESSUS_SCANS_BUCKET],
        provisioned=changes,
    )


async def _provisioned(js: JetStreamContext, wanted: contract.Topology) -> tuple[list[str], dict[str, KeyValue]]:
    """Provision and open the buckets. A service (re)started while its cluster elects a leader
    finds JetStream unanswering for a few seconds: it tries again, for ``PROVISION_WITHIN``."""
    deadline = asyncio.get_running_loop().time() + PROVISION_WITHIN
    delay = 0.5
    while True:
        try:
            changes = await provision(js, wanted)
            return changes, {b.name: await js.key_value(b.name) for b in contract.BUCKETS}
        except UNANSWERED as exc:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise
            log.warning("JetStream did not answer provisioning (%s); trying again in %.1fs", type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)


@contextlib.asynccontextmanager
async def service_runtime(
    service: str, settings: Settings, *, topology: contract.Topology | None = None
) -> AsyncIterator[Runtime]:
    rt = await open_runtime(service, settings, topology=topology)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, rt.stopping.set)
    try:
        yield rt
    finally:
        await close(rt)
        log.info("%s stopped", service)


async def close(rt: Runtime) -> None:
    """Flush what was published, then close. Unacked deliveries are redelivered by the server,
    so there is nothing else to wait for (nats-py's drain can hang on pull subscriptions)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(rt.nc.flush(), timeout=2)
    with contextlib.suppress(Exception):
        await rt.nc.close()


def run(service: str, main: Callable[[Settings], Coroutine[Any, Any, None]]) -> int:
    """Entry point of a service process: logging, tracing, settings, then ``main``."""
    settings = Settings.from_env()
    setup_logging(service, settings.log_level)
    setup_tracing(service)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main(settings))
    finally:
        shutdown_tracing()
    return 0


async def wait_stopping(rt: Runtime, *tasks: asyncio.Task[None]) -> None:
    """Run until SIGTERM or a worker task dies; then cancel the rest."""
    stop = asyncio.create_task(rt.stopping.wait())
    done, _ = await asyncio.wait({stop, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    for t in (stop, *tasks):
        t.cancel()
    for t in done:
        if t is not stop and not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    await asyncio.gather(*tasks, return_exceptions=True)
