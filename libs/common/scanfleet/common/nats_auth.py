"""Who may do what on NATS: one user per service, permissions derived from the contract.

nats-server checks every publish and subscribe against the user's allow lists, so a
compromised or buggy service can touch only the subjects its job needs: the agent cannot
submit scans, the gateway cannot purge work queues, nobody but ``admin`` can delete a
stream. JetStream's API is subjects too (``$JS.API.<verb>.<stream>...``), which is how
stream, consumer, key-value and object-store rights are expressed here.

Services only *check* that the contract exists at start-up (stream and consumer INFO);
creating and updating streams, buckets and consumers is the ``provision`` user's job
(``scanfleet provision`` runs before the services, in ``scanfleet up`` and in deploy/).
The dispatcher may add the per-pool and per-scanner consumers a reloaded scanners.yaml
brings. Each user gets its own inbox prefix (``_INBOX.<user>``), so no service can read
another's replies.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scanfleet.common import contract

SERVICES = ("gateway", "dispatcher", "agent", "validator", "janitor")
# ``provision`` creates the contract (scanfleet provision / reload); ``admin`` is the operator
# (scanfleet dlq/stats, the nats CLI) and may do anything.
USERS = (*SERVICES, "provision", "admin")

API = "$JS.API"
# How long an agent may take to answer a restart request (a container's stop timeout is at most 10 min).
RESPONSE_EXPIRES = "15m"
REQUEST_SUBJECTS = contract.REQUESTS_FILTER
ASSIGN_SUBJECTS = contract.ASSIGNMENTS_FILTER
EVENT_SUBJECTS = contract.EVENTS_FILTER
DLQ_SUBJECTS = contract.DLQ_FILTER


@dataclass(frozen=True)
class EnvRef:
    """A value nats-server reads from its environment (``$NAME`` in the config file)."""

    name: str


def inbox_prefix(user: str) -> str:
    return f"_INBOX.{user}"


def password_env(user: str) -> str:
    """The variable that holds a user's password in deploy/ (compose .env, Nomad variables)."""
    return f"NATS_{user.upper()}_PASSWORD"


# Building blocks --------------------------------------------------------------------------


def _all_streams() -> list[str]:
    names = [s.name for s in contract.Topology().streams() if s.name]
    names += [contract.kv_stream(b.name) for b in contract.BUCKETS]
    names += [contract.object_stream(o.name) for o in contract.OBJECT_STORES]
    return names


def _check_contract() -> list[str]:
    """What every service needs to confirm at start-up that the contract is in place."""
    return [
        f"{API}.INFO",
        f"{API}.STREAM.NAMES",
        *(f"{API}.STREAM.INFO.{stream}" for stream in _all_streams()),
        *(f"{API}.CONSUMER.INFO.{stream}.*" for stream in _all_streams()),
    ]


def _msg_get(stream: str) -> list[str]:
    return [f"{API}.STREAM.MSG.GET.{stream}", f"{API}.DIRECT.GET.{stream}", f"{API}.DIRECT.GET.{stream}.>"]


def _ordered_reader(stream: str) -> list[str]:
    """Ephemeral consumers: KV watches, object reads, one-off scans (created, pulled, deleted)."""
    return [
        f"{API}.CONSUMER.CREATE.{stream}",
        f"{API}.CONSUMER.CREATE.{stream}.>",
        f"{API}.CONSUMER.MSG.NEXT.{stream}.*",
        f"{API}.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",
    ]


def _kv_read(bucket: str) -> list[str]:
    return [*_msg_get(contract.kv_stream(bucket)), *_ordered_reader(contract.kv_stream(bucket))]


def _kv_write(bucket: str) -> list[str]:
    return [*_kv_read(bucket), contract.kv_subject(bucket, ">")]


def _objects_read(store: str) -> list[str]:
    return [*_msg_get(contract.object_stream(store)), *_ordered_reader(contract.object_stream(store))]


def _objects_write(store: str) -> list[str]:
    """Writing replaces whole objects and deleting purges chunks: a purge of this store only."""
    return [
        *_objects_read(store),
        contract.object_store_filter(store),
        f"{API}.STREAM.PURGE.{contract.object_stream(store)}",
    ]


