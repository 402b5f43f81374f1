"""Container-managed scanners, the pure part: engine data as scanfleet shows it, start-up versus
failure, who may restart when, and the circuit while a scanner starts up."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from scanfleet.agent.circuit import CircuitBreaker
from scanfleet.agent.containers import auto_restart_due, container_status, restart_refusal, starting, unreachable
from scanfleet.common.capacity import Slots
from scanfleet.common.config import ConfigError, ContainerConfig, load_fleet
from scanfleet.common.messages import ContainerStatus, Heartbeat
from scanfleet.common.registry import ScannerEntry, ScannerView
from tests.helpers import FakeClock

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

# What `docker inspect` and podman's Docker API give for the same kind of container (trimmed).
DOCKER_ATTRS: dict[str, Any] = {
    "Name": "/nessus-1",
    "RestartCount": 3,
    "State": {
        "Status": "running",
        "Running": True,
        "StartedAt": "2026-12-01T11:58:00.123456789Z",
        "FinishedAt": "2026-12-01T11:57:59.5Z",
        "Health": {"Status": "healthy", "FailingStreak": 0, "Log": []},
    },
}
PODMAN_ATTRS: dict[str, Any] = {
    "Name": "/nessus-2",
    "RestartCount": 0,
    "State": {
        "Status": "exited",
        "Running": False,
        "StartedAt": "0001-01-01T00:00:00Z",
        "FinishedAt": "2026-12-01T11:00:00.000000001Z",
    },
}


def config(**fields: Any) -> ContainerConfig:
    return msgspec.convert({"name": "nessus-1", **fields}, ContainerConfig)


def test_docker_inspect_data_becomes_the_container_status() -> None:
    status = container_status(DOCKER_ATTRS, name="nessus-1", engine="tcp://user:secret@engine:2375")
    assert status == ContainerStatus(
        name="nessus-1",
        engine="tcp://engine:2375",
        state="running",
        health="healthy",
        started_at=datetime(2026, 12, 1, 11, 58, 0, 123456, tzinfo=UTC),
        restart_count=3,
    )


def test_podman_zero_times_and_missing_health_are_absent_not_errors() -> None:
    status = container_status(PODMAN_ATTRS, name="nessus-2", engine="unix:///run/podman/podman.sock")
    assert (status.state, status.health, status.started_at, status.restart_count) == ("exited", None, None, 0)
    assert status.engine == "unix:///run/podman/podman.sock"


SCALARS = st.none() | st.integers() | st.text(max_size=30)
STATES = st.dictionaries(
    st.sampled_from(["Status", "StartedAt", "Health"]),
    SCALARS | st.dictionaries(st.just("Status"), SCALARS),
    max_size=3,
)


@given(st.dictionaries(st.sampled_from(["State", "RestartCount", "Name"]), SCALARS | STATES, max_size=3))
def test_any_inspect_shape_gives_a_status(attrs: dict[str, Any]) -> None:
    status = container_status(attrs, name="n", engine="unix:///s")
    assert status.state and status.error is None
    assert status.started_at is None or status.started_at.tzinfo is not None
    starting(None, status, NOW, grace_seconds=60)  # comparable with an aware clock, whatever it held


def test_an_unreachable_engine_is_an_unknown_state_with_the_reason() -> None:
    status = unreachable(config(engine="unix:///var/run/docker.sock"), "engine_unreachable: refused")
    assert (status.state, status.error) == ("unknown", "engine_unreachable: refused")


def running_since(seconds: float, **fields: Any) -> ContainerStatus:
    return ContainerStatus(
        name="n", engine="unix:///s", state="running", started_at=NOW - timedelta(seconds=seconds), **fields
    )


@pytest.mark.parametrize(
    ("answer", "container", "expected"),
    [
        # Nessus says so itself, whatever the container.
        ("loading", None, True),
        ("initializing", running_since(3600), True),
        ("ready", running_since(1), False),
        ("register", None, False),
        # No answer: only the container can tell a start from a failure.
        (None, None, False),
        (None, running_since(10), True),
        (None, running_since(299), True),
        (None, running_since(301), False),
        (None, ContainerStatus(name="n", engine="e", state="restarting"), True),
        (None, ContainerStatus(name="n", engine="e", state="created"), True),
        (None, ContainerStatus(name="n", engine="e", state="exited"), False),
        (None, ContainerStatus(name="n", engine="e", state="running"), False),  # no start time known
        (None, ContainerStatus(name="n", engine="e", error="engine down"), False),
        # A health check that never runs (podman outside systemd) does not extend the start-up.
        (None, running_since(3600, health="starting"), False),
    ],
)
def test_starting_or_failing(answer: str | None, container: ContainerStatus | None, expected: bool) -> None:
    assert starting(answer, container, NOW, grace_seconds=300) is expected


def test_silence_after_nessus_answered_since_its_container_started_is_a_failure() -> None:
    container = running_since(60)
    assert starting(None, container, NOW, grace_seconds=300, last_answer=NOW - timedelta(seconds=61))
    assert not starting(None, container, NOW, grace_seconds=300, last_answer=NOW - timedelta(seconds=30))
    assert starting("loading", container, NOW, grace_seconds=300, last_answer=NOW)


def test_who_may_restart_when() -> None:
    refusal = restart_refusal(None, restarting=False, busy=[], force=False)
    assert refusal is not None and refusal[0] == "not_container_managed"
    refusal = restart_refusal(config(), restarting=True, busy=[], force=True)
    assert refusal is not None and refusal[0] == "restart_in_progress"
    refusal = restart_refusal(config(), restarting=False, busy=["t1", "t2"], force=False)
    assert refusal is not None and refusal[0] == "scanner_busy" and "2 scan(s)" in refusal[1]
    assert restart_refusal(config(), restarting=False, busy=["t1"], force=True) is None
    assert restart_refusal(config(), restarting=False, busy=[], force=False) is None


def due(after: float | None, opened_minutes_ago: float | None, restarted_minutes_ago: float | None) -> bool:
    def ago(minutes: float | None) -> datetime | None:
        return None if minutes is None else NOW - timedelta(minutes=minutes)

    return auto_restart_due(
        config(auto_restart_after_minutes=after),
        circuit_opened_at=ago(opened_minutes_ago),
        last_restart_at=ago(restarted_minutes_ago),
        restarting=False,
        now=NOW,
    )


def test_automatic_restart_needs_the_opt_in_and_the_whole_period_open() -> None:
    assert not due(None, 600, None)
    assert not due(10, None, None)
    assert not due(10, 9.9, None)
    assert due(10, 10, None)
    assert not auto_restart_due(None, circuit_opened_at=NOW, last_restart_at=None, restarting=False, now=NOW)
    assert not auto_restart_due(
        config(auto_restart_after_minutes=1),
        circuit_opened_at=NOW - timedelta(hours=1),
        last_restart_at=None,
        restarting=True,
        now=NOW,
    )


def test_at_most_one_restart_per_period_whoever_made_the_last() -> None:
    assert not due(10, 30, 9)
    assert due(10, 30, 10)


@given(
    after=st.floats(min_value=0.01, max_value=120),
    checks=st.lists(st.floats(min_value=0, max_value=60), min_size=1, max_size=200),
)
def test_a_circuit_that_never_closes_is_restarted_at_most_once_per_period(after: float, checks: list[float]) -> None:
    """Checked at any moments over any stretch of time, a circuit open throughout gets restarts
    no closer together than the period, and none before it has been open that long."""
    opened = NOW
    now, last, restarts = NOW, None, []
    for step in checks:
        now += timedelta(minutes=step)
        if auto_restart_due(
            config(auto_restart_after_minutes=after),
            circuit_opened_at=opened,
            last_restart_at=last,
            restarting=False,
            now=now,
        ):
            restarts.append(now)
            last = now
    period = timedelta(minutes=after)
    assert all(r - opened >= period for r in restarts)
    assert all(b - a >= period for a, b in itertools.pairwise(restarts))


# The circuit while a scanner starts up ------------------------------------------------------


def test_failures_while_starting_do_not_count() -> None:
    b = CircuitBreaker(threshold=2, cooldown=10, clock=FakeClock())
    b.starting = True
    for _ in range(10):
        b.failure()
    assert (b.state, b.failures) == ("closed", 0)
    b.starting = False
    b.failure()
    b.failure()
    assert b.state == "open"


def test_a_trial_meeting_a_starting_scanner_stays_undecided() -> None:
    clock = FakeClock()
    b = CircuitBreaker(threshold=1, cooldown=10, clock=clock)
    b.failure()
    clock.advance(10)
    assert b.begin_trial()
    b.starting = True
    b.failure(trial=True)
    assert (b.state, b.trial_running) == ("half_open", False)
    assert b.begin_trial(), "the next probe is the trial again"
    b.abandon_trial()
    assert b.state == "half_open"


def test_reset_closes_an_open_circuit_and_says_so() -> None:
    changes: list[str] = []
    b = CircuitBreaker(threshold=1, cooldown=10, clock=FakeClock(), on_change=changes.append)
    b.failure()
    b.reset()
    assert (b.state, b.failures, changes) == ("closed", 0, ["open", "closed"])
    b.reset()
    assert changes == ["open", "closed"], "no change, no notice"


def test_a_starting_scanner_takes_no_new_work() -> None:
    entry = ScannerEntry(pool="p", instance="s", url="https://s", max_concurrent_scans=2, enabled=True, updated_at=NOW)
    beat = Heartbeat(pool="p", instance="s", agent_id="a", at=NOW, reachable=True, authenticated=True, scan_api=True)
    assert ScannerView(entry=entry, slots=Slots(limit=2), heartbeat=beat).usable
    beat = msgspec.structs.replace(beat, starting=True, startup_progress=40)
    assert not ScannerView(entry=entry, slots=Slots(limit=2), heartbeat=beat).usable


def test_an_old_heartbeat_without_the_new_fields_still_decodes() -> None:
    old = b'{"v":1,"pool":"p","instance":"s","agent_id":"a","at":"2026-12-01T12:00:00Z","reachable":true,'
    old += b'"authenticated":true,"scan_api":true}'
    beat = msgspec.json.decode(old, type=Heartbeat)
    assert (beat.starting, beat.startup_progress, beat.container) == (False, None, None)


# scanners.yaml -------------------------------------------------------------------------------


def fleet_with(tmp_path: Path, container: Any) -> Path:
    scanner = {"id": "s1", "url": "https://n:8834", "auth": {"access_key": "a", "secret_key": "b"}}
    data = {"pools": {"p": {"scanners": [{**scanner, "container": container}]}}}
    path = tmp_path / "scanners.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_container_block_is_read_with_its_defaults(tmp_path: Path) -> None:
    fleet = load_fleet(fleet_with(tmp_path, {"name": "nessus-1"}), env={})
    assert fleet.pools["p"].scanners[0].container == ContainerConfig(
        name="nessus-1",
        engine="unix:///var/run/docker.sock",
        auto_restart_after_minutes=None,
        startup_grace_minutes=5.0,
        stop_timeout_seconds=30,
    )
    full = {"name": "n", "engine": "tcp://10.0.0.5:2375", "auto_restart_after_minutes": 15, "stop_timeout_seconds": 5}
    assert load_fleet(fleet_with(tmp_path, full), env={}).pools["p"].scanners[0].container == config(
        name="n", engine="tcp://10.0.0.5:2375", auto_restart_after_minutes=15, stop_timeout_seconds=5
    )


@pytest.mark.parametrize(
    ("container", "where", "words"),
    [
        ({"name": "nessus", "engin": "x"}, "pools.p.scanners[0].container", "engin"),
        ({"engine": "unix:///s"}, "pools.p.scanners[0].container", "name"),
        ({"name": "bad name!"}, "container.name", "container name"),
        ({"name": "n", "engine": "/var/run/docker.sock"}, "container.engine", "Docker API URL"),
        ({"name": "n", "auto_restart_after_minutes": 0}, "container.auto_restart_after_minutes", "above 0"),
        ({"name": "n", "startup_grace_minutes": -1}, "container.startup_grace_minutes", "0 or more"),
        ({"name": "n", "stop_timeout_seconds": 601}, "container.stop_timeout_seconds", "600"),
    ],
)
def test_a_bad_container_block_names_the_key(tmp_path: Path, container: Any, where: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_fleet(fleet_with(tmp_path, container), env={})
    assert where in str(info.value) and words in str(info.value), info.value
