"""deploy/compose under a unique project name, shared by the container tests.

`deployed` sets only what an operator sets (images, a secrets file, published ports, the
emulator's fleet with short scans), makes one client with `compose run --rm clients`, runs
`up --wait`, and always ends with `down -v`; on a failure while starting it prints the
containers' state and logs. A test's own failure is reported with `Deployment.dump`.

What no port publishes is read from inside the containers with the docker SDK: a NATS
server's monitoring endpoints (loopback only, `wget` in its image) and the emulator's
ground truth (`/_emulator/...`, with `python` in the scanfleet image).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import yaml
from docker.models.containers import Container

from scanfleet.common.embedded import free_port
from scanfleet.common.nats_auth import USERS, password_env
from tests.containers.conftest import ROOT, Images

COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = Path(sys.executable).parent / "docker-compose"
EMULATED_FLEET = COMPOSE_DIR / "emulator-fleet.example.yaml"
EMULATED_SCANNERS = COMPOSE_DIR / "scanners.emulated.example.yaml"


@dataclass
class Deployment:
    project: str
    env: dict[str, str]
    gateways: list[str]
    token: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def network(self) -> str:
        """The compose project's default network, the one every service is on."""
        return f"{self.project}_default"

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(COMPOSE), "-p", self.project, "--env-file", self.env["SECRETS_FILE"], "--profile", "emulated", *args],
            cwd=COMPOSE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def containers(self, engine: docker.DockerClient) -> dict[str, Container]:
        """Every container of the project (stopped ones too), by name."""
        found = engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={self.project}"})
        return {str(c.name): c for c in found}

    def container(self, engine: docker.DockerClient, service: str) -> Container:
        """The one container of ``service`` (nats-1, emulator, gateway-2, ...)."""
        return self.containers(engine)[f"{self.project}-{service}-1"]

    def dump(self, tail: int = 30, keep: Path | None = None) -> None:
        """The containers' state and each service's last log lines, for a failure's report;
        every log line goes to ``keep`` too."""
        print(self.compose("ps", "-a").stdout)
        for service in self.compose("config", "--services").stdout.split():
            print(self.compose("logs", "--tail", str(tail), "--no-color", "--timestamps", service).stdout[-6000:])
        if keep is not None:
            keep.parent.mkdir(exist_ok=True)
            keep.write_text(self.compose("logs", "--no-color", "--timestamps").stdout)
            print(f"every container's log: {keep}")


def _secrets(path: Path) -> None:
    """nats.env as the compose file's header makes it: every NATS password and the gateways' key."""
    lines = [f"{password_env(user)}={secrets.token_hex(24)}" for user in USERS]
    lines.append(f"MCP_REQUEST_STATE_KEYS={secrets.token_hex(32)}")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def _fast_fleet(path: Path, scan_seconds: float) -> None:
    """The example emulator fleet with short scans, so that a scan ends in seconds."""
    fleet = yaml.safe_load(EMULATED_FLEET.read_text())
    for entry in fleet:
        entry["config"]["scan_duration"] = scan_seconds
    path.write_text(yaml.safe_dump(fleet))


