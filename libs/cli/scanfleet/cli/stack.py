"""The embedded default: nats-server, an emulated fleet and the five services as processes.

``scanfleet up`` runs it for a newcomer; the end-to-end tests run the very same thing, and
can kill or restart any part of it. nats-server runs with authentication, one user per
service (``common/nats_auth.py``); every part but the gateway listens on loopback only,
whatever ``host`` the gateway is given.

Grown, it is the deployment of docs/deployment.md on one machine: ``nats_nodes=3`` runs a
JetStream cluster on loopback (every stream, bucket and object store at three replicas,
every service given all three URLs) and ``replicas`` runs several processes of a service
(``gateway-2`` on a port of its own, ``agent-2`` serving the same scanners).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from scanfleet.common.clients import Client, ClientsFile, Role, issue_token, load_clients, save_clients
from scanfleet.common.crypto import generate_key_spec
from scanfleet.common.embedded import LOOPBACK, NatsCluster, NatsServer, free_port
from scanfleet.common.nats_auth import generate_passwords, write_private
from scanfleet.common.scope import Scope

SERVICES = ("gateway", "dispatcher", "agent", "validator", "janitor")


@dataclass(frozen=True)
class EmulatedScanner:
    pool: str
    id: str
    max_concurrent_scans: int = 2


# The emulated fleet answers for any address; the local client may scan these, and nothing else.
EMULATED_RANGES = ("10.0.0.0/8", "192.168.0.0/16")
EMULATED_NAMES = ("*.scanfleet.test",)
LOCAL_CLIENT = "local"

DEFAULT_FLEET = (
    EmulatedScanner("default", "scanner-1", 2),
    EmulatedScanner("default", "scanner-2", 2),
    EmulatedScanner("dmz", "scanner-3", 1),
)


@dataclass
class StackOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    nats_port: int | None = None
    gateway_port: int | None = None
    fleet: tuple[EmulatedScanner, ...] = DEFAULT_FLEET
    scan_duration: float = 20.0
    poll_interval: float = 2.0
    ssh_accounts: dict[str, str] = field(default_factory=dict)
    # Named target credentials for the agents' store: name -> {username, password, ...}.
    stored_credentials: dict[str, dict[str, str]] = field(default_factory=dict)
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    emulator_overrides: dict[str, object] = field(default_factory=dict)
    # Scanners outside the emulated fleet (pool -> scanners.yaml entries), e.g. a Nessus container.
    extra_scanners: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    # 1: one nats-server; 3 (or more): a JetStream cluster on loopback, every stream at R3.
    nats_nodes: int = 1
    # Processes per service (default one each): {"gateway": 2, "agent": 2}.
    replicas: dict[str, int] = field(default_factory=dict)

    def names(self, service: str) -> list[str]:
        """The process names of a service: ``gateway``, then ``gateway-2``, ``gateway-3`` ..."""
        count = max(1, self.replicas.get(service, 1))
        return [service, *(f"{service}-{i}" for i in range(2, count + 1))]


def _env_name(scanner: EmulatedScanner, what: str) -> str:
    return f"SCANFLEET_EMU_{scanner.pool}_{scanner.id}_{what}".upper().replace("-", "_")


def _credential_env(name: str, key: str) -> str:
    return f"SCANFLEET_CRED_{name}_{key}".upper().replace("-", "_")


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class Stack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.data_dir = options.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        # New passwords at every start; the services get theirs through their environment.
        self.nats_passwords = generate_passwords()
        self.nats: NatsServer | NatsCluster
        if options.nats_nodes > 1:
            self.nats = NatsCluster(
                self.data_dir / "nats",
                size=options.nats_nodes,
                passwords=self.nats_passwords,
                base_port=options.nats_port,
            )
        else:
            self.nats = NatsServer(
                self.data_dir / "nats", host=LOOPBACK, port=options.nats_port, passwords=self.nats_passwords
            )
        self.gateway_port = options.gateway_port or free_port(options.host)
        # Every gateway process by name; ``gateway`` is the one of ``gateway_url``.
        self.gateway_ports = {"gateway": self.gateway_port}
        # Every gateway seals MCP's requestState with the same key, so any one can unseal it.
        self.request_state_key = secrets.token_hex(32)
        self.emulator_ports = {s: free_port(LOOPBACK) for s in options.fleet}
        # /health, /ready, /metrics of each service process (the gateway serves them on its own port).
        self.service_ports = {s: free_port(LOOPBACK) for s in SERVICES if s != "gateway"}
        self.secrets = {s: (secrets.token_hex(32), secrets.token_hex(32)) for s in options.fleet}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.credential_keys = generate_key_spec("k1")
        self.token = ""
        self.new_token = False

    # Addresses --------------------------------------------------------------------------

    @property
    def gateway_url(self) -> str:
        return self.gateway_url_of("gateway")

    @property
    def mcp_url(self) -> str:
        return f"{self.gateway_url}/mcp"

    def gateway_url_of(self, name: str) -> str:
        """The base URL of the gateway process ``name`` (``gateway``, ``gateway-2`` ...)."""
        return f"http://{self.options.host}:{self.gateway_ports[name]}"

    def service_url(self, name: str) -> str:
        """Where a service process serves /health, /ready and /metrics."""
        if name in self.gateway_ports:
            return self.gateway_url_of(name)
        return f"http://{LOOPBACK}:{self.service_ports[name]}"

    def emulator_url(self, scanner: EmulatedScanner) -> str:
        return f"http://{LOOPBACK}:{self.emulator_ports[scanner]}"

    @property
    def scanners_file(self) -> Path:
        return self.data_dir / "scanners.yaml"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCANFLEET_")}
        env.update(
            {
                "SCANFLEET_NATS_URL": self.nats.address,
                "SCANFLEET_SCANNERS_FILE": str(self.scanners_file),
                "SCANFLEET_GATEWAY_HOST": self.options.host,
                "SCANFLEET_GATEWAY_PORT": str(self.gateway_port),
                "SCANFLEET_POLL_INTERVAL": str(self.options.poll_interval),
                "SCANFLEET_LOG_LEVEL": self.options.log_level,
                "SCANFLEET_CLIENTS_FILE": str(self.clients_file),
                "SCANFLEET_MCP_REQUEST_STATE_KEYS": self.request_state_key,
            }
        )
        if self.options.nats_nodes > 1:
            env["SCANFLEET_NATS_REPLICAS"] = str(min(3, self.options.nats_nodes))
        for scanner, (access, secret) in self.secrets.items():
            env[_env_name(scanner, "ACCESS_KEY")] = access
            env[_env_name(scanner, "SECRET_KEY")] = secret
        env["SCANFLEET_CREDENTIAL_KEYS"] = self.credential_keys
        env["SCANFLEET_CREDENTIAL_STORE"] = str(self.credential_store)
        for name, fields in self.options.stored_credentials.items():
            for key, value in fields.items():
                env[_credential_env(name, key)] = value
        env.update(self.options.extra_env)
        return env

    @property
    def credential_store(self) -> Path:
        return self.data_dir / "credentials.yaml"

    @property
    def nats_passwords_file(self) -> Path:
        """Every NATS user's password (the admin's for the nats CLI), readable by the owner only."""
        return self.data_dir / "nats-users.json"

    def nats_env(self, user: str) -> dict[str, str]:
        return {"SCANFLEET_NATS_USER": user, "SCANFLEET_NATS_PASSWORD": self.nats_passwords[user]}

    def service_env(self, service: str) -> dict[str, str]:
        """Only the gateway and the agents hold the credential key; only the agents the store.
        Each service connects to NATS as its own user; the emulator not at all."""
        env = self.env()
        if service in self.nats_passwords:
            env.update(self.nats_env(service))
        if service not in ("gateway", "agent"):
            env.pop("SCANFLEET_CREDENTIAL_KEYS", None)
        if service != "agent":
            env.pop("SCANFLEET_CREDENTIAL_STORE", None)
            for key in [k for k in env if k.startswith("SCANFLEET_CRED_")]:
                env.pop(key)
        return env

    @property
    def clients_file(self) -> Path:
        return self.data_dir / "clients.yaml"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "local-token"

    def ensure_local_client(self) -> bool:
        """On first start: a local admin client scoped to the emulated ranges, and its token
        (kept in ``local-token``, owner-only). Returns True when the token is new."""
        if self.clients_file.exists() and self.token_file.exists():
            self.token = self.token_file.read_text().strip()
            return False
        data = load_clients(self.clients_file) if self.clients_file.exists() else ClientsFile()
        if not any(c.id == LOCAL_CLIENT for c in data.clients):
            scope = Scope(
                targets=list(EMULATED_RANGES),
                hostnames=list(EMULATED_NAMES),
                scan_types=["untrusted", "authenticated", "authenticated_privileged"],
                credential_refs=["*"],
                max_targets=65_536,
                max_active=1_000,
                submissions_per_minute=600,
            )
            data.clients.append(
                Client(id=LOCAL_CLIENT, role=Role.ADMIN, description="created by scanfleet up", scope=scope)
            )
        self.token = issue_token(data, LOCAL_CLIENT, label="scanfleet up")
        save_clients(self.clients_file, data)
        write_private(self.token_file, self.token + "\n")
        return True

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    # Files ------------------------------------------------------------------------------

    def write_files(self) -> None:
        """scanners.yaml names secrets by ${VAR}; only the emulator's own file holds them."""
        pools: dict[str, dict[str, list[dict[str, object]]]] = {}
        for scanner in self.options.fleet:
            pools.setdefault(scanner.pool, {"scanners": []})["scanners"].append(
                {
                    "id": scanner.id,
                    "url": self.emulator_url(scanner),
                    "auth": {
                        "access_key": "${" + _env_name(scanner, "ACCESS_KEY") + "}",
                        "secret_key": "${" + _env_name(scanner, "SECRET_KEY") + "}",
                    },
                    "max_concurrent_scans": scanner.max_concurrent_scans,
                    "labels": {"emulated": "true"},
                }
            )
        for pool, entries in self.options.extra_scanners.items():
            pools.setdefault(pool, {"scanners": []})["scanners"].extend(entries)
        default_pool = self.options.fleet[0].pool
        self.scanners_file.write_text(
            "# Written by `scanfleet up` for its emulated fleet.\n"
            + yaml.safe_dump({"version": 1, "default_pool": default_pool, "pools": pools}, sort_keys=False)
        )
        fleet = [
            {
                "port": self.emulator_ports[s],
                "config": {
                    "name": f"{s.pool}/{s.id}",
                    "access_key": self.secrets[s][0],
                    "secret_key": self.secrets[s][1],
                    "scan_duration": self.options.scan_duration,
                    "ssh_accounts": self.options.ssh_accounts,
                    "seed": i,
                    **self.options.emulator_overrides,
                },
            }
            for i, s in enumerate(self.options.fleet)
        ]
        store = {
            name: {key: "${" + _credential_env(name, key) + "}" for key in fields}
            for name, fields in self.options.stored_credentials.items()
        }
        self.credential_store.write_text(yaml.safe_dump({"credentials": store}, sort_keys=False))
        path = self.data_dir / "emulator-fleet.json"
        path.write_text(json.dumps(fleet))
        path.chmod(0o600)

    # Processes --------------------------------------------------------------------------

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        ops: dict[str, str] = {}
        if args[0] == "gateway":
            ops = {"SCANFLEET_GATEWAY_PORT": str(self.gateway_ports.setdefault(name, free_port(self.options.host)))}
        elif args[0] in SERVICES:
            port = self.service_ports.setdefault(name, free_port(LOOPBACK))
            ops = {"SCANFLEET_SERVICE_HOST": LOOPBACK, "SCANFLEET_SERVICE_PORT": str(port)}
        if args[0] == "agent":
            ops["SCANFLEET_AGENT_ID"] = name  # agents share this host: each its own identity
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "scanfleet.cli", *args],
            env={**self.service_env(args[0]), **ops, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def start(self, *, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        write_private(self.nats_passwords_file, json.dumps(self.nats_passwords, indent=2) + "\n")
        self.new_token = self.ensure_local_client()
        self.nats.start()
        self.write_files()
        emulator = self._spawn("emulator", "emulator", "--fleet", str(self.data_dir / "emulator-fleet.json"))
        for port in self.emulator_ports.values():
            _wait_port(LOOPBACK, port, emulator, timeout)
        provision = subprocess.run(
            [sys.executable, "-m", "scanfleet.cli", "provision"],
            env={**self.env(), **self.nats_env("provision")},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if provision.returncode != 0:
            raise RuntimeError(f"scanfleet provision failed:\n{provision.stderr}")
        for service in SERVICES:
            for name in self.options.names(service):
                self.start_service(service, name=name)
        self.wait_ready(timeout)

    def start_service(self, service: str, name: str | None = None, env: dict[str, str] | None = None) -> None:
        """Start a service process; ``name`` lets several of one service run side by side
        (another gateway gets a port of its own: ``gateway_url_of(name)``)."""
        self._spawn(name or service, service, env=env)

    def wait_ready(self, timeout: float, *, gateways: list[str] | None = None) -> None:
        """Until every running gateway (or those named) answers /ready."""
        deadline = time.monotonic() + timeout
        waiting = list(gateways or [name for name in self.gateway_ports if name in self.procs])
        while waiting and time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(f"{self.gateway_url_of(waiting[0])}/ready", timeout=1.0).status_code == 200:
                    waiting.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        if waiting:
            raise TimeoutError(f"{', '.join(waiting)} not ready after {timeout}s; logs in {self.logs}")

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"processes exited: {dead}; logs in {self.logs}")

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash would; the process gets no chance to clean up."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_process(self, name: str, timeout: float = 15.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def stop(self, timeout: float = 15.0) -> dict[str, int | None]:
        """SIGTERM every process at once, then wait; nats-server goes last."""
        procs, self.procs = self.procs, {}
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for name, proc in procs.items():
            try:
                codes[name] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[name] = None
        self.nats.stop()
        return codes

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)
