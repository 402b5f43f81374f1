"""One scanner instance's agent: its heartbeat, circuit breaker, assignments and Nessus scans.

An assignment stays unacknowledged for the whole scan, refreshed by in-progress acks, so
if the agent dies the server redelivers it. Every step records what it did in the task
record first (the Nessus scan id above all), so a redelivered assignment adopts the scan
already on the scanner instead of launching a second one.

Redelivery only comes ``ack_wait`` after the last in-progress ack, so at start-up the agent
also reconciles: every task holding a slot on its instances that is dispatched, running or
exporting and that this agent claimed (its ``agent_id`` outlives a restart) is resumed at once
from its assignment, read straight from the work-queue stream. A task another agent of the
same scanner claimed is left alone: that agent may be running it right now, and if it died,
its assignment is redelivered after ``ack_wait`` (two runs of one task could each create a
Nessus scan and launch it). A redelivery that arrives later joins the work in hand (or finds
it finished) and is acked only then, so no stale ack can remove an assignment that is still
being worked on.

Every probe asks ``/server/status`` first: a scanner that is starting up (Nessus loading its
plugins, or its container just started) gets no new work and its failed calls do not count
on the circuit (``containers.starting``). A scanner with a ``container`` block in
scanners.yaml has its container reported in the heartbeat and restarted on request
(``keeper.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from scanfleet.agent import hygiene, metrics
from scanfleet.agent.circuit import CircuitBreaker, CircuitState
from scanfleet.agent.containers import starting
from scanfleet.agent.engine import Engines
from scanfleet.agent.keeper import ContainerKeeper
from scanfleet.agent.lifecycle import Lifecycle, PermanentFailure
from scanfleet.agent.nessus import NessusClient, NessusError, NessusTransientError, ServerStatus
from scanfleet.agent.secrets import CredentialResolver
from scanfleet.common import capacity, contract
from scanfleet.common.aio import honour_cancel
from scanfleet.common.bus import UNANSWERED, dead_letter_for, keep_in_progress, kv_get, pull
from scanfleet.common.config import ScannerConfig, Settings
from scanfleet.common.contract import instance_key
from scanfleet.common.credentials import CredentialStore
from scanfleet.common.crypto import Keyring
from scanfleet.common.logs import task_context
from scanfleet.common.messages import Assignment, DeadLetter, Heartbeat, decode, encode, utcnow
from scanfleet.common.metrics import scanner_label
from scanfleet.common.runtime import Runtime
from scanfleet.common.task_ops import end_task
from scanfleet.common.tasks import TaskState
from scanfleet.common.telemetry import consumer_span

log = logging.getLogger("scanfleet.agent")

RESUMABLE = frozenset({TaskState.DISPATCHED, TaskState.RUNNING, TaskState.EXPORTING})


def client_for(scanner: ScannerConfig, timeout: float = 30.0) -> NessusClient:
    verify: bool | str = scanner.ca_bundle or scanner.tls_verify
    return NessusClient(
        scanner.url,
        access_key=scanner.auth.access_key,
        secret_key=scanner.auth.secret_key,
        username=scanner.auth.username,
        password=scanner.auth.password,
        verify=verify,
        timeout=timeout,
    )


def credential_resolver(settings: Settings) -> CredentialResolver:
    keyring = Keyring.parse(settings.credential_keys) if settings.credential_keys else None
    return CredentialResolver(keyring, CredentialStore(settings.credential_store))


@dataclass
class Work:
    """One task in hand, and every delivery of its assignment waiting for the outcome."""

    task: asyncio.Task[None] | None = None
    msgs: list[Msg] = field(default_factory=list)
    keepalives: list[asyncio.Task[None]] = field(default_factory=list)

    def attach(self, msg: Msg) -> None:
        self.msgs.append(msg)
        self.keepalives.append(asyncio.create_task(keep_in_progress(msg, contract.AGENT_ACK_WAIT / 4)))

    def release(self) -> None:
        for keepalive in self.keepalives:
            keepalive.cancel()


class InstanceAgent:
    """Serves one scanner instance: its heartbeat lease, its circuit breaker and its assignments."""

    def __init__(
        self,
        rt: Runtime,
        pool: str,
        scanner: ScannerConfig,
        agent_id: str,
        credentials: CredentialResolver | None = None,
        engines: Engines | None = None,
    ) -> None:
        self.rt = rt
        self.pool = pool
        self.scanner = scanner
        self.agent_id = agent_id
        self.key = instance_key(pool, scanner.id)
        self.credentials = credentials or credential_resolver(rt.settings)
        self.work: dict[str, Work] = {}
        self.last_beat: Heartbeat | None = None
        self.last_answer: datetime | None = None  # when Nessus last answered /server/status
        self.beat_now = asyncio.Event()
        self.breaker = CircuitBreaker(
            threshold=rt.settings.circuit_threshold,
            cooldown=rt.settings.circuit_cooldown,
            on_change=self._circuit_changed,
            on_failure=self.beat_now.set,
        )
        self.keeper = ContainerKeeper(
            rt,
            pool,
            scanner.id,
            engines or Engines(),
            config=lambda: self.scanner.container,
            busy=self._busy,
            stopping=self._stopping,
            restarted=self._restarted,
        )

    async def run(self) -> None:
        async with client_for(self.scanner, self.rt.settings.nessus_timeout) as client:
            self.client = client
            await self._restore_circuit()
            await self.keeper.refresh()  # the first probe tells a booting container from a failing one
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.keeper.serve())
                tg.create_task(self.keeper.watch(self._beat_interval()))
                tg.create_task(self._heartbeat_loop())
                await self.reconcile()
                tg.create_task(self._consume_loop())
                tg.create_task(hygiene.sweep_forever(self.rt, client, self.pool, self.scanner.id))

    # Heartbeat and circuit --------------------------------------------------------------

    def _circuit_changed(self, state: CircuitState) -> None:
        log.warning("circuit of %s is now %s", self.key, state)
        if state == "open":
            metrics.CIRCUIT_OPENS.labels(self.pool, scanner_label(self.pool, self.scanner.id)).inc()
        self.beat_now.set()

    async def _restore_circuit(self) -> None:
        entry = await kv_get(self.rt.agents, self.key)
        if entry is not None and entry.value is not None:
            with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError, ValueError):
                previous = decode(entry.value, Heartbeat)
                self.breaker.restore(previous.circuit_failures, previous.circuit_opened_at)
                self.keeper.restore(previous.container)

    def _beat_interval(self) -> float:
        return min(contract.AGENT_HEARTBEAT_INTERVAL, self.rt.settings.probe_interval)

    async def _busy(self) -> list[str]:
        """The tasks a restart would cut off: those in hand, and those holding a slot here."""
        slots = (await capacity.read_all(self.rt.capacity)).get(self.key)
        return sorted(set(self.work) | set(slots.tasks if slots else []))

    def _stopping(self) -> None:
        """Its container is being restarted: the scanner's calls fail now, and that is expected."""
        self.breaker.starting = True
        self.beat_now.set()

    def _restarted(self) -> None:
        """The container was just restarted: what failed before is history, the start-up is next."""
        self.breaker.reset()
        self.breaker.starting = True
        self.beat_now.set()

    async def probe(self) -> Heartbeat:
        """Ask the scanner what it is; while the circuit is half open this is its one trial."""
        trial = self.breaker.begin_trial()
        try:
            return await self._probe(trial)
        finally:
            if trial and self.breaker.trial_running:
                self.breaker.failure(trial=True)

    async def _probe(self, trial: bool) -> Heartbeat:
        beat = Heartbeat(
            pool=self.pool,
            instance=self.scanner.id,
            agent_id=self.agent_id,
            at=utcnow(),
            reachable=False,
            authenticated=False,
            scan_api=False,
            container=self.keeper.status,
        )
        answer: ServerStatus | None = None
        unanswered: NessusTransientError | None = None
        try:
            answer = await self.client.server_status()
            self.last_answer = utcnow()
        except NessusTransientError as exc:
            unanswered = exc
        except NessusError:
            pass  # an old or proxied /server/status: the properties below decide
        container = self.scanner.container
        grace = container.startup_grace_minutes * 60.0 if container is not None else 0.0
        self.breaker.starting = self.keeper.restarting or starting(
            answer.status if answer is not None else None, beat.container, utcnow(), grace, self.last_answer
        )
        if self.breaker.starting:
            if trial:
                self.breaker.abandon_trial()
            beat.starting = True
            beat.reachable = answer is not None or (unanswered is not None and unanswered.status_code is not None)
            beat.startup_progress = answer.progress if answer is not None else None
            return beat
        if unanswered is not None:
            self.breaker.failure(trial=trial)
            beat.reachable = unanswered.status_code is not None
            beat.error = str(unanswered)
            return beat
        try:
            props = await self.client.server_properties()
        except NessusTransientError as exc:
            self.breaker.failure(trial=trial)
            beat.reachable = exc.status_code is not None
            beat.error = str(exc)
            return beat
        except NessusError as exc:
            # The scanner answered: it is up, whatever it says about our keys or its licence.
            self.breaker.success(trial=trial)
            beat.reachable = exc.status_code is not None
            beat.error = str(exc)
            return beat
        self.breaker.success(trial=trial)
        beat.reachable = beat.authenticated = True
        beat.scan_api = props.scan_api
        beat.version = props.version
        if not props.scan_api:
            beat.error = "scan API not available on this scanner (licence); launches are not routed here"
        return beat

    def _stamp(self, probed: Heartbeat) -> Heartbeat:
        """The last probe's findings with the circuit, the start-up and the container as they stand
        now (a restart between probes shows at once; the probe is not changed)."""
        beat = msgspec.structs.replace(
            probed,
            at=utcnow(),
            circuit=self.breaker.state,
            circuit_failures=self.breaker.failures,
            circuit_opened_at=self.breaker.opened_at_utc,
            starting=self.breaker.starting,
            container=self.keeper.status,
        )
        if not self.scanner.enabled:
            beat.error = "disabled in scanners.yaml"
        elif beat.starting:
            if beat.reachable:
                progress = f" ({beat.startup_progress}% loaded)" if beat.startup_progress is not None else ""
                what = f"Nessus is loading its plugins{progress}"
            else:
                what = "its container is (re)starting and Nessus does not answer yet"
            beat.error = f"starting up: {what}; no new scans until it is ready"
        elif beat.circuit != "closed":
            retry_in = self.breaker.retry_in() or 0.0
            beat.error = (
                f"circuit {beat.circuit} after {self.breaker.failures} consecutive failed calls to the scanner; "
                f"no new scans until a trial call succeeds (next trial in {retry_in:.0f}s)"
                + (f"; last probe: {probed.error}" if probed.error else "")
            )
        return beat

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        beat = await self.probe()
        probed = loop.time()
        while True:
            honour_cancel()
            try:
                await self.rt.agents.put(self.key, encode(self._stamp(beat)))
            except UNANSWERED as exc:
                # A cluster electing the bucket's leader: the next beat goes in a moment. Raising
                # would stop this scanner's agent and every scan in its hands with it.
                log.warning("heartbeat of %s not written (%s)", self.key, type(exc).__name__)
            self.last_beat = beat
            self.keeper.consider(self.breaker.opened_at_utc)
            wait = self._beat_interval()
            retry_in = self.breaker.retry_in()
            if retry_in is not None and not self.breaker.starting:
                wait = min(wait, max(retry_in, 0.05))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for: it can swallow a cancel on 3.11
                    await self.beat_now.wait()
            self.beat_now.clear()
            state = self.breaker.state
            # A failed call since (a scan's poll) is probed at once: a scanner starting up is not failing.
            due = (
                loop.time() - probed > self.rt.settings.probe_interval
                or not beat.scan_api
                or not beat.reachable
                or self.breaker.starting
                or self.breaker.failures > 0
            )
            # While open, the scanner is left alone; once half open the probe is the one trial.
            if state == "half_open" or (state == "closed" and due):
                beat = await self.probe()
                probed = loop.time()

    # Assignments ------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Resume at once every task this agent claimed that holds a slot here and is in flight."""
        slots = (await capacity.read_all(self.rt.capacity)).get(self.key)
        for task_id in list(slots.tasks) if slots else []:
            record = await self.rt.tasks.get(task_id)
            if record is None or record.instance != self.scanner.id or record.state not in RESUMABLE:
                continue
            if record.claimed_by != self.agent_id:
                continue  # another agent's, or not yet claimed: its assignment is still in the queue
            subject = contract.assignment_subject(self.pool, self.scanner.id, task_id)
            try:
                raw = await self.rt.js.get_last_msg(contract.ASSIGNMENTS_STREAM, subject)
            except NotFoundError:
                log.warning("task %s holds a slot but its assignment is gone", task_id)
                continue
            if raw.data is None:
                continue
            log.info("resuming task %s (%s) after a restart", task_id, record.state)
            self._start(decode(raw.data, Assignment), None)

    async def _consume_loop(self) -> None:
        durable = contract.agent_consumer_name(self.pool, self.scanner.id)
        async for msgs in pull(self.rt.js, contract.ASSIGNMENTS_STREAM, durable, batch=10):
            for msg in msgs:
                await self.handle(msg)

    async def handle(self, msg: Msg) -> None:
        try:
            assignment = decode(msg.data, Assignment)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            await self._give_up(msg, None, None, "unparseable", f"cannot decode assignment: {exc}")
            return
        self._start(assignment, msg)

    def _start(self, assignment: Assignment, msg: Msg | None) -> None:
        work = self.work.get(assignment.task_id)
        if work is None:
            work = self.work[assignment.task_id] = Work()
            work.task = asyncio.create_task(self._execute(assignment, work, msg))
        if msg is not None:
            work.attach(msg)

    async def _execute(self, assignment: Assignment, work: Work, first: Msg | None) -> None:
        task_id = assignment.task_id
        try:
            with (
                task_context(task_id, assignment.trace_id),
                consumer_span(
                    first,
                    "run scan",
                    trace_id=assignment.trace_id,
                    attributes={"scanfleet.task_id": task_id, "scanfleet.scanner": self.key},
                ),
            ):
                failure = await self._run(assignment)
                if failure is not None:
                    await self._fail(assignment, work, failure)
                else:
                    for msg in work.msgs:
                        await msg.ack()
        except Exception:
            log.exception("assignment of %s interrupted; it will be redelivered", task_id)
        finally:
            work.release()
            self.work.pop(task_id, None)

    async def _run(self, assignment: Assignment) -> PermanentFailure | None:
        lifecycle = Lifecycle(
            self.rt,
            self.client,
            assignment,
            agent_id=self.agent_id,
            credentials=self.credentials,
            breaker=self.breaker,
        )
        try:
            await lifecycle.run()
        except PermanentFailure as exc:
            return exc
        record = await self.rt.tasks.get(assignment.task_id)
        if record is not None and record.state.terminal:
            await capacity.release(self.rt.capacity, self.key, assignment.task_id)
        return None

    async def _fail(self, assignment: Assignment, work: Work, failure: PermanentFailure) -> None:
        error = str(failure)
        log.error("scan failed: %s", error)

        await end_task(self.rt, assignment.task_id, TaskState.FAILED, error=error, reason=failure.reason, slot=self.key)
        if not work.msgs:
            await self.rt.dead_letter(
                DeadLetter(
                    task_id=assignment.task_id,
                    trace_id=assignment.trace_id,
                    stage="agent",
                    reason=failure.reason,
                    error=error,
                    failed_at=utcnow(),
                    original_subject=contract.assignment_subject(self.pool, self.scanner.id, assignment.task_id),
                    original=encode(assignment),
                )
            )
        for i, msg in enumerate(work.msgs):
            if i == 0:
                await self._give_up(msg, assignment.task_id, assignment.trace_id, failure.reason, error)
            elif msg.reply:
                await self.rt.nc.publish(msg.reply, f"+TERM {failure.reason}".encode())

    async def _give_up(self, msg: Msg, task_id: str | None, trace_id: str | None, reason: str, error: str) -> None:
        """Dead-letter first, then terminate: +TERM removes the message from the work queue."""
        await self.rt.dead_letter(
            dead_letter_for(
                msg, stage="agent", reason=reason, error=error, task_id=task_id, trace_id=trace_id, keep_original=True
            )
        )
        if msg.reply:
            await self.rt.nc.publish(msg.reply, f"+TERM {reason}".encode())
