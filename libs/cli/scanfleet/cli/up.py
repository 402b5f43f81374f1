"""``scanfleet up``: the whole system on one machine, no Nessus licence needed."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from scanfleet.cli.stack import EMULATED_RANGES, Stack, StackOptions
from scanfleet.common.embedded import free_port


def main(args: argparse.Namespace) -> int:
    options = StackOptions(
        data_dir=Path(args.data_dir),
        host=args.host,
        nats_port=args.nats_port or None,
        gateway_port=args.port or free_port(args.host),
        scan_duration=args.scan_duration,
    )
    stack = Stack(options)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    started = time.monotonic()
    print(f"scanfleet: starting in {stack.data_dir} ...", flush=True)
    try:
        stack.start()
    except Exception as exc:
        print(f"scanfleet: failed to start: {exc}", file=sys.stderr)
        print(stack.log_tail(15), file=sys.stderr)
        stack.stop()
        return 1
    scanners = ", ".join(f"{s.pool}/{s.id}" for s in options.fleet)
    ops = ", ".join(f"{name} {stack.service_url(name)}" for name in ("gateway", *stack.service_ports))
    if stack.new_token:
        token = f"{stack.token}\n                 (shown once; kept in {stack.token_file}, owner-only)"
    else:
        token = f"in {stack.token_file}"
    print(
        f"scanfleet: ready in {time.monotonic() - started:.1f}s\n"
        f"  MCP endpoint : {stack.mcp_url}\n"
        f"  token        : {token}\n"
        f"                 as 'Authorization: Bearer <token>'; client 'local' may scan {', '.join(EMULATED_RANGES)}\n"
        f"  REST API     : {stack.gateway_url}/v1  (e.g. {stack.gateway_url}/v1/scanners)\n"
        f"  NATS         : {stack.nats.address} (loopback; users and passwords in {stack.nats_passwords_file})\n"
        f"  ops (/metrics, /health, /ready): {ops}\n"
        f"  scanners     : {scanners} (emulated, scans take ~{options.scan_duration:.0f}s)\n"
        f"  logs         : {stack.logs}\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )
    code = 0
    while not stopping.wait(1.0):
        try:
            stack.check_alive()
        except RuntimeError as exc:
            print(f"scanfleet: {exc}", file=sys.stderr)
            code = 1
            break
    print("scanfleet: stopping ...", flush=True)
    codes = stack.stop()
    print(f"scanfleet: stopped ({', '.join(f'{k}={v}' for k, v in codes.items())})", flush=True)
    return code
