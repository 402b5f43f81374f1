"""Who may see and do what: pure decisions over a caller and a task, plus the submission rate.

Tasks a caller may not see do not exist for it: every refusal to read or control another
client's task is the same 404 as an unknown id, so ids cannot be probed.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from scanfleet.common.clients import Client, Principal, Role
from scanfleet.common.scope import CompiledScope, Scope
from scanfleet.common.tasks import TaskRecord

ADMIN_TOKEN_CLIENT = "admin-token"


@dataclass(frozen=True)
class Caller:
    """A verified principal and where the request came from."""

    principal: Principal
    source: str | None = None
    interface: str = "rest"

    @property
    def id(self) -> str:
        return self.principal.id

    @property
    def role(self) -> Role:
        return self.principal.role

    @property
    def scope(self) -> Scope:
        return self.principal.scope.scope


def admin_token_principal() -> Principal:
    """The operator holding ``SCANFLEET_ADMIN_TOKEN``: admin routes only, no scan scope."""
    client = Client(id=ADMIN_TOKEN_CLIENT, role=Role.ADMIN, description="SCANFLEET_ADMIN_TOKEN")
    return Principal(client, CompiledScope.of(client.scope), "admin-token")


def can_see_pool(caller: Caller, pool: str) -> bool:
    return caller.role is Role.ADMIN or caller.scope.allows_pool(pool)


def visible_pools(caller: Caller, pools: Iterable[str]) -> list[str]:
    return [p for p in pools if can_see_pool(caller, p)]


def can_see_task(caller: Caller, record: TaskRecord) -> bool:
    """Agents: their own tasks. Operators: theirs and every task in their pools. Admins: all."""
    if caller.role is Role.ADMIN or record.submitted_by == caller.id:
        return True
    return caller.role is Role.OPERATOR and caller.scope.allows_pool(record.pool)


@dataclass
class RateLimiter:
    """Submissions per client in a sliding minute, kept by each gateway replica for itself."""

    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, client: str, per_minute: int) -> int | None:
        """Record an attempt; None if allowed, else whole seconds until the next one would be."""
        now = self.clock()
        seen = self._seen.setdefault(client, deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if len(seen) >= max(per_minute, 0):
            return max(1, math.ceil(seen[0] + self.window - now)) if seen else int(self.window)
        seen.append(now)
        return None
