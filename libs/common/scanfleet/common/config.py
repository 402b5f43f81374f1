"""Configuration: environment variables plus ``scanners.yaml``.

A missing or invalid file is an error that names the file, the key and the problem; there
is no silent fallback to fake scanners. ``${VAR}`` and ``${VAR:-default}`` are substituted
anywhere inside any string value, before validation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from scanfleet.common.contract import DISPATCH_ACK_WAIT, NAME_RE, Topology, instance_key
from scanfleet.common.scope import Interval, merge, parse_ranges
from scanfleet.common.windows import (
    Blackout,
    Exclusion,
    OnRunning,
    ScanWindows,
    compile_blackout,
    weekly_cron,
    weekly_minutes,
)


class ConfigError(ValueError):
    pass


# Environment ------------------------------------------------------------------------------


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    nats_url: str = "nats://127.0.0.1:4222"
    # This service's NATS user and password (nats-server with authentication: common/nats_auth.py).
    nats_user: str | None = None
    nats_password: str | None = None
    scanners_file: str | None = None
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    log_level: str = "INFO"
    service_host: str = "127.0.0.1"
    service_port: int | None = None
    poll_interval: float = 10.0
    export_timeout: float = 600.0
    agent_instances: str | None = None
    # An agent process's identity, kept across its restarts: it claims tasks under it, and
    # resumes at start only the tasks it claimed (default: the host name; several agent
    # processes on one host need one each).
    agent_id: str | None = None
    dispatcher_lease: bool = True
    dispatcher_lease_ttl: float = 10.0
    dispatch_ack_wait: float = 30.0
    # Scheduling: seconds a waiting request takes to climb one priority class (low → normal →
    # high), so low priority is never starved for ever.
    priority_aging: float = 600.0
    # Scanner agent: per-state deadlines (seconds), retries and the per-scanner circuit breaker.
    pending_timeout: float = 3600.0
    running_timeout: float = 86400.0
    progress_interval: float = 5.0
    retry_base: float = 1.0
    retry_cap: float = 30.0
    retry_attempts: int = 6
    nessus_timeout: float = 30.0
    circuit_threshold: int = 5
    circuit_cooldown: float = 300.0
    # Seconds between probes of a healthy scanner (GET /server/status and /server/properties).
    probe_interval: float = 30.0
    # Nessus template (uuid or name) per scan type.
    template_untrusted: str = "advanced"
    template_authenticated: str = "advanced"
    template_authenticated_privileged: str = "advanced"
    # Credentials: AES keys shared by the gateway and agents only, and the agents' named store.
    credential_keys: str | None = None
    credential_store: str | None = None
    # Janitor: how long ended tasks and their results are kept (seconds; reading results restarts
    # the clock), how often it sweeps, and when a task that nobody moves on counts as stuck.
    completed_ttl: float = 7 * 86400.0
    failed_ttl: float = 30 * 86400.0
    housekeeping_interval: float = 60.0
    stale_queued_after: float = 86400.0
    stale_dispatched_after: float = 1800.0
    stale_running_after: float = 2 * 86400.0
    stale_exporting_after: float = 2 * 3600.0
    stale_validating_after: float = 2 * 3600.0
    # Admin REST routes (/v1/admin) are refused unless this bearer token is set.
    admin_token: str | None = None
    # Access control: the clients file (roles, scopes, token hashes, OAuth issuer), the URL
    # clients use for /mcp (the OAuth audience; default http://<gateway host>:<port>/mcp),
    # extra Host/Origin values browsers may send, and ranges denied to every client on top of
    # the built-in list and the addresses of scanfleet's own infrastructure.
    clients_file: str | None = None
    public_url: str | None = None
    allowed_hosts: str | None = None
    allowed_origins: str | None = None
    deny_ranges: str | None = None
    max_body_bytes: int = 1024 * 1024
    audit_retention_days: float = 365.0
    # History: how often each janitor looks for due schedule occurrences (seconds), and how many
    # days an agent keeps a Nessus scan it created once its export is stored (0: delete at once;
    # never past the task's expiry), checking every ``nessus_sweep_interval`` seconds.
    schedule_interval: float = 5.0
    nessus_keep_days: float = 0.0
    nessus_sweep_interval: float = 60.0
    # Validator: worker processes that parse big exports in parallel (unset: 2 on 2+ cores, 0 on one).
    validator_parse_workers: int | None = None
    # Cluster: replicas of every stream, bucket and object store (1 on one server, 3 on a
    # three-node cluster; provisioning brings an existing deployment to it). ``nats_url`` may
    # list every server of a cluster, comma-separated.
    nats_replicas: int = 1
    # Keys sealing MCP's multi-round-trip requestState (a confirmation asked by one gateway
    # answered through another), comma-separated, the first seals, every one unseals. Every
    # gateway replica needs the same; unset, each process makes its own (one gateway only).
    mcp_request_state_keys: str | None = None

    def __repr__(self) -> str:
        url = re.sub(r"//[^/@]*@", "//<credentials>@", self.nats_url)
        return (
            f"Settings(nats_url={url!r}, nats_user={self.nats_user!r}, "
            f"nats_password={'<set>' if self.nats_password else None}, "
            f"credential_keys={'<set>' if self.credential_keys else None}, "
            f"mcp_request_state_keys={'<set>' if self.mcp_request_state_keys else None})"
        )

    @property
    def nats_urls(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        raw: dict[str, Any] = {}
        for field in cls.__struct_fields__:
            value = env.get(f"SCANFLEET_{field.upper()}")
            if value is not None and value != "":
                raw[field] = value
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            field = str(exc).partition(" - at `$.")[2].rstrip("`")
            raise ConfigError(f"environment: SCANFLEET_{field.upper()}: {str(exc).partition(' - at')[0]}") from None

    def require_scanners_file(self) -> Path:
        if not self.scanners_file:
            raise ConfigError("environment: SCANFLEET_SCANNERS_FILE is not set (path to scanners.yaml)")
        return Path(self.scanners_file)


# scanners.yaml ----------------------------------------------------------------------------


class ScannerAuth(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    access_key: str | None = None
    secret_key: str | None = None
    username: str | None = None
    password: str | None = None


ENGINE_SCHEMES = ("unix://", "tcp://", "http://", "https://")


class ContainerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The container a scanner runs in, on a Docker-API engine the scanner's agent reaches.

    The agent reports the container's state and restarts it when an operator asks, or on its
    own once the circuit has stayed open ``auto_restart_after_minutes`` (opt-in; at most once
    per that period). ``startup_grace_minutes``: after the container (re)starts, a scanner that
    does not answer yet counts as starting, not as failing.
    """

    name: str
    engine: str = "unix:///var/run/docker.sock"
    auto_restart_after_minutes: float | None = None
    startup_grace_minutes: float = 5.0
    stop_timeout_seconds: int = 30


class ScannerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    id: str
    url: str
    auth: ScannerAuth
    max_concurrent_scans: int = 2
    enabled: bool = True
    tls_verify: bool = True
    ca_bundle: str | None = None
    labels: dict[str, str] = {}
    container: ContainerConfig | None = None


class WindowConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A recurring blackout: ``cron`` + ``duration_minutes``, or ``days`` + ``start`` + ``end`` (weekly)."""

    name: str
    timezone: str = "UTC"
    cron: str | None = None
    duration_minutes: float | None = None
    days: list[str] = []
    start: str | None = None
    end: str | None = None
    targets: list[str] = []
    on_running: OnRunning = "pause"

    def compile(self, pool: str | None) -> Blackout:
        if self.cron is not None:
            if self.start is not None or self.end is not None or self.days:
                raise ValueError("give either cron and duration_minutes, or days, start and end")
            if self.duration_minutes is None:
                raise ValueError("duration_minutes: required with cron")
            cron, minutes = self.cron, self.duration_minutes
        else:
            if self.start is None or self.end is None:
                raise ValueError("give either cron and duration_minutes, or days, start and end")
            cron, minutes = weekly_cron(self.days, self.start), weekly_minutes(self.start, self.end)
        return compile_blackout(
            name=self.name,
            cron=cron,
            duration_minutes=minutes,
            timezone=self.timezone,
            targets=self.targets,
            pool=pool,
            on_running=self.on_running,
        )


class ExclusionConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    targets: list[str]
    reason: str


class PoolConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    scanners: list[ScannerConfig]
    description: str = ""
    # The networks this pool's scanners reach (empty: not declared, reaches whatever it is sent).
    ranges: list[str] = []
    windows: list[WindowConfig] = []


class SchedulingRules(msgspec.Struct, kw_only=True, frozen=True):
    """What routing and windows need of ``scanners.yaml``; published in the registry's fleet meta
    so the gateway, the dispatcher and the agents judge by the same rules after a reload."""

    ranges: dict[str, list[str]] = {}
    windows: list[WindowConfig] = []
    pool_windows: dict[str, list[WindowConfig]] = {}
    exclusions: list[ExclusionConfig] = []

    def scan_windows(self) -> ScanWindows:
        blackouts = [w.compile(None) for w in self.windows]
        blackouts += [w.compile(pool) for pool, ws in sorted(self.pool_windows.items()) for w in ws]
        exclusions = [
            Exclusion(tuple(parse_ranges(e.targets, what="exclusions.targets")), e.reason) for e in self.exclusions
        ]
        return ScanWindows(tuple(blackouts), tuple(exclusions))

    def pool_ranges(self) -> dict[str, list[Interval]]:
        return {pool: merge(parse_ranges(r, what=f"pools.{pool}.ranges")) for pool, r in self.ranges.items() if r}


class FleetConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    version: int = 1
    default_pool: str | None = None
    pools: dict[str, PoolConfig]
    # Recurring blackouts over target ranges in every pool, and targets never to be scanned.
    windows: list[WindowConfig] = []
    exclusions: list[ExclusionConfig] = []

    def rules(self) -> SchedulingRules:
        return SchedulingRules(
            ranges={pool: list(cfg.ranges) for pool, cfg in self.pools.items() if cfg.ranges},
            windows=list(self.windows),
            pool_windows={pool: list(cfg.windows) for pool, cfg in self.pools.items() if cfg.windows},
            exclusions=list(self.exclusions),
        )

    def instances(self) -> list[tuple[str, ScannerConfig]]:
        return [(pool, s) for pool, cfg in self.pools.items() for s in cfg.scanners]

    def find(self, pool: str, instance: str) -> ScannerConfig:
        for scanner in self.pools[pool].scanners:
            if scanner.id == instance:
                return scanner
        raise KeyError(instance_key(pool, instance))

    @property
    def pool_names(self) -> list[str]:
        return sorted(self.pools)

    def topology(self, dispatch_ack_wait: float = DISPATCH_ACK_WAIT) -> Topology:
        pools = {pool: [s.id for s in cfg.scanners] for pool, cfg in self.pools.items()}
        return Topology(pools, dispatch_ack_wait=dispatch_ack_wait)


# Docker's rule for container names (an id is hex, which it also matches).
CONTAINER_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}\Z")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def substitute(value: Any, env: Mapping[str, str], path: str = "$") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string inside ``value``."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = env.get(name)
            if found is not None and found != "":
                return found
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set and has no default")

        return _VAR.sub(repl, value)
    if isinstance(value, dict):
        return {k: substitute(v, env, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _describe(exc: msgspec.ValidationError, prefix: str = "") -> str:
    """msgspec's ``Expected int, got str - at `$.a[0].b``` as ``<prefix>.a[0].b: Expected int, got str``."""
    message, _, where = str(exc).partition(" - at `")
    where = where.rstrip("`").removeprefix("$").removeprefix(".")
    if prefix and where:
        where = f"{prefix}{'' if where.startswith('[') else '.'}{where}"
    return f"{where or prefix or '<top level>'}: {message}"