def _durable(stream: str, consumer: str = "*") -> list[str]:
    """Pull from a durable consumer and acknowledge (ack, nak, in-progress, term) its messages."""
    return [f"{API}.CONSUMER.MSG.NEXT.{stream}.{consumer}", f"$JS.ACK.{stream}.{consumer}.>"]


def _create_durable(stream: str) -> list[str]:
    return [
        f"{API}.CONSUMER.DURABLE.CREATE.{stream}.*",
        f"{API}.CONSUMER.CREATE.{stream}.*",
        f"{API}.CONSUMER.CREATE.{stream}.*.>",
    ]


# Per user ---------------------------------------------------------------------------------


def _publish(user: str) -> list[str]:
    c = contract
    if user == "gateway":
        return [
            REQUEST_SUBJECTS,
            EVENT_SUBJECTS,
            # cancel a queued scan: find its request, delete it
            *_msg_get(c.REQUESTS_STREAM),
            f"{API}.STREAM.MSG.DELETE.{c.REQUESTS_STREAM}",
            # /v1/admin/dlq: list, inspect, retry and purge dead letters
            *_msg_get(c.DLQ_STREAM),
            f"{API}.STREAM.MSG.DELETE.{c.DLQ_STREAM}",
            f"{API}.STREAM.PURGE.{c.DLQ_STREAM}",
            *_kv_write(c.TASKS_BUCKET),
            *_kv_write(c.IDEMPOTENCY_BUCKET),
            *_kv_write(c.EXPIRY_BUCKET),
            *_kv_write(c.CAPACITY_BUCKET),
            *_kv_read(c.REGISTRY_BUCKET),
            *_kv_read(c.AGENTS_BUCKET),
            *_kv_read(c.POOL_STATS_BUCKET),
            *_objects_read(c.FINDINGS_OBJECTS),
            # access control: each client's tasks, and the audit trail (append; admins read it)
            *_kv_write(c.CLIENT_TASKS_BUCKET),
            c.AUDIT_FILTER,
            *_ordered_reader(c.AUDIT_STREAM),
            # history: schedules (created, paused, deleted by their owners) and their fired occurrences
            *_kv_write(c.SCHEDULES_BUCKET),
            *_kv_read(c.SCHEDULE_RUNS_BUCKET),
            # /v1/admin/scanners/.../restart: a request to the agent serving the scanner
            c.SCANNER_RESTART_FILTER,
        ]
    if user == "dispatcher":
        return [
            ASSIGN_SUBJECTS,
            EVENT_SUBJECTS,
            DLQ_SUBJECTS,
            *_durable(c.REQUESTS_STREAM),
            # scanners.yaml reloaded: consumers of new pools and scanners
            *_create_durable(c.REQUESTS_STREAM),
            *_create_durable(c.ASSIGNMENTS_STREAM),
            # completed events for the pool statistics
            *_ordered_reader(c.EVENTS_STREAM),
            *_kv_write(c.TASKS_BUCKET),
            *_kv_write(c.CAPACITY_BUCKET),
            *_kv_write(c.REGISTRY_BUCKET),
            *_kv_write(c.LEASES_BUCKET),
            *_kv_write(c.POOL_STATS_BUCKET),
            *_kv_read(c.AGENTS_BUCKET),
            *_kv_write(c.CLIENT_TASKS_BUCKET),  # end_task: the client's active tasks
        ]
    if user == "agent":
        return [
            REQUEST_SUBJECTS,  # a scan handed back to the queue before launch (circuit open, window)
            EVENT_SUBJECTS,
            DLQ_SUBJECTS,
            *_durable(c.ASSIGNMENTS_STREAM),
            *_msg_get(c.ASSIGNMENTS_STREAM),
            *_kv_write(c.TASKS_BUCKET),
            *_kv_write(c.CAPACITY_BUCKET),
            *_kv_write(c.AGENTS_BUCKET),
            *_kv_read(c.REGISTRY_BUCKET),
            *_objects_write(c.EXPORTS_OBJECTS),
            *_kv_write(c.CLIENT_TASKS_BUCKET),  # end_task: the client's active tasks
            *_kv_write(c.NESSUS_SCANS_BUCKET),  # the Nessus scans it created, deleted when done
            # its automatic container restarts, recorded as the system's (its only audit subject)
            c.audit_subject(c.SYSTEM_ACTOR, c.SCANNER_RESTART_ACTION),
        ]
    if user == "validator":
        return [
            EVENT_SUBJECTS,
            DLQ_SUBJECTS,
            *_durable(c.EVENTS_STREAM, c.VALIDATOR_CONSUMER),
            *_kv_write(c.TASKS_BUCKET),
            *_kv_write(c.CAPACITY_BUCKET),
            *_objects_read(c.EXPORTS_OBJECTS),
            *_objects_write(c.FINDINGS_OBJECTS),
            *_kv_write(c.CLIENT_TASKS_BUCKET),  # end_task: the client's active tasks
        ]
    if user == "janitor":
        return [
            EVENT_SUBJECTS,
            DLQ_SUBJECTS,
            *_durable(c.DLQ_STREAM, c.JANITOR_DLQ_CONSUMER),
            *_durable(c.ADVISORIES_STREAM, c.JANITOR_ADVISORIES_CONSUMER),
            *_durable(c.EVENTS_STREAM, c.JANITOR_TERMINAL_CONSUMER),
            *_durable(c.EXPIRY_STREAM, c.JANITOR_EXPIRY_CONSUMER),
            # an advisory names a message of a work stream: copy it to the DLQ, delete it
            *(rule for s in (c.REQUESTS_STREAM, c.ASSIGNMENTS_STREAM, c.EVENTS_STREAM) for rule in _msg_get(s)),
            f"{API}.STREAM.MSG.DELETE.{c.REQUESTS_STREAM}",
            f"{API}.STREAM.MSG.DELETE.{c.ASSIGNMENTS_STREAM}",
            *_msg_get(c.DLQ_STREAM),
            *_kv_write(c.TASKS_BUCKET),
            *_kv_write(c.CAPACITY_BUCKET),
            *_kv_write(c.EXPIRY_BUCKET),
            *_kv_read(c.AGENTS_BUCKET),
            *_kv_read(c.REGISTRY_BUCKET),
            # expired tasks: their objects go
            *_objects_write(c.EXPORTS_OBJECTS),
            *_objects_write(c.FINDINGS_OBJECTS),
            *_kv_write(c.CLIENT_TASKS_BUCKET),  # end_task: the client's active tasks
            # schedules and automatic rollovers: scans queued on a client's behalf, audited as it
            REQUEST_SUBJECTS,
            c.AUDIT_FILTER,
            *_kv_write(c.SCHEDULES_BUCKET),
            *_kv_write(c.SCHEDULE_RUNS_BUCKET),
        ]
    if user == "provision":
        streams = _all_streams()
        return [
            *(f"{API}.STREAM.{verb}.{s}" for s in streams for verb in ("CREATE", "UPDATE")),
            *(rule for s in streams for rule in _create_durable(s)),
            *_kv_write(c.REGISTRY_BUCKET),
            *_kv_write(c.CAPACITY_BUCKET),
        ]
    raise ValueError(f"unknown NATS user {user!r}; known: {', '.join(USERS)}")


