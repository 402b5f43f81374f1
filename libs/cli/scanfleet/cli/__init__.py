"""``scanfleet``: one command for every service, the emulator, and the embedded stack."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from scanfleet.common.config import ConfigError


def _service(module: str) -> Callable[[argparse.Namespace], int]:
    def start(_: argparse.Namespace) -> int:
        import importlib

        entry: Callable[[], int] = importlib.import_module(module).main
        return entry()

    return start


def _provision(_: argparse.Namespace) -> int:
    from scanfleet.cli.provision import main

    return main()


def _reload(_: argparse.Namespace) -> int:
    from scanfleet.cli.provision import main

    return main(report=True)


def _up(args: argparse.Namespace) -> int:
    from scanfleet.cli.up import main

    return main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scanfleet", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    services = {
        "gateway": ("scanfleet.gateway.service", "MCP (streamable HTTP at /mcp) and REST (/v1) front door"),
        "dispatcher": ("scanfleet.dispatcher.service", "assigns queued scans to scanners with free slots"),
        "agent": ("scanfleet.agent.service", "drives the Nessus scanners named in scanners.yaml"),
        "validator": ("scanfleet.validator.service", "validates exports and records results"),
        "janitor": ("scanfleet.janitor.service", "dead letters and housekeeping"),
    }
    for name, (module, help_) in services.items():
        sub.add_parser(name, help=help_).set_defaults(run=_service(module))
    sub.add_parser("emulator", help="run emulated Nessus scanners (see `scanfleet emulator --help`)", add_help=False)
    sub.add_parser("provision", help="create/update streams, buckets and consumers; sync the registry").set_defaults(
        run=_provision
    )
    sub.add_parser(
        "reload", help="apply an edited scanners.yaml to the live fleet (also: SIGHUP to the dispatcher)"
    ).set_defaults(run=_reload)
    up = sub.add_parser("up", help="run everything locally on an embedded nats-server and an emulated fleet")
    up.add_argument("--data-dir", default=".scanfleet", help="state folder (default: ./.scanfleet)")
    up.add_argument("--port", type=int, default=8080, help="gateway port (default 8080; 0 picks a free one)")
    up.add_argument("--host", default="127.0.0.1", help="address the gateway binds to (default loopback)")
    up.add_argument("--nats-port", type=int, default=0, help="nats-server port (default: a free one)")
    up.add_argument("--scan-duration", type=float, default=20.0, help="seconds an emulated scan runs")
    up.set_defaults(run=_up)
    from scanfleet.cli.admin import add_admin_commands
    from scanfleet.cli.clients import add_clients_commands
    from scanfleet.cli.cluster import add_cluster_command
    from scanfleet.cli.scanners import add_scanners_command

    add_cluster_command(sub)

    add_admin_commands(sub)
    add_clients_commands(sub)
    add_scanners_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["emulator"]:
        from scanfleet.emulator.run import main as emulator_main

        return emulator_main(argv[1:])
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"scanfleet {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    return code