@contextmanager
def deployed(
    engine_env: dict[str, str],
    images: Images,
    tmp: Path,
    *,
    scan_seconds: float,
    client: list[str],
    timings_file: Path | None = None,
) -> Iterator[Deployment]:
    """The whole compose file up and healthy, with ``client`` (``clients add`` arguments) and
    its token; `down -v` at the end whatever happens (timings then go to ``timings_file``)."""
    _secrets(tmp / "nats.env")
    _fast_fleet(tmp / "fleet.yaml", scan_seconds)
    ports = [free_port(), free_port()]
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp),
        **engine_env,
        "IMAGE": images.scanfleet,
        "NATS_IMAGE": images.nats,
        "SCANNERS_YAML": f"./{EMULATED_SCANNERS.name}",
        "EMULATOR_FLEET": str(tmp / "fleet.yaml"),
        "GATEWAY_PUBLISH": f"127.0.0.1:{ports[0]}",
        "GATEWAY2_PUBLISH": f"127.0.0.1:{ports[1]}",
        "SECRETS_FILE": str(tmp / "nats.env"),
    }
    deploy = Deployment(f"sftest{secrets.token_hex(4)}", env, [f"http://127.0.0.1:{p}" for p in ports], token="")
    try:
        added = deploy.compose("run", "--rm", "clients", "add", *client, "--token", "--json")
        assert added.returncode == 0, added.stderr
        deploy.token = json.loads(added.stdout)["token"]
        started = time.monotonic()
        up = deploy.compose("up", "-d", "--wait", "--wait-timeout", "480")
        deploy.timings["compose_up_to_healthy_s"] = round(time.monotonic() - started, 1)
        assert up.returncode == 0, up.stderr[-3000:]
        yield deploy
    except BaseException:
        deploy.dump()
        raise
    finally:
        started = time.monotonic()
        down = deploy.compose("down", "-v", "--timeout", "10", "--remove-orphans")
        deploy.timings["compose_down_s"] = round(time.monotonic() - started, 1)
        if timings_file is not None:
            timings_file.parent.mkdir(exist_ok=True)
            timings_file.write_text(json.dumps(deploy.timings, indent=2) + "\n")
        print("timings:", deploy.timings)
        assert down.returncode == 0, down.stderr


def run_in(container: Container, *command: str) -> tuple[int, bytes]:
    """``command`` run inside ``container``: its exit code and output."""
    done = container.exec_run(list(command))
    output, code = done.output, done.exit_code
    assert isinstance(output, bytes) and code is not None
    return code, output


def monitor(nats: Container, endpoint: str) -> dict[str, Any] | None:
    """A NATS server's monitoring endpoint (``jsz?streams=true``, ``connz``, ``healthz``),
    asked inside its container (the port listens on its loopback only); None when it does
    not answer 200 (``healthz`` while the server is not current)."""
    code, output = run_in(nats, "wget", "-q", "-O", "-", f"http://127.0.0.1:8222/{endpoint}")
    if code != 0:
        return None
    answer: dict[str, Any] = json.loads(output)
    return answer


def stream_leaders(jsz: dict[str, Any]) -> dict[str, str]:
    """Each stream's leader as one server's ``jsz?streams=true`` sees it ('' while none)."""
    streams = (s for account in jsz.get("account_details", []) for s in account.get("stream_detail", []))
    return {s["name"]: s.get("cluster", {}).get("leader", "") for s in streams}


_EMULATOR_GET = """
import json, sys, urllib.request
port, access, secret, path = sys.argv[1:]
request = urllib.request.Request(
    f"http://127.0.0.1:{port}{path}", headers={"X-ApiKeys": f"accessKey={access}; secretKey={secret}"}
)
print(urllib.request.urlopen(request, timeout=10).read().decode())
"""


@dataclass(frozen=True)
class EmulatedScanner:
    """One scanner of the emulated fleet: where the emulator serves it, and its limit in scanfleet."""

    pool: str
    instance: str
    port: int
    access_key: str
    secret_key: str
    max_concurrent_scans: int


def emulated_scanners() -> list[EmulatedScanner]:
    """The fleet the emulated profile runs, joined with scanners.emulated.example.yaml's limits."""
    keys = {e["port"]: e["config"] for e in yaml.safe_load(EMULATED_FLEET.read_text())}
    registry = yaml.safe_load(EMULATED_SCANNERS.read_text())
    found = []
    for pool, spec in registry["pools"].items():
        for scanner in spec["scanners"]:
            port = int(scanner["url"].rsplit(":", 1)[1])
            found.append(
                EmulatedScanner(
                    pool,
                    scanner["id"],
                    port,
                    keys[port]["access_key"],
                    keys[port]["secret_key"],
                    scanner["max_concurrent_scans"],
                )
            )
    return found


def emulator_get(emulator: Container, scanner: EmulatedScanner, path: str) -> Any:
    """``path`` of one emulated scanner, asked inside the emulator's container (never published)."""
    args = [str(scanner.port), scanner.access_key, scanner.secret_key, path]
    code, output = run_in(emulator, "python", "-c", _EMULATOR_GET, *args)
    assert code == 0, output.decode(errors="replace")
    return json.loads(output)
