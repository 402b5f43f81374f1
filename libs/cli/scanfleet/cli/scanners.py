"""``scanfleet scanners list|restart``: the fleet's scanners, and an audited container restart.

Like ``scanfleet dlq``, they talk to NATS directly (``SCANFLEET_NATS_URL``, as an operator's
NATS user). ``restart`` asks the agent serving the scanner, which alone talks to its container
engine (``common/scanner_ops.py``, shared with ``POST /v1/admin/scanners/{pool}/{id}/restart``),
and records the call in the audit trail as the operator who ran it (``cli-<user>``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

from scanfleet.cli.admin import nats_options, table, to_json
from scanfleet.cli.clients import cli_identity
from scanfleet.common import audit, contract, scanner_ops
from scanfleet.common.admin_ops import AdminError
from scanfleet.common.config import Settings
from scanfleet.common.messages import RestartResult
from scanfleet.common.registry import ScannerView, fleet_view
from scanfleet.common.runtime import Runtime, close, open_runtime


def render_scanners(views: list[ScannerView]) -> str:
    def container(view: ScannerView) -> str | None:
        c = view.heartbeat.container if view.heartbeat else None
        if c is None:
            return None
        return f"{c.name} {c.state}" + (f" ({c.health})" if c.health else "") + (f" [{c.error}]" if c.error else "")

    rows = [
        (
            v.entry.pool,
            v.entry.instance,
            v.state,
            f"{v.slots.active}/{v.slots.limit}",
            v.heartbeat.circuit if v.heartbeat else None,
            container(v),
        )
        for v in views
    ]
    return table(rows, ("POOL", "SCANNER", "STATE", "RUNNING", "CIRCUIT", "CONTAINER"))


def scanner_of(name: str) -> tuple[str, str]:
    pool, sep, instance = name.partition("/")
    if not sep or not pool or not instance:
        raise argparse.ArgumentTypeError(f"{name!r}: name the scanner as <pool>/<id>")
    return pool, instance


async def _restart(rt: Runtime, args: argparse.Namespace) -> RestartResult:
    pool, instance = args.scanner
    actor = cli_identity()
    record = audit.AuditRecord(
        client=actor,
        role="admin",
        auth="local",
        interface="cli",
        action=contract.SCANNER_RESTART_ACTION,
        decision="allow",
        pool=pool[:64],
        scanner=instance[:64],
    )
    try:
        result = await scanner_ops.restart(
            rt, pool, instance, actor=actor, reason=args.reason, force=args.force, wait=args.wait
        )
    except AdminError as exc:
        record.decision, record.code, record.reason = "deny", exc.code, exc.message
        await _record(rt, record)
        raise
    record.reason = result.message
    await _record(rt, record)
    return result


async def _record(rt: Runtime, record: audit.AuditRecord) -> None:
    try:
        await audit.append(rt.js, record)
    except Exception as exc:  # the restart stands either way; the operator must know it went unrecorded
        print(f"scanfleet scanners: not recorded in the audit trail: {type(exc).__name__}: {exc}", file=sys.stderr)


async def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.nats_url:
        settings = msgspec.structs.replace(settings, nats_url=args.nats_url)
    rt = await open_runtime("admin", settings)
    try:
        if args.verb == "list":
            views = await fleet_view(rt.registry, rt.capacity, rt.agents)
            value: Any = {"scanners": [_view_json(v) for v in views]}
            text = render_scanners(views)
        else:
            result = await _restart(rt, args)
            value, text = result, f"{args.scanner[0]}/{args.scanner[1]}: {result.message}"
    except AdminError as exc:
        print(to_json(exc.as_dict()) if args.json else f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await close(rt)
    print(to_json(value) if args.json else text)
    return 0


def _view_json(view: ScannerView) -> dict[str, Any]:
    hb = view.heartbeat
    return {
        "pool": view.entry.pool,
        "instance": view.entry.instance,
        "state": view.state,
        "running": view.slots.active,
        "limit": view.slots.limit,
        "circuit": hb.circuit if hb else None,
        "startup_progress": hb.startup_progress if hb and hb.starting else None,
        "problem": hb.error if hb else "no agent heartbeat",
        "container": hb.container if hb else None,
    }


def add_scanners_command(sub: Any) -> None:
    common = nats_options()
    scanners = sub.add_parser("scanners", help="list scanners, restart a container-managed scanner")
    verbs = scanners.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", parents=[common], help="every scanner: state, load, circuit, container")
    restart = verbs.add_parser(
        "restart", parents=[common], help="restart a scanner's container through its agent (audited)"
    )
    restart.add_argument("scanner", type=scanner_of, help="<pool>/<id>, as list_scanners names it")
    restart.add_argument("--force", action="store_true", help="restart even with scans in hand (they are cut off)")
    restart.add_argument("--reason", default="", help="why, for the agent's log")
    restart.add_argument(
        "--wait", type=float, default=scanner_ops.RESTART_TIMEOUT, help="seconds to wait for the agent's answer"
    )
    scanners.set_defaults(run=lambda args: asyncio.run(_run(args)))
