"""``scanfleet clients …`` edits the clients file; ``scanfleet audit`` reads the audit trail.

The gateway re-reads the clients file on its next request, so ``disable`` and ``revoke`` take
effect at once. Changes are recorded in the audit stream when NATS is reachable; when it is
not, the command still works on the file and says that it could not audit.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS

from scanfleet.common import audit
from scanfleet.common.bus import connect
from scanfleet.common.clients import (
    Client,
    ClientsError,
    ClientsFile,
    Role,
    find_client,
    issue_token,
    load_clients,
    save_clients,
)
from scanfleet.common.config import Settings
from scanfleet.common.messages import utcnow
from scanfleet.common.scope import Scope


def cli_identity() -> str:
    """Who ran the command, as an audit client id (subject-safe)."""
    return "cli-" + re.sub(r"[^A-Za-z0-9_-]", "_", getpass.getuser())[:60]


async def nats_connection(settings: Settings) -> NATS:
    return await connect(
        settings.nats_url, name="scanfleet-cli", user=settings.nats_user, password=settings.nats_password
    )


def clients_path(args: argparse.Namespace) -> Path:
    path = args.file or Settings.from_env().clients_file
    if not path:
        raise ClientsError("no clients file: pass --file or set SCANFLEET_CLIENTS_FILE")
    return Path(path)


def read_or_new(path: Path) -> ClientsFile:
    return load_clients(path) if path.exists() else ClientsFile()


def split(values: list[str] | None) -> list[str]:
    return [v for chunk in values or [] for v in re.split(r"[\s,]+", chunk) if v]


def scope_from(args: argparse.Namespace) -> Scope:
    scope = Scope(
        targets=split(args.targets),
        hostnames=split(args.hostnames),
        exclude=split(args.exclude),
        pools=split(args.pools) or ["*"],
        scan_types=split(args.scan_types) or ["untrusted"],  # type: ignore[arg-type]
        credential_refs=split(args.credential_refs),
    )
    for name in ("max_targets", "max_active", "submissions_per_minute"):
        if getattr(args, name) is not None:
            setattr(scope, name, getattr(args, name))
    return msgspec.convert(msgspec.to_builtins(scope), Scope)


def cmd_add(args: argparse.Namespace) -> dict[str, Any]:
    path = clients_path(args)
    data = read_or_new(path)
    if any(c.id == args.id for c in data.clients):
        raise ClientsError(f"client {args.id!r} exists already")
    data.clients.append(
        Client(id=args.id, role=Role(args.role), description=args.description or "", scope=scope_from(args))
    )
    token = issue_token(data, args.id, label="created with the client") if args.token else None
    save_and_check(path, data)
    return {"client": args.id, "role": args.role, **({"token": token} if token else {})}


def cmd_token(args: argparse.Namespace) -> dict[str, Any]:
    path = clients_path(args)
    data = read_or_new(path)
    token = issue_token(data, args.id, label=args.label or "")
    save_and_check(path, data)
    return {"client": args.id, "token": token}


def cmd_revoke(args: argparse.Namespace) -> dict[str, Any]:
    path = clients_path(args)
    data = read_or_new(path)
    client = find_client(data, args.id)
    for record in client.tokens:
        if record.id == args.token_id and record.revoked_at is None:
            record.revoked_at = utcnow()
            save_and_check(path, data)
            return {"client": args.id, "revoked": args.token_id}
    raise ClientsError(f"client {args.id!r} has no live token {args.token_id!r}")


def cmd_disable(args: argparse.Namespace, disabled: bool = True) -> dict[str, Any]:
    path = clients_path(args)
    data = read_or_new(path)
    find_client(data, args.id).disabled = disabled
    save_and_check(path, data)
    return {"client": args.id, "disabled": disabled}


def cmd_list(args: argparse.Namespace) -> dict[str, Any]:
    data = read_or_new(clients_path(args))
    return {
        "clients": [
            {
                "id": c.id,
                "role": str(c.role),
                "disabled": c.disabled,
                "scope": msgspec.to_builtins(c.scope),
                "tokens": [
                    {
                        "id": t.id,
                        "label": t.label,
                        "created_at": t.created_at.isoformat(),
                        "revoked": t.revoked_at is not None,
                    }
                    for t in c.tokens
                ],
            }
            for c in data.clients
        ]
    }


def save_and_check(path: Path, data: ClientsFile) -> None:
    """Save, then load what was written: a scope the gateway would reject is never left behind."""
    previous = path.read_bytes() if path.exists() else None
    save_clients(path, data)
    try:
        load_clients(path)
    except ClientsError:
        if previous is None:
            path.unlink()
        else:
            path.write_bytes(previous)
        raise


async def record_change(action: str, result: dict[str, Any]) -> str | None:
    """Audit a change made from the command line; returns a warning when that was not possible."""
    settings = Settings.from_env()
    try:
        nc = await asyncio.wait_for(nats_connection(settings), timeout=3)
    except Exception as exc:  # any failure to reach NATS leaves the change made but unaudited
        return f"not recorded in the audit stream: NATS unreachable ({type(exc).__name__})"
    try:
        shown = {k: v for k, v in result.items() if k != "token"}
        record = audit.AuditRecord(
            client=cli_identity(), role="admin", auth="local", interface="cli",
            action=f"clients.{action}", decision="allow", reason=json.dumps(shown),
        )  # fmt: skip
        await audit.append(nc.jetstream(), record)
    except Exception as exc:
        return f"not recorded in the audit stream: {type(exc).__name__}: {exc}"
    finally:
        await nc.close()
    return None


COMMANDS = {
    "add": cmd_add,
    "token": cmd_token,
    "revoke": cmd_revoke,
    "disable": cmd_disable,
    "enable": lambda a: cmd_disable(a, disabled=False),
    "list": cmd_list,
}


def run_clients(args: argparse.Namespace) -> int:
    try:
        result = COMMANDS[args.clients_command](args)
    except ClientsError as exc:
        print(f"scanfleet clients: {exc}", file=sys.stderr)
        return 2
    if args.clients_command != "list":
        warning = asyncio.run(record_change(args.clients_command, result))
        if warning:
            print(f"scanfleet clients: {warning}", file=sys.stderr)
    if args.json or args.clients_command == "list":
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
        if "token" in result:
            print("The token is shown once; only its hash is stored. Pass it as 'Authorization: Bearer <token>'.")
    return 0


SINCE = re.compile(r"^(\d+)([smhd])$")


def parse_since(text: str) -> timedelta:
    match = SINCE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: use a number and s, m, h or d (e.g. 24h)")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


async def read_audit(args: argparse.Namespace) -> list[audit.AuditRecord]:
    settings = Settings.from_env()
    if args.nats_url:
        settings = msgspec.structs.replace(settings, nats_url=args.nats_url)
    nc = await nats_connection(settings)
    try:
        query = audit.AuditQuery(
            client=args.client, task_id=args.task, action=args.action, decision=args.decision,
            since=utcnow() - args.since, limit=args.limit,
        )  # fmt: skip
        return await audit.read(nc.jetstream(), query)
    finally:
        await nc.close()


def run_audit(args: argparse.Namespace) -> int:
    records = asyncio.run(read_audit(args))
    if args.json:
        print(msgspec.json.encode(records).decode())
        return 0
    from scanfleet.cli.admin import table

    rows = [
        (r.at.strftime("%Y-%m-%d %H:%M:%S"), r.client, r.role, r.action, r.decision, r.code, r.task_id, r.source)
        for r in records
    ]
    print(table(rows, ("AT (UTC)", "CLIENT", "ROLE", "ACTION", "DECISION", "CODE", "TASK", "SOURCE")))
    return 0


def add_clients_commands(sub: Any) -> None:
    clients = sub.add_parser("clients", help="add, list, disable clients and issue or revoke their API tokens")
    clients.set_defaults(run=run_clients)
    verbs = clients.add_subparsers(dest="clients_command", required=True)
    for name, help_ in (
        ("list", "every client with role, scope and token ids"),
        ("add", "add a client (--token issues its first token)"),
        ("token", "issue a new token for a client (shown once)"),
        ("revoke", "revoke one token of a client at once"),
        ("disable", "refuse every request of a client at once"),
        ("enable", "allow a disabled client again"),
    ):
        verb = verbs.add_parser(name, help=help_)
        verb.add_argument("--file", help="clients file (default: $SCANFLEET_CLIENTS_FILE)")
        verb.add_argument("--json", action="store_true", help="print JSON")
        if name != "list":
            verb.add_argument("id", help="client id ([A-Za-z0-9_-], up to 64)")
        if name == "revoke":
            verb.add_argument("token_id", help="the token's id (second part of sf_<id>_…; see 'list')")
        if name == "token":
            verb.add_argument("--label", help="what the token is for")
        if name == "add":
            verb.add_argument("--role", choices=[str(r) for r in Role], default="agent")
            verb.add_argument("--description")
            verb.add_argument("--targets", action="append", help="allowed CIDRs, addresses, ranges")
            verb.add_argument("--hostnames", action="append", help="allowed host names, *.domain for subdomains")
            verb.add_argument("--exclude", action="append", help="ranges this client may never scan")
            verb.add_argument("--pools", action="append", help="allowed pools (default: all)")
            verb.add_argument(
                "--scan-types", action="append", help="untrusted, authenticated, authenticated_privileged"
            )
            verb.add_argument("--credential-refs", action="append", help="allowed credential refs ('*': any)")
            verb.add_argument("--max-targets", type=int, help="most addresses in one scan (default 256)")
            verb.add_argument("--max-active", type=int, help="most queued plus running scans (default 20)")
            verb.add_argument("--submissions-per-minute", type=int, help="default 30")
            verb.add_argument("--token", action="store_true", help="issue a token now")
    trail = sub.add_parser("audit", help="read the audit trail (stream SCAN_AUDIT)")
    trail.add_argument("--client")
    trail.add_argument("--task")
    trail.add_argument("--action")
    trail.add_argument("--decision", choices=["allow", "deny"])
    trail.add_argument("--since", type=parse_since, default=timedelta(days=1), help="how far back (default 24h)")
    trail.add_argument("--limit", type=int, default=200, help="the newest N records (default 200)")
    trail.add_argument("--nats-url", help="default: $SCANFLEET_NATS_URL")
    trail.add_argument("--json", action="store_true")
    trail.set_defaults(run=run_audit)