def service_permissions(user: str) -> dict[str, object]:
    """The nats-server ``permissions`` block of one user: publish and subscribe allow lists."""
    if user == "admin":
        return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
    publish = [*_check_contract(), *_publish(user)]
    subscribe = [f"{inbox_prefix(user)}.>"]
    permissions: dict[str, object] = {}
    if user == "dispatcher":
        # cancelled events over core NATS, to drop a waiting request early
        subscribe.append(contract.event_subject("*", "cancelled"))
    if user == "agent":
        # restart requests for its scanners, answered once each on the requester's inbox
        subscribe.append(contract.SCANNER_RESTART_FILTER)
        permissions["allow_responses"] = {"max": 1, "expires": RESPONSE_EXPIRES}
    return {"publish": {"allow": _unique(publish)}, "subscribe": {"allow": subscribe}, **permissions}


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# Passwords and the server's configuration -------------------------------------------------


def generate_passwords(users: Iterable[str] = USERS) -> dict[str, str]:
    return {user: secrets.token_urlsafe(32) for user in users}


def write_private(path: Path, text: str) -> None:
    """Create or replace a file only its owner can read, never world-readable in between."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    path.chmod(0o600)


def _render(value: object, indent: int = 0) -> str:
    """nats-server's config syntax: JSON-like, but ``$NAME`` unquoted is an environment lookup."""
    pad = "  " * (indent + 1)
    if isinstance(value, EnvRef):
        return f"${value.name}"
    if isinstance(value, Mapping):
        body = "".join(f"{pad}{k}: {_render(v, indent + 1)}\n" for k, v in value.items())
        return "{\n" + body + "  " * indent + "}"
    if isinstance(value, list | tuple):
        if all(isinstance(v, str) for v in value) and len(value) <= 2:
            return "[" + ", ".join(json.dumps(v) for v in value) + "]"
        return "[\n" + "".join(f"{pad}{_render(v, indent + 1)}\n" for v in value) + "  " * indent + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(str(value))


