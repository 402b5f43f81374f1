"""Scanner state whose scan status is a pure function of the clock.

Nothing runs in the background: every request recomputes where each scan is from its timestamps, which keeps
the emulator deterministic under a fake clock and cheap with hundreds of scans.
"""

from __future__ import annotations

import math
import random
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from scanfleet.emulator.config import EmulatorConfig
from scanfleet.emulator.report import ReportContext, ReportModel, build_report, host_rng
from scanfleet.emulator.targets import TargetSpec
from scanfleet.emulator.world import HostChange, World, hosts_down

ACTIVE = frozenset({"pending", "running"})
BUSY = frozenset({"pending", "running", "paused", "stopping"})
_DURATION_HINT = re.compile(r"emulator-duration=(\d+(?:\.\d+)?)")
MY_SCANS, TRASH = 3, 2
ADVANCED_UUID = "ad629e16-03b6-8c1d-cef6-ef8c9dd3c658d24bd260ef5f9e66"
BASIC_UUID = "731a8e52-3ea6-a291-ec0a-d2ff0619c19d7bd788d6be818b65"
TEMPLATES: tuple[tuple[str, str, str, str], ...] = (
    (ADVANCED_UUID, "advanced", "Advanced Scan", "Configure a scan without using any recommendations."),
    (BASIC_UUID, "basic", "Basic Network Scan", "A full system scan suitable for any host."),
    (
        "bbd4f805-3966-d464-b2d1-0079eb89d69708c3a05ec2812bcf",
        "discovery",
        "Host Discovery",
        "A simple scan to discover live hosts and open ports.",
    ),
    (
        "0625147c-30fe-d79f-e54f-ce7ccd7523e9b63d84cb81c23c2f",
        "patch_audit",
        "Credentialed Patch Audit",
        "Authenticate to hosts and enumerate missing updates.",
    ),
    (
        "c3cbcd46-329f-a9ed-1077-554f8c2af33d0d44f09d736969bf",
        "webapp",
        "Web Application Tests",
        "Scan for published and unknown web vulnerabilities using Nessus Scanner.",
    ),
    (
        "d16c51fa-597f-67a8-9add-74d5ab066b49a918400c42a035f7",
        "malware",
        "Malware Scan",
        "Scan for malware on Windows and Unix systems.",
    ),
)


@dataclass(frozen=True, slots=True)
class SshCredential:
    username: str
    password: str | None
    auth_method: str


@dataclass
class Run:
    """One launch of a scan (a Nessus history entry); active time stops accumulating while paused."""

    history_id: int
    uuid: str
    launched_at: float
    resumed_at: float | None
    accumulated: float = 0.0
    paused: bool = False
    stop_at: float | None = None
    aborted_at: float | None = None
    stuck_pending: bool = False
    segments: list[tuple[float, float]] = field(default_factory=list)
    model: ReportModel | None = None
    duration: float = 0.0
    # The world as this run found it (``world.py``): its epoch, its changes, the hosts that answered.
    epoch: int = 1
    changes: tuple[HostChange, ...] = ()
    hosts: list[str] = field(default_factory=list)


@dataclass
class Scan:
    id: int
    uuid: str
    name: str
    description: str
    text_targets: str
    targets: list[TargetSpec]
    alive: list[str]
    template_uuid: str
    policy_name: str
    folder_id: int
    owner: str
    created: int
    modified: int
    credentials: list[SshCredential]
    enabled: bool = False
    runs: list[Run] = field(default_factory=list)

    @property
    def run(self) -> Run | None:
        return self.runs[-1] if self.runs else None


@dataclass
class ExportJob:
    file_id: int
    token: str
    scan_id: int
    ready_at: float
    model: ReportModel
    error: bool = False
    corrupt: str | None = None


@dataclass
class EndpointFault:
    """Fail matching requests: ``status`` 0 hangs the request; ``count`` None means forever."""

    method: str
    path: str
    status: int = 503
    rate: float = 1.0
    count: int | None = None

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and self.path in ("*", path)


