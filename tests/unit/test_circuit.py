"""The per-scanner circuit breaker as a pure state machine, with a clock the tests move."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from scanfleet.agent.circuit import Breaker, CircuitBreaker, CircuitState, NullBreaker
from scanfleet.agent.lifecycle import PermanentFailure, RetryPolicy, with_retries
from scanfleet.agent.nessus import NessusAuthError, NessusTransientError
from scanfleet.common.capacity import Slots
from scanfleet.common.config import Settings
from scanfleet.common.messages import Heartbeat
from scanfleet.common.registry import ScannerEntry, ScannerView


def state(b: CircuitBreaker) -> CircuitState:
    """Read afresh each time (the clock moves), so mypy does not narrow it like an attribute."""
    return b.state


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def breaker(threshold: int = 5, cooldown: float = 300.0) -> tuple[CircuitBreaker, Clock, list[CircuitState]]:
    clock = Clock()
    changes: list[CircuitState] = []
    return CircuitBreaker(threshold=threshold, cooldown=cooldown, clock=clock, on_change=changes.append), clock, changes


def opened(threshold: int = 5, cooldown: float = 300.0) -> tuple[CircuitBreaker, Clock, list[CircuitState]]:
    b, clock, changes = breaker(threshold, cooldown)
    for _ in range(threshold):
        b.failure()
    assert state(b) == "open"
    return b, clock, changes


def test_five_consecutive_failures_open_it() -> None:
    b, _, changes = breaker()
    for _ in range(4):
        b.failure()
        assert state(b) == "closed"
    b.failure()
    assert (state(b), b.failures, changes) == ("open", 5, ["open"])


def test_a_success_in_between_resets_the_count() -> None:
    b, _, changes = breaker()
    for _ in range(4):
        b.failure()
    b.success()
    for _ in range(4):
        b.failure()
    assert (state(b), b.failures, changes) == ("closed", 4, [])


def test_open_until_the_cooldown_then_half_open() -> None:
    b, clock, _ = opened(cooldown=300.0)
    clock.now += 299.0
    assert state(b) == "open" and b.retry_in() == 1.0
    assert not b.begin_trial(), "no trial before the cooldown"
    clock.now += 1.0
    assert state(b) == "half_open" and b.retry_in() == 0.0


def test_while_open_other_calls_neither_close_nor_extend_it() -> None:
    b, clock, changes = opened()
    opened_at = b.opened_at
    b.success()
    b.failure()
    assert state(b) == "open" and b.opened_at == opened_at and changes == ["open"]
    clock.now += 300.0
    b.success()
    b.failure()
    assert state(b) == "half_open", "only the trial decides a half-open circuit"


def test_exactly_one_trial_and_success_closes() -> None:
    b, clock, changes = opened()
    clock.now += 300.0
    assert b.begin_trial()
    assert not b.begin_trial(), "a second caller gets no trial while the first runs"
    b.success(trial=True)
    assert (state(b), b.failures, b.retry_in(), changes) == ("closed", 0, None, ["open", "closed"])
    assert not b.begin_trial()


def test_a_failed_trial_opens_it_for_another_cooldown() -> None:
    b, clock, changes = opened(cooldown=60.0)
    clock.now += 60.0
    assert b.begin_trial()
    b.failure(trial=True)
    assert state(b) == "open" and b.opened_at == clock.now and b.retry_in() == 60.0
    assert changes == ["open", "open"]
    clock.now += 60.0
    assert b.begin_trial(), "the next cooldown ends in a new trial"
    b.success(trial=True)
    assert state(b) == "closed"


def test_restore_carries_the_state_over_a_restart() -> None:
    b, clock, _ = breaker(cooldown=300.0)
    b.restore(7, datetime.fromtimestamp(clock.now - 100.0, UTC))
    assert (state(b), b.failures) == ("open", 7)
    assert b.opened_at_utc == datetime.fromtimestamp(clock.now - 100.0, UTC)
    clock.now += 200.0
    assert b.begin_trial()


def test_threshold_and_cooldown_come_from_settings() -> None:
    settings = Settings.from_env({"SCANFLEET_CIRCUIT_THRESHOLD": "2", "SCANFLEET_CIRCUIT_COOLDOWN": "1.5"})
    assert (settings.circuit_threshold, settings.circuit_cooldown) == (2, 1.5)
    assert (Settings().circuit_threshold, Settings().circuit_cooldown) == (5, 300.0)
    b, clock, _ = opened(threshold=settings.circuit_threshold, cooldown=settings.circuit_cooldown)
    assert b.failures == 2
    clock.now += 1.5
    assert state(b) == "half_open"


def _view(circuit: CircuitState) -> ScannerView:
    now = datetime.now(UTC)
    entry = ScannerEntry(pool="p", instance="s", url="https://s", max_concurrent_scans=2, enabled=True, updated_at=now)
    beat = Heartbeat(
        pool="p", instance="s", agent_id="a", at=now, reachable=True, authenticated=True, scan_api=True, circuit=circuit
    )
    return ScannerView(entry=entry, slots=Slots(limit=2), heartbeat=beat)


def test_only_a_closed_circuit_takes_new_work() -> None:
    assert _view("closed").usable
    assert not _view("open").usable
    assert not _view("half_open").usable


def test_heartbeat_carries_the_circuit_through_json() -> None:
    b, clock, _ = opened()
    beat = _view("open").heartbeat
    assert beat is not None
    beat = msgspec.structs.replace(beat, circuit_failures=b.failures, circuit_opened_at=b.opened_at_utc)
    back = msgspec.json.decode(msgspec.json.encode(beat), type=Heartbeat)
    assert back.circuit == "open" and back.circuit_opened_at is not None
    assert back.circuit_opened_at.timestamp() == clock.now


async def test_each_transient_attempt_counts_and_permanent_answers_do_not() -> None:
    b, _, _ = breaker(threshold=5)
    policy = RetryPolicy(base=0.0, cap=0.0, attempts=10)
    outcomes: list[Exception | None] = [NessusTransientError("503", 503)] * 5 + [None]

    async def flaky() -> str:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return "ok"

    assert await with_retries(flaky, what="poll", policy=policy, breaker=b) == "ok"
    assert state(b) == "open", "five failed attempts open it even though the sixth succeeded"

    closed, _, _ = breaker(threshold=1)

    async def refused() -> str:
        raise NessusAuthError("403 forbidden", 403)

    with pytest.raises(PermanentFailure):
        await with_retries(refused, what="launch", policy=policy, breaker=closed)
    assert (state(closed), closed.failures) == ("closed", 0)


async def test_a_null_breaker_never_opens_and_retries_still_give_up() -> None:
    null: Breaker = NullBreaker()
    policy = RetryPolicy(base=0.0, cap=0.0, attempts=3)
    calls = 0

    async def down() -> str:
        nonlocal calls
        calls += 1
        raise NessusTransientError("503", 503)

    with pytest.raises(PermanentFailure) as failed:
        await with_retries(down, what="download", policy=policy, breaker=null)
    assert (failed.value.reason, calls) == ("scanner_unreachable", 3)
    assert (null.state, null.failures, null.retry_in(), null.begin_trial()) == ("closed", 0, None, False)


async def test_forever_retries_past_the_attempts_until_a_deadline_raises() -> None:
    b, _, _ = breaker(threshold=100)
    policy = RetryPolicy(base=0.0, cap=0.0, attempts=2)
    outages = 0

    async def down() -> str:
        raise NessusTransientError("503", 503)

    def deadline() -> None:
        nonlocal outages
        outages += 1
        if outages == 10:
            raise TimeoutError("deadline")

    with pytest.raises(TimeoutError):
        await with_retries(down, what="poll", policy=policy, breaker=b, on_transient=deadline, forever=True)
    assert (outages, b.failures) == (10, 10)


def test_the_backoff_stays_capped_however_long_the_outage() -> None:
    assert 15.0 <= RetryPolicy(base=1.0, cap=30.0).delay(5000) <= 30.0
