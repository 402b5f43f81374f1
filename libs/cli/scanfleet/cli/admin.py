"""``scanfleet dlq list|inspect|retry|purge`` and ``scanfleet stats``: the operator's commands.

They talk to NATS directly (``SCANFLEET_NATS_URL`` or ``--nats-url``) and print readable
tables, or JSON with ``--json``. The work itself is ``scanfleet.common.admin_ops``, which the
gateway's /v1/admin routes share.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

import msgspec

from scanfleet.common import admin_ops as admin
from scanfleet.common.config import Settings
from scanfleet.common.runtime import Runtime, close, open_runtime


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """Left-aligned columns, as wide as their widest cell; None shows as '-'."""
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_letters(letters: list[admin.StoredLetter]) -> str:
    if not letters:
        return "SCAN_DLQ is empty (for this filter)."
    rows = [
        (
            x.seq,
            x.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            x.stage,
            x.reason,
            x.task_id,
            x.attempts,
            clip(x.error),
        )
        for x in letters
    ]
    return table(rows, ("SEQ", "FAILED AT (UTC)", "STAGE", "REASON", "TASK", "TRIES", "ERROR"))


def render_letter(letter: admin.StoredLetter) -> str:
    fields = [
        ("sequence", letter.seq),
        ("subject", letter.subject),
        ("task", letter.task_id),
        ("trace", letter.trace_id),
        ("stage", letter.stage),
        ("reason", letter.reason),
        ("attempts", letter.attempts),
        ("failed at", letter.failed_at.isoformat()),
        ("error", letter.error),
        ("original subject", letter.original_subject),
        ("original message", f"{letter.original_stream} #{letter.original_seq}" if letter.original_seq else None),
    ]
    width = max(len(k) for k, _ in fields)
    out = [f"{k.ljust(width)}  {'-' if v is None else v}" for k, v in fields]
    original = msgspec.json.format(msgspec.json.encode(letter.original), indent=2).decode()
    return "\n".join([*out, "original (credentials removed):", original])


def render_stats(stats: admin.Stats) -> str:
    pools = table(
        [(p.pool, p.queued, p.running, p.capacity, f"{p.usable}/{p.scanners}") for p in stats.pools],
        ("POOL", "QUEUED", "RUNNING", "CAPACITY", "USABLE SCANNERS"),
    )
    scanners = table(
        [
            (
                s.pool,
                s.instance,
                f"{s.running}/{s.limit}",
                "alive" if s.agent_alive else "DEAD",
                "yes" if s.usable else "no",
            )
            for s in stats.scanners
        ],
        ("POOL", "SCANNER", "RUNNING", "AGENT", "USABLE"),
    )
    stages = ", ".join(f"{k} {v}" for k, v in stats.dlq_by_stage.items()) or "none"
    return f"{pools}\n\n{scanners}\n\nDLQ depth: {stats.dlq_depth} ({stages})"


def to_json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


Action = Callable[[Runtime, argparse.Namespace], Awaitable[tuple[Any, str]]]


async def _list(rt: Runtime, args: argparse.Namespace) -> tuple[Any, str]:
    letters = await admin.list_letters(rt, stage=args.stage, task_id=args.task, limit=args.limit)
    return letters, render_letters(letters)


async def _inspect(rt: Runtime, args: argparse.Namespace) -> tuple[Any, str]:
    letter = await admin.inspect(rt, args.seq)
    return letter, render_letter(letter)


async def _retry(rt: Runtime, args: argparse.Namespace) -> tuple[Any, str]:
    done: list[admin.RetryOutcome] = []
    failed: list[dict[str, Any]] = []
    for seq in args.seq:
        try:
            done.append(await admin.retry(rt, seq, actor=f"cli:{getpass.getuser()}"))
        except admin.AdminError as exc:
            failed.append({"seq": seq, **exc.as_dict()})
    lines = [f"letter {o.seq}: task {o.task_id} queued again (retry {o.retries}, {o.request_msg_id})" for o in done]
    lines += [f"letter {f['seq']}: not retried: {f['error']}: {f['message']}" for f in failed]
    if failed:
        args.exit_code = 1
    return {"retried": done, "refused": failed}, "\n".join(lines)


async def _purge(rt: Runtime, args: argparse.Namespace) -> tuple[Any, str]:
    removed = await admin.purge(rt, seqs=args.seq, stage=args.stage, task_id=args.task, everything=args.all)
    return {"purged": removed}, f"purged {removed} dead letter(s)"


async def _stats(rt: Runtime, args: argparse.Namespace) -> tuple[Any, str]:
    stats = await admin.stats(rt)
    return stats, render_stats(stats)


def describe_purge(args: argparse.Namespace) -> str:
    if args.seq:
        return f"dead letters {', '.join(map(str, args.seq))}"
    if args.all:
        return "EVERY dead letter"
    parts = [f"stage {args.stage}" if args.stage else "", f"task {args.task}" if args.task else ""]
    return "every dead letter of " + " and ".join(p for p in parts if p)


def confirmed(args: argparse.Namespace, stdin: TextIO = sys.stdin) -> bool:
    """Purge is for good: ask, unless --yes; without a terminal to ask, refuse."""
    if args.yes:
        return True
    if not stdin.isatty():
        print("scanfleet dlq purge: refusing without --yes (no terminal to confirm on)", file=sys.stderr)
        return False
    answer = input(f"Delete {describe_purge(args)} from SCAN_DLQ? This cannot be undone. [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def _run(action: Action, args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.nats_url:
        settings = msgspec.structs.replace(settings, nats_url=args.nats_url)
    rt = await open_runtime("admin", settings)
    try:
        value, text = await action(rt, args)
    except admin.AdminError as exc:
        print(to_json(exc.as_dict()) if args.json else f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await close(rt)
    print(to_json(value) if args.json else text)
    return int(getattr(args, "exit_code", 0))


def _command(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if action is _purge and not confirmed(args):
            return 1
        return asyncio.run(_run(action, args))

    return run


def nats_options() -> argparse.ArgumentParser:
    """``--json`` and ``--nats-url``, shared by the commands that talk to NATS directly."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common.add_argument("--nats-url", help="NATS server (default: $SCANFLEET_NATS_URL)")
    return common