class ConflictError(Exception):
    """The scan is not in a state that allows the requested transition."""


class EmulatorState:
    """All mutable state of one emulated scanner."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.scan_api = config.scan_api
        self.export_error = False
        self.export_stuck = False
        self.export_corrupt: str | None = None
        self.stay_pending = False
        self.create_then_fail = 0
        self.latency = 0.0
        self.endpoint_faults: list[EndpointFault] = []
        self.rng = random.Random(config.seed)
        self.fail_requests: list[tuple[int, float | None]] = []
        self.sessions: dict[str, str] = {}
        self.scans: dict[int, Scan] = {}
        # Deleted scans are gone from the API, but their truth stays readable under /_emulator.
        self.deleted: dict[int, Scan] = {}
        self.exports: dict[int, ExportJob] = {}
        self.tokens: dict[str, ExportJob] = {}
        self.world = World()
        self.scans_created = 0
        self.launches = 0
        self._next_scan = 5
        self._next_file = 1000
        self.started_at = self.loading_until = 0.0
        self.boot(clock())

    def total_active(self, run: Run) -> float:
        return self.config.pending_duration + run.duration

    def scan_duration(self, scan: Scan) -> float:
        """The configured duration, unless the scan's description carries an
        ``emulator-duration=<seconds>`` hint (benchmarks give each scan its own)."""
        match = _DURATION_HINT.search(scan.description)
        return float(match.group(1)) if match else self.config.scan_duration

    def login(self, username: str) -> str:
        token = secrets.token_hex(24)
        self.sessions[token] = username
        return token

    def create_scan(
        self,
        *,
        name: str,
        description: str,
        text_targets: str,
        targets: list[TargetSpec],
        template_uuid: str,
        policy_name: str,
        folder_id: int,
        owner: str,
        credentials: list[SshCredential],
        enabled: bool,
    ) -> Scan:
        now = int(self.clock())
        scan = Scan(
            self._next_scan,
            f"template-{uuid.uuid4()}",
            name,
            description,
            text_targets,
            targets,
            self._alive(targets),
            template_uuid,
            policy_name,
            folder_id,
            owner,
            now,
            now,
            credentials,
            enabled,
        )
        self.scans[scan.id] = scan
        self._next_scan += 1
        self.scans_created += 1
        return scan

    def _alive(self, targets: list[TargetSpec]) -> list[str]:
        """Single targets are always up; in ranges about 60% answer, and at least one does."""
        alive: list[str] = []
        for spec in targets:
            addresses = list(spec.addresses())
            if spec.single:
                alive += addresses
                continue
            chosen = [a for a in addresses if host_rng(self.config.seed, a).random() < 0.6]
            alive += chosen or addresses[:1]
        return list(dict.fromkeys(alive))

    def elapsed(self, run: Run, now: float) -> float:
        active = run.accumulated + (now - run.resumed_at if run.resumed_at is not None else 0.0)
        return min(active, self.total_active(run))

    def status(self, scan: Scan, now: float) -> str:
        run = scan.run
        if run is None:
            return "empty"
        if run.aborted_at is not None:
            return "aborted"
        if run.stop_at is not None:
            return "stopping" if now < run.stop_at + self.config.stopping_duration else "canceled"
        if run.paused:
            return "paused"
        if run.stuck_pending:
            return "pending"
        elapsed = self.elapsed(run, now)
        if elapsed < self.config.pending_duration:
            return "pending"
        return "running" if elapsed < self.total_active(run) else "completed"

    @staticmethod
    def finished_status(run: Run) -> str:
        """Status of a superseded run: a new launch is only possible once the previous one ended."""
        if run.aborted_at is not None:
            return "aborted"
        return "canceled" if run.stop_at is not None else "completed"

    def end_time(self, scan: Scan, now: float) -> float | None:
        run = scan.run
        status = self.status(scan, now)
        if run is None or status not in {"completed", "canceled", "aborted"}:
            return None
        if run.aborted_at is not None:
            return run.aborted_at
        if run.stop_at is not None:
            return run.stop_at + self.config.stopping_duration
        assert run.resumed_at is not None
        return run.resumed_at + self.total_active(run) - run.accumulated

    def scan_fraction(self, run: Run, now: float) -> float:
        elapsed = self.elapsed(run, now)
        if elapsed >= self.total_active(run):
            # (pending + duration) - pending is not always duration in floating point (2.3 - 0.3):
            # a finished run must count as finished, or its export holds no host at all.
            return 1.0
        done = elapsed - self.config.pending_duration
        return max(0.0, min(1.0, done / run.duration if run.duration > 0 else 1.0))

    def host_progress(self, scan: Scan, now: float, run: Run | None = None) -> list[int]:
        """Percent done per host of the run (the current one by default); earlier hosts run ahead
        so progress looks staggered, and they finish first (a stopped run has hosts done and hosts left)."""
        run = run or scan.run
        if run is None:
            return [0] * len(scan.alive)
        fraction = self.scan_fraction(run, now)
        count = len(run.hosts)
        progress = []
        for index in range(count):
            boost = 1.0 + 0.5 * (count - 1 - index) / max(count - 1, 1)
            progress.append(100 if fraction >= 1.0 else min(100, int(fraction * boost * 100)))
        return progress

    def launch(self, scan: Scan, now: float) -> Run:
        if self.status(scan, now) in BUSY:
            raise ConflictError("Scan is already running")
        run = Run(
            len(scan.runs) + 1,
            str(uuid.uuid4()),
            now,
            now,
            stuck_pending=self.stay_pending,
            duration=self.scan_duration(scan),
            epoch=self.world.epoch,
            changes=tuple(self.world.at(self.world.epoch)),
        )
        down = hosts_down(list(run.changes))
        run.hosts = [h for h in scan.alive if h not in down]
        scan.runs.append(run)
        scan.modified = int(now)
        self.launches += 1
        return run

    def _freeze(self, run: Run, now: float) -> None:
        if run.resumed_at is not None:
            run.segments.append((run.resumed_at, min(now, run.resumed_at + self.total_active(run) - run.accumulated)))
            run.accumulated = self.elapsed(run, now)
            run.resumed_at = None

    def pause(self, scan: Scan, now: float) -> None:
        if self.status(scan, now) not in ACTIVE or scan.run is None:
            raise ConflictError("Scan is not running")
        self._freeze(scan.run, now)
        scan.run.paused = True

    def resume(self, scan: Scan, now: float) -> None:
        if self.status(scan, now) != "paused" or scan.run is None:
            raise ConflictError("Scan is not paused")
        scan.run.paused = False
        scan.run.resumed_at = now

    def stop(self, scan: Scan, now: float) -> None:
        if self.status(scan, now) not in ACTIVE | {"paused"} or scan.run is None:
            raise ConflictError("Scan is not running")
        self._freeze(scan.run, now)
        scan.run.paused = False
        scan.run.stop_at = now

    def abort(self, scan: Scan, now: float) -> None:
        if scan.run is None:
            raise ConflictError("Scan was never launched")
        self._freeze(scan.run, now)
        scan.run.aborted_at = now

    def credential_outcome(self, scan: Scan) -> tuple[str | None, str | None]:
        """Return (accepted user, rejected user); a password matching any emulated account is accepted."""
        for cred in scan.credentials:
            if cred.password is not None and self.config.ssh_accounts.get(cred.username) == cred.password:
                return cred.username, None
        return None, scan.credentials[0].username if scan.credentials else None

    def find_run(self, scan: Scan, history_id: int | None) -> Run | None:
        """The run with this history id (Nessus's ``history_id``), or the current one."""
        if history_id is None:
            return scan.run
        return next((r for r in scan.runs if r.history_id == history_id), None)

    def model(self, scan: Scan, run: Run | None = None) -> ReportModel:
        """The full result of a run (the current one by default), generated once and cached on it."""
        run = run or scan.run
        assert run is not None
        if run.model is None:
            accepted, rejected = self.credential_outcome(scan)
            ctx = ReportContext(
                scan_name=scan.name,
                policy_name=scan.policy_name,
                hosts=tuple(run.hosts),
                seed=self.config.seed if self.world.seed is None else self.world.seed,
                start=run.launched_at + self.config.pending_duration,
                duration=run.duration,
                version=self.config.version,
                scanner_ip=self.config.scanner_ip,
                ssh_user=accepted,
                rejected_user=rejected,
                changes=run.changes,
            )
            run.model = build_report(ctx)
        return run.model

    def visible_model(self, scan: Scan, now: float, run: Run | None = None) -> ReportModel:
        """What an export taken now contains: only the hosts that have finished."""
        run = run or scan.run
        assert run is not None
        model = self.model(scan, run)
        progress = self.host_progress(scan, now, run)
        done = {name for name, pct in zip(run.hosts, progress, strict=True) if pct >= 100}
        return model if len(done) == len(run.hosts) else model.subset(done)

    def create_export(self, scan: Scan, now: float, run: Run | None = None) -> ExportJob:
        job = ExportJob(
            self._next_file,
            secrets.token_hex(32),
            scan.id,
            math.inf if self.export_stuck else now + self.config.export_delay,
            self.visible_model(scan, now, run),
            self.export_error,
            self.export_corrupt,
        )
        self._next_file += 1
        self.exports[job.file_id] = job
        self.tokens[job.token] = job
        return job

    def fault_for(self, method: str, path: str) -> EndpointFault | None:
        """The first configured fault that fires for this request, consuming one of its count."""
        for fault in self.endpoint_faults:
            if not fault.matches(method, path) or self.rng.random() >= fault.rate:
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self.endpoint_faults.remove(fault)
            return fault
        return None

    def export_status(self, job: ExportJob, now: float) -> str:
        if job.error:
            return "error"
        return "ready" if now >= job.ready_at else "loading"

    def loading_progress(self, now: float) -> int | None:
        """Percent of the plugins loaded while Nessus is starting up; None once it is ready."""
        if now >= self.loading_until:
            return None
        span = self.loading_until - self.started_at
        return min(99, int(100 * (now - self.started_at) / span)) if span > 0 else 0

    def boot(self, now: float, loading: float | None = None) -> None:
        """Nessus has (re)started at ``now``: its plugins load for ``loading`` seconds (the
        configured start-up by default)."""
        self.started_at = now
        self.loading_until = now + (self.config.startup_duration if loading is None else loading)

    def restart(self, now: float, loading: float | None = None) -> None:
        """What a Nessus restart does: sessions end, scans that were under way are aborted, and
        the plugins load again for ``loading`` seconds (the configured start-up by default)."""
        self.sessions.clear()
        for scan in self.scans.values():
            if scan.run is not None and self.status(scan, now) in BUSY:
                self.abort(scan, now)
        self.boot(now, loading)

    def running_now(self, now: float) -> int:
        return sum(1 for scan in self.scans.values() if self.status(scan, now) in ACTIVE)

    def max_running_seen(self, now: float) -> int:
        """Exact peak of concurrently active runs, from every run's active intervals."""
        events: list[tuple[float, int]] = []
        for scan in (*self.scans.values(), *self.deleted.values()):
            for run in scan.runs:
                segments = list(run.segments)
                if run.resumed_at is not None:
                    segments.append((run.resumed_at, run.resumed_at + self.total_active(run) - run.accumulated))
                for start, planned_end in segments:
                    if start > now:
                        continue
                    end = planned_end if planned_end <= now else math.inf
                    if end > start:
                        events += [(start, 1), (end, -1)]
        peak = current = 0
        for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
            current += delta
            peak = max(peak, current)
        return peak
