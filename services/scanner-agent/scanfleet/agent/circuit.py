"""A circuit breaker per scanner instance, shared through its heartbeat in KV ``scan_agents``.

``threshold`` consecutive failed calls open it: the dispatcher then routes around the
scanner (``ScannerView.usable``). After ``cooldown`` seconds it is half open and one trial
(the agent's next probe of ``/server/properties``) decides: success closes it, failure
opens it for another cooldown. Pure logic with an injected clock, so tests move time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

CircuitState = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    threshold: int = 5
    cooldown: float = 300.0
    clock: Callable[[], float] = time.time
    failures: int = 0
    opened_at: float | None = None
    on_change: Callable[[CircuitState], None] | None = field(default=None, repr=False)

    @property
    def state(self) -> CircuitState:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.cooldown else "open"

    @property
    def opened_at_utc(self) -> datetime | None:
        return None if self.opened_at is None else datetime.fromtimestamp(self.opened_at, UTC)

    def success(self) -> None:
        was = self.state
        self.failures = 0
        self.opened_at = None
        if was != "closed":
            self._changed()

    def failure(self) -> None:
        was = self.state
        self.failures += 1
        if was == "half_open" or (was == "closed" and self.failures >= self.threshold):
            self.opened_at = self.clock()
            self._changed()

    def restore(self, failures: int, opened_at: datetime | None) -> None:
        """Carry the state over from the last heartbeat after an agent restart."""
        self.failures = failures
        self.opened_at = opened_at.timestamp() if opened_at is not None else None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.state)
