"""``scanfleet nats-cluster``: a three-node JetStream cluster on this machine's loopback.

Each server has its own client, route and monitoring port and its own store directory under
``--data-dir``; all have the same per-service users (passwords generated once and kept in
``<data-dir>/nats-passwords.json``, owner-only). It prints the environment services need:
every server's URL in ``SCANFLEET_NATS_URL`` and three replicas in ``SCANFLEET_NATS_REPLICAS``.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from scanfleet.common.embedded import NatsCluster
from scanfleet.common.nats_auth import generate_passwords, write_private


def add_cluster_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("nats-cluster", help="run a three-node JetStream cluster on loopback (per-service users)")
    p.add_argument("--data-dir", default=".scanfleet-cluster", help="stores and passwords (./.scanfleet-cluster)")
    p.add_argument("--nodes", type=int, default=3, help="servers in the cluster (default 3)")
    p.add_argument(
        "--port",
        type=int,
        default=0,
        help="first client port: servers listen on PORT, PORT+1, ...; routes on PORT+100+i, monitoring on "
        "PORT+200+i (default: free ports)",
    )
    p.set_defaults(run=main)


def passwords_in(data_dir: Path) -> dict[str, str]:
    path = data_dir / "nats-passwords.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    passwords = generate_passwords()
    write_private(path, json.dumps(passwords, indent=2) + "\n")
    return passwords


def main(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    cluster = NatsCluster(data_dir, size=args.nodes, passwords=passwords_in(data_dir), base_port=args.port or None)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    cluster.start()
    try:
        print(
            f"scanfleet: {args.nodes}-node JetStream cluster ready, meta leader {cluster.meta_leader()}\n"
            f"  servers  : {', '.join(f'{s.server_name} {s.address} (store {s.store_dir})' for s in cluster.servers)}\n"
            f"  passwords: {data_dir / 'nats-passwords.json'}\n"
            "  services : SCANFLEET_NATS_URL=" + cluster.nats_url + "\n"
            f"             SCANFLEET_NATS_REPLICAS={min(3, args.nodes)}\n"
            "             SCANFLEET_NATS_USER=<service> SCANFLEET_NATS_PASSWORD=<its password>\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        while not stopping.wait(1.0):
            for server in cluster.servers:
                if server.proc is not None and server.proc.poll() is not None:
                    print(f"scanfleet: {server.server_name} exited; see {server.log_file}", flush=True)
                    return 1
        return 0
    finally:
        cluster.stop()
