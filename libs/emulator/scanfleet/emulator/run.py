"""Run one or several emulated Nessus scanners in a single process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import signal
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
import yaml

from scanfleet.emulator.app import create_app
from scanfleet.emulator.config import EmulatorConfig

_SECRET_FIELDS = ("access_key", "secret_key", "password")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to `serve`, which must stop every server at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(
    configs_and_ports: list[tuple[EmulatorConfig, int]],
    host: str = "127.0.0.1",
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> None:
    """Serve every scanner on its own port until SIGINT/SIGTERM."""
    servers = [
        _Server(
            uvicorn.Config(
                create_app(config),
                host=host,
                port=port,
                log_level="warning",
                ssl_certfile=certfile,
                ssl_keyfile=keyfile,
            )
        )
        for config, port in configs_and_ports
    ]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    await asyncio.gather(*(server.serve() for server in servers))


def _with_secrets(raw: dict[str, Any]) -> tuple[EmulatorConfig, list[str]]:
    """Fill missing secrets with random values and report which ones were generated."""
    generated = []
    values = dict(raw)
    values.setdefault("username", "scanfleet")
    for name in _SECRET_FIELDS:
        if not values.get(name):
            values[name] = secrets.token_hex(32 if name != "password" else 16)
            generated.append(name)
    return msgspec.convert(values, EmulatorConfig), generated


def _load_fleet(path: Path) -> list[tuple[dict[str, Any], int]]:
    text = path.read_text()
    data = yaml.safe_load(text) if path.suffix in {".yaml", ".yml"} else json.loads(text)
    if not isinstance(data, list):
        raise SystemExit(f"{path}: expected a list of {{port, config}} entries")
    return [(dict(entry["config"]), int(entry["port"])) for entry in data]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scanfleet-emulator", description="Emulated Nessus scanner(s).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8834)
    parser.add_argument("--name", default="emulated-nessus")
    parser.add_argument("--access-key")
    parser.add_argument("--secret-key")
    parser.add_argument("--username", default="scanfleet")
    parser.add_argument("--password")
    parser.add_argument("--scan-duration", type=float, default=5.0)
    parser.add_argument(
        "--startup-duration", type=float, default=0.0, help="seconds Nessus reports 'loading' after it starts"
    )
    parser.add_argument("--ssh-account", action="append", default=[], metavar="USER:PASSWORD")
    parser.add_argument("--no-scan-api", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fleet", type=Path, help="JSON or YAML list of {port, config} entries")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.fleet is not None:
        raw_fleet = _load_fleet(args.fleet)
    else:
        accounts = {}
        for account in args.ssh_account:
            user, sep, password = account.partition(":")
            if not sep or not user:
                print(f"--ssh-account expects USER:PASSWORD, got {user!r}", file=sys.stderr)
                return 2
            accounts[user] = password
        raw = {
            "name": args.name,
            "access_key": args.access_key,
            "secret_key": args.secret_key,
            "username": args.username,
            "password": args.password,
            "scan_api": not args.no_scan_api,
            "scan_duration": args.scan_duration,
            "startup_duration": args.startup_duration,
            "ssh_accounts": accounts,
            "seed": args.seed,
        }
        raw_fleet = [({k: v for k, v in raw.items() if v is not None}, args.port)]
    fleet = []
    for raw_config, port in raw_fleet:
        config, generated = _with_secrets(raw_config)
        fleet.append((config, port))
        scheme = "https" if args.certfile else "http"
        print(f"{config.name}: {scheme}://{args.host}:{port}", flush=True)
        for name in generated:
            print(f"  generated {name}: {getattr(config, name)}", flush=True)
    asyncio.run(serve(fleet, args.host, certfile=args.certfile, keyfile=args.keyfile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