@dataclass(frozen=True)
class ClusterRoutes:
    """This server's place in a JetStream cluster: the cluster's name, where this server
    listens for routes, and the route URLs of all servers (its own may be among them)."""

    name: str
    listen: str
    routes: Sequence[str]


CLUSTER_PING_INTERVAL = "5s"
CLUSTER_PING_MAX = 3
"""How a cluster's server finds a peer (or client) that went silent without closing anything,
a server cut off by the network while it keeps running: after ``ping_max`` unanswered pings,
about 20 s, instead of the default's 2 min x 2. Until then the others keep routing to it
(interest it had, direct gets of the streams it replicates), and those requests time out."""


def server_config(
    passwords: Mapping[str, str | EnvRef],
    *,
    listen: str,
    monitor: str,
    store_dir: str,
    server_name: str | EnvRef | None = None,
    cluster: ClusterRoutes | None = None,
    sync_interval: str | None = None,
) -> str:
    """A complete nats-server config: listen address, loopback-only monitoring, JetStream,
    and one user per entry of ``passwords`` with its permissions. ``EnvRef`` passwords are
    read by nats-server from its environment, so the file itself can be committed.

    ``cluster``: routes to the other servers of a JetStream cluster (every server of a cluster
    needs a unique ``server_name``), and pings that find a silent peer within seconds
    (``CLUSTER_PING_INTERVAL``). ``sync_interval``: how often JetStream fsyncs ("always", or a
    duration such as "2m", the server's default); see docs/deployment.md.
    """
    users = [{"user": u, "password": p, "permissions": service_permissions(u)} for u, p in passwords.items()]
    config: dict[str, object] = {"listen": listen, "http": monitor}
    if cluster is not None:
        config["ping_interval"] = CLUSTER_PING_INTERVAL
        config["ping_max"] = CLUSTER_PING_MAX
    if server_name:
        config["server_name"] = server_name
    jetstream: dict[str, object] = {"store_dir": store_dir}
    if sync_interval:
        jetstream["sync_interval"] = sync_interval
    config["jetstream"] = jetstream
    if cluster is not None:
        config["cluster"] = {"name": cluster.name, "listen": cluster.listen, "routes": list(cluster.routes)}
    if users:
        config["authorization"] = {"users": users}
    lines = ["# Generated by scanfleet.common.nats_auth.server_config; users and rights follow the contract."]
    lines += [f"{k}: {_render(v)}" for k, v in config.items()]
    return "\n".join(lines) + "\n"


DEPLOY_NODES = ("nats-1", "nats-2", "nats-3")
DEPLOY_SYNC_INTERVAL = "always"


def deploy_config(store_dir: str = "/data", *, cluster: bool = False) -> str:
    """The config deploy/ ships: every user's password from nats-server's environment
    (``NATS_<USER>_PASSWORD``), clients on every interface of the container's network,
    monitoring on the container's loopback only (its health check runs inside).

    ``cluster``: the config of each server of the three-node cluster (``DEPLOY_NODES``), its
    name from ``NATS_SERVER_NAME``, routes to all three by host name on port 6222, and
    JetStream syncing every acknowledged write to disk (``DEPLOY_SYNC_INTERVAL``).
    """
    routes = None
    if cluster:
        urls = [f"nats-route://{n}:6222" for n in DEPLOY_NODES]
        routes = ClusterRoutes(name="scanfleet", listen="0.0.0.0:6222", routes=urls)
    return server_config(
        {user: EnvRef(password_env(user)) for user in USERS},
        listen="0.0.0.0:4222",
        monitor="127.0.0.1:8222",
        store_dir=store_dir,
        server_name=EnvRef("NATS_SERVER_NAME") if cluster else None,
        cluster=routes,
        sync_interval=DEPLOY_SYNC_INTERVAL if cluster else None,
    )
