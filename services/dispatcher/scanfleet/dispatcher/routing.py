"""Which waiting request goes to which scanner: a pure function over one fleet snapshot.

Rules, in submission order (first in, first out):
  (a) a request for a named scanner that is free goes there;
  (b) a request for a named scanner that is busy waits for it, without blocking others;
  (c) any other request goes to the least utilized free scanner, ties broken by the one
      assigned least recently;
  (d) when nothing is free, requests keep waiting in order.
A request whose task already holds a slot (a crash between reserving and acking) goes
back to that slot's scanner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Waiting:
    task_id: str
    seq: int
    instance: str | None = None
    held_by: str | None = None


@dataclass(frozen=True)
class Candidate:
    instance: str
    limit: int
    active: int
    usable: bool = True
    last_assigned_at: float = 0.0


@dataclass(frozen=True)
class Decision:
    task_id: str
    instance: str
    already_reserved: bool = False


def plan(waiting: Sequence[Waiting], scanners: Sequence[Candidate]) -> list[Decision]:
    active = {c.instance: c.active for c in scanners}
    last = {c.instance: c.last_assigned_at for c in scanners}
    by_name = {c.instance: c for c in scanners}
    free_total = sum(max(0, c.limit - c.active) for c in scanners if c.usable)
    decisions: list[Decision] = []
    tick = max(last.values(), default=0.0)

    def free(name: str) -> bool:
        c = by_name[name]
        return c.usable and active[name] < c.limit

    for w in sorted(waiting, key=lambda w: w.seq):
        if w.held_by is not None:
            if w.held_by in by_name:
                decisions.append(Decision(w.task_id, w.held_by, already_reserved=True))
            continue
        if free_total <= 0:
            continue
        if w.instance is not None:
            if w.instance not in by_name or not free(w.instance):
                continue
            choice = w.instance
        else:
            options = [name for name in by_name if free(name)]
            if not options:
                continue
            choice = min(options, key=lambda n: (active[n] / by_name[n].limit, last[n], n))
        active[choice] += 1
        tick += 1.0
        last[choice] = tick
        free_total -= 1
        decisions.append(Decision(w.task_id, choice))
    return decisions