def parse_fleet(data: Any, *, source: str, env: Mapping[str, str] | None = None) -> FleetConfig:
    env = os.environ if env is None else env
    if data is None:
        raise ConfigError(f"{source}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with a 'pools' key")
    try:
        data = substitute(data, env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {str(exc).removeprefix('$.')}") from None
    pools_raw = data.get("pools")
    if not isinstance(pools_raw, dict):
        raise ConfigError(f"{source}: pools: must be a mapping of pool names to pools")
    pools: dict[str, PoolConfig] = {}
    for name, raw in pools_raw.items():
        try:
            pools[str(name)] = msgspec.convert(raw, PoolConfig, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{source}: {_describe(exc, prefix=f'pools.{name}')}") from None
    try:
        fleet = msgspec.convert({**data, "pools": {}}, FleetConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    fleet = msgspec.structs.replace(fleet, pools=pools)
    _check(fleet, source)
    return fleet


def _check(fleet: FleetConfig, source: str) -> None:
    def fail(where: str, problem: str) -> None:
        raise ConfigError(f"{source}: {where}: {problem}")

    if fleet.version != 1:
        fail("version", f"unsupported version {fleet.version} (expected 1)")
    if not fleet.pools:
        fail("pools", "no pools are defined")
    for pool, pool_cfg in fleet.pools.items():
        where = f"pools.{pool}"
        if not NAME_RE.match(pool):
            fail(where, "pool names may use only letters, digits, '_' and '-' (at most 64)")
        if not pool_cfg.scanners:
            fail(f"{where}.scanners", "a pool needs at least one scanner")
        seen: set[str] = set()
        for i, scanner in enumerate(pool_cfg.scanners):
            at = f"{where}.scanners[{i}]"
            if not NAME_RE.match(scanner.id):
                fail(f"{at}.id", "scanner ids may use only letters, digits, '_' and '-' (at most 64)")
            if scanner.id in seen:
                fail(f"{at}.id", f"duplicate scanner id {scanner.id!r} in pool {pool!r}")
            seen.add(scanner.id)
            if not scanner.url.startswith(("https://", "http://")):
                fail(f"{at}.url", f"must be an http(s) URL, got {scanner.url!r}")
            if scanner.max_concurrent_scans < 1:
                fail(f"{at}.max_concurrent_scans", f"must be at least 1, got {scanner.max_concurrent_scans}")
            auth = scanner.auth
            keys = auth.access_key is not None or auth.secret_key is not None
            login = auth.username is not None or auth.password is not None
            if keys == login:
                fail(f"{at}.auth", "give either access_key and secret_key, or username and password")
            if keys and not (auth.access_key and auth.secret_key):
                fail(f"{at}.auth", "access_key and secret_key must both be set")
            if login and not (auth.username and auth.password):
                fail(f"{at}.auth", "username and password must both be set")
            if scanner.ca_bundle is not None and not scanner.tls_verify:
                fail(f"{at}.ca_bundle", "a CA bundle makes no sense with tls_verify: false")
            if scanner.container is not None:
                _check_container(scanner.container, f"{at}.container", fail)
        try:
            parse_ranges(pool_cfg.ranges, what="ranges")
        except ValueError as exc:
            fail(where, str(exc))
        for i, window in enumerate(pool_cfg.windows):
            _check_window(window, f"{where}.windows[{i}]", fail)
    for i, window in enumerate(fleet.windows):
        _check_window(window, f"windows[{i}]", fail)
    for i, exclusion in enumerate(fleet.exclusions):
        try:
            parse_ranges(exclusion.targets, what="targets")
        except ValueError as exc:
            fail(f"exclusions[{i}]", str(exc))
        if not exclusion.reason.strip():
            fail(f"exclusions[{i}].reason", "say why these targets are never scanned")
    if fleet.default_pool is not None and fleet.default_pool not in fleet.pools:
        fail("default_pool", f"{fleet.default_pool!r} is not one of the pools {sorted(fleet.pools)}")


def _check_container(container: ContainerConfig, where: str, fail: Callable[[str, str], None]) -> None:
    if not CONTAINER_NAME_RE.match(container.name):
        fail(f"{where}.name", f"not a container name or id: {container.name!r}")
    if not container.engine.startswith(ENGINE_SCHEMES):
        schemes = ", ".join(ENGINE_SCHEMES)
        fail(f"{where}.engine", f"must be a Docker API URL ({schemes}), got {container.engine!r}")
    after = container.auto_restart_after_minutes
    if after is not None and after <= 0:
        fail(f"{where}.auto_restart_after_minutes", f"must be above 0 (leave it out for none), got {after}")
    if container.startup_grace_minutes < 0:
        fail(f"{where}.startup_grace_minutes", f"must be 0 or more, got {container.startup_grace_minutes}")
    if not 0 <= container.stop_timeout_seconds <= 600:
        fail(f"{where}.stop_timeout_seconds", f"must be between 0 and 600, got {container.stop_timeout_seconds}")


def _check_window(window: WindowConfig, where: str, fail: Callable[[str, str], None]) -> None:
    try:
        window.compile(None)
    except ValueError as exc:
        fail(where, str(exc))


def load_fleet(path: str | Path, env: Mapping[str, str] | None = None) -> FleetConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    return parse_fleet(data, source=str(path), env=env)