def add_admin_commands(sub: Any) -> None:
    """Register ``dlq`` and ``stats`` on the top-level subparsers."""
    common = nats_options()

    dlq = sub.add_parser("dlq", help="inspect, retry or purge dead letters (SCAN_DLQ)")
    verbs = dlq.add_subparsers(dest="verb", required=True)
    listing = verbs.add_parser("list", parents=[common], help="newest dead letters first")
    listing.add_argument("--stage", help="dispatch, agent, validator, janitor")
    listing.add_argument("--task", help="only this task's letters")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.set_defaults(run=_command(_list))
    inspect = verbs.add_parser("inspect", parents=[common], help="one letter in full, with its original message")
    inspect.add_argument("seq", type=int, help="the letter's SCAN_DLQ sequence (see `dlq list`)")
    inspect.set_defaults(run=_command(_inspect))
    retry = verbs.add_parser("retry", parents=[common], help="reset each letter's task and queue it again")
    retry.add_argument("seq", type=int, nargs="+", help="SCAN_DLQ sequences")
    retry.set_defaults(run=_command(_retry))
    purge = verbs.add_parser("purge", parents=[common], help="delete letters for good (asks first)")
    purge.add_argument("seq", type=int, nargs="*", help="SCAN_DLQ sequences")
    purge.add_argument("--stage", help="every letter of this stage")
    purge.add_argument("--task", help="every letter of this task")
    purge.add_argument("--all", action="store_true", help="every letter")
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(run=_command(_purge))

    stats = sub.add_parser("stats", parents=[common], help="queue depth per pool, DLQ depth, running scans per scanner")
    stats.set_defaults(run=_command(_stats))
