"""A circuit breaker per scanner instance, shared through its heartbeat in KV ``scan_agents``.

What counts as a failure: every call to the scanner that ends in a transient error
(connection refused or reset, a timeout, HTTP 429 or 5xx), each attempt of a retry loop
on its own, from the agent's probe and from every scan's calls alike. A permanent answer
(401, 403, 404, 409, 412, a rejected target) is a working scanner saying no: it neither
counts nor resets. Any successful call resets the count while the circuit is closed.

``threshold`` consecutive failures open it: the dispatcher then routes new scans around
the scanner (``ScannerView.usable`` needs ``closed``). While open, scans already running
there keep polling with their own backoff, but their outcomes do not move the circuit,
so a scanner that flaps back for one call is not trusted early. ``cooldown`` seconds
after opening it is half open and exactly one trial (the agent's next probe of
``/server/properties``, claimed with ``begin_trial``) decides: success closes it, failure
opens it for another cooldown. Pure logic with an injected clock, so tests move time.

A scanner that is starting up (Nessus loading its plugins after a restart) is not failing:
while ``starting`` is set, failed calls do not count, and a half-open trial that meets a
starting scanner is handed back undecided (``abandon_trial``) for the next probe. ``reset``
closes the circuit when its scanner's container has just been restarted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

CircuitState = Literal["closed", "open", "half_open"]


class Breaker(Protocol):
    """What the agent asks of a circuit, so code that calls the scanner never checks for a missing one."""

    @property
    def state(self) -> CircuitState: ...
    @property
    def failures(self) -> int: ...
    @property
    def trial_running(self) -> bool: ...
    @property
    def opened_at_utc(self) -> datetime | None: ...
    @property
    def starting(self) -> bool: ...
    def retry_in(self) -> float | None: ...
    def begin_trial(self) -> bool: ...
    def success(self, *, trial: bool = False) -> None: ...
    def failure(self, *, trial: bool = False) -> None: ...
    def restore(self, failures: int, opened_at: datetime | None) -> None: ...


@dataclass
class CircuitBreaker:
    threshold: int = 5
    cooldown: float = 300.0
    clock: Callable[[], float] = time.time
    failures: int = 0
    opened_at: float | None = None
    trial_running: bool = False
    starting: bool = False
    on_change: Callable[[CircuitState], None] | None = field(default=None, repr=False)
    # Told of every failure that counts: the agent probes at once, to tell a start-up from an outage.
    on_failure: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def state(self) -> CircuitState:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.cooldown else "open"

    @property
    def opened_at_utc(self) -> datetime | None:
        return None if self.opened_at is None else datetime.fromtimestamp(self.opened_at, UTC)

    def retry_in(self) -> float | None:
        """Seconds until the circuit turns half open; None while closed, 0 once half open."""
        if self.opened_at is None:
            return None
        return max(0.0, self.opened_at + self.cooldown - self.clock())

    def begin_trial(self) -> bool:
        """Claim the one trial call of a half-open circuit; False for every other caller."""
        if self.state != "half_open" or self.trial_running:
            return False
        self.trial_running = True
        return True

    def success(self, *, trial: bool = False) -> None:
        state = self.state
        if state == "closed":
            self.failures = 0
        elif trial:
            self.failures = 0
            self.opened_at = None
            self.trial_running = False
            self._changed()

    def failure(self, *, trial: bool = False) -> None:
        if self.starting:
            if trial:
                self.abandon_trial()
            return
        if self.on_failure is not None:
            self.on_failure()
        state = self.state
        if state == "closed":
            self.failures += 1
            if self.failures >= self.threshold:
                self.opened_at = self.clock()
                self._changed()
        elif trial:
            self.failures += 1
            self.opened_at = self.clock()
            self.trial_running = False
            self._changed()

    def abandon_trial(self) -> None:
        """The trial could not decide (the scanner is starting): the next probe tries again."""
        self.trial_running = False

    def reset(self) -> None:
        """Closed with no failures: the scanner's container was just restarted."""
        was = self.state
        self.failures = 0
        self.opened_at = None
        self.trial_running = False
        if was != "closed":
            self._changed()

    def restore(self, failures: int, opened_at: datetime | None) -> None:
        """Carry the state over from the last heartbeat after an agent restart."""
        self.failures = failures
        self.opened_at = opened_at.timestamp() if opened_at is not None else None
        self.trial_running = False

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.state)


class NullBreaker:
    """A circuit that stays closed whatever happens: for calls whose outcome must not move a real one."""

    state: CircuitState = "closed"
    failures = 0
    trial_running = False
    starting = False
    opened_at_utc = None

    def retry_in(self) -> float | None:
        return None

    def begin_trial(self) -> bool:
        return False

    def success(self, *, trial: bool = False) -> None:
        pass

    def failure(self, *, trial: bool = False) -> None:
        pass

    def restore(self, failures: int, opened_at: datetime | None) -> None:
        pass
