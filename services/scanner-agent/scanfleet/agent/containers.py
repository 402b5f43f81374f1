"""Decisions about a container-managed scanner, kept apart from the engine calls (``engine.py``).

What the engine's inspect data means for scanfleet, when a scanner that does not answer is
starting rather than failing, whether an operator's restart may go ahead, and when the agent
restarts a container on its own: pure functions of their inputs (and a clock), unit-tested.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from scanfleet.common.config import ContainerConfig
from scanfleet.common.messages import ContainerStatus, RestartRefusal

# What Nessus's GET /server/status says while it cannot scan yet: "loading" while it compiles
# and loads its plugins after a (re)start, for minutes; "initializing" on some versions.
STARTING_STATUSES = frozenset({"loading", "initializing"})
# Container states in which the process inside is on its way up.
BOOTING_STATES = frozenset({"created", "restarting"})


def public_engine(url: str) -> str:
    """The engine URL without any user:password part (``unix:///…`` stays as written)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _time(value: object) -> datetime | None:
    """An engine timestamp (RFC 3339, nanoseconds allowed); Go's zero time and junk are None."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def container_status(attrs: Mapping[str, Any], *, name: str, engine: str) -> ContainerStatus:
    """The inspect data of one container (Docker and podman's Docker API alike) as scanfleet shows it."""
    state = attrs.get("State")
    state = state if isinstance(state, Mapping) else {}
    health = state.get("Health")
    count = attrs.get("RestartCount")
    return ContainerStatus(
        name=name,
        engine=public_engine(engine),
        state=str(state.get("Status") or "unknown"),
        health=str(health["Status"]) if isinstance(health, Mapping) and health.get("Status") else None,
        started_at=_time(state.get("StartedAt")),
        restart_count=count if isinstance(count, int) else 0,
    )


def unreachable(config: ContainerConfig, error: str) -> ContainerStatus:
    """The status shown when the engine could not say: the container's state is unknown."""
    return ContainerStatus(name=config.name, engine=public_engine(config.engine), error=error)


def starting(
    server_status: str | None,
    container: ContainerStatus | None,
    now: datetime,
    grace_seconds: float,
    last_answer: datetime | None = None,
) -> bool:
    """Whether the scanner is starting up: no work for it, and its failures do not count.

    Nessus says so itself (``loading``). When it does not answer at all, only its container
    can tell a start from a failure: one being created or restarted, or one started less than
    ``grace_seconds`` ago whose Nessus has not answered since (``last_answer``: the last time
    it did): the process inside is still coming up. Once it has answered, silence is a failure.
    A container's health status alone is not trusted: engines without a health-check runner
    (podman outside systemd) report ``starting`` for ever.
    """
    if server_status is not None:
        return server_status in STARTING_STATUSES
    if container is None or container.error is not None:
        return False
    if container.state in BOOTING_STATES:
        return True
    if container.state != "running" or container.started_at is None:
        return False
    if last_answer is not None and last_answer >= container.started_at:
        return False
    return (now - container.started_at).total_seconds() < grace_seconds


def restart_refusal(
    config: ContainerConfig | None, *, restarting: bool, busy: Collection[str], force: bool
) -> tuple[RestartRefusal, str] | None:
    """Why an operator's restart must not go ahead now; None when it may."""
    if config is None:
        return (
            "not_container_managed",
            "this scanner names no container in scanners.yaml; scanfleet restarts only containers it is told about",
        )
    if restarting:
        return "restart_in_progress", f"container {config.name} is being restarted already"
    if busy and not force:
        return (
            "scanner_busy",
            f"{len(busy)} scan(s) are in hand on this scanner and a restart would abort them; "
            "wait for them, cancel them, or restart with force",
        )
    return None


def auto_restart_due(
    config: ContainerConfig | None,
    *,
    circuit_opened_at: datetime | None,
    last_restart_at: datetime | None,
    restarting: bool,
    now: datetime,
) -> bool:
    """The agent's own restart: opted in, the circuit open for the whole configured period, and
    no restart (by anyone) within that period, so a scanner that a restart does not cure is
    restarted at most once per period, never in a loop."""
    if config is None or config.auto_restart_after_minutes is None or circuit_opened_at is None or restarting:
        return False
    period = config.auto_restart_after_minutes * 60.0
    if (now - circuit_opened_at).total_seconds() < period:
        return False
    return last_restart_at is None or (now - last_restart_at).total_seconds() >= period
