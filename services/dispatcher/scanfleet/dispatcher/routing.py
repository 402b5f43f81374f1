"""Which waiting request goes to which scanner: a pure function over one fleet snapshot.

Rules:
  (a) a request for a named scanner that is free goes there;
  (b) a request for a named scanner that is busy waits for it, without blocking others;
  (c) any other request goes to the least utilized free scanner, ties broken by the one
      assigned least recently;
  (d) a request held by a scan window (``not_before`` later than now) waits, blocking nobody;
  (e) who goes next: the best priority class first (``high`` > ``normal`` > ``low``; a request
      climbs one class per ``aging`` seconds waited, so low priority is never starved); within
      a class the client with the fewest slots for its weight (running plus assigned in this
      plan, divided by its weight): a weighted fair share, so a flood from one client holds
      another client's request only until the next slot frees; ties go to the oldest request;
  (f) a client's own requests of one class keep their order: first in, first out.
A request whose task already holds a slot (a crash between reserving and acking) goes
back to that slot's scanner.

Without priorities, weights, windows or a second client this is first in, first out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scanfleet.common.messages import PRIORITIES, Priority

DEFAULT_AGING = 600.0


@dataclass(frozen=True)
class Waiting:
    task_id: str
    seq: int
    instance: str | None = None
    held_by: str | None = None
    client: str = ""
    priority: Priority = "normal"
    weight: float = 1.0
    # Seconds since submission (aging) and the time a scan window lets it start (epoch s).
    waited: float = 0.0
    not_before: float = 0.0


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


def effective_class(w: Waiting, aging: float) -> int:
    """0 is high; waiting ``aging`` seconds lifts a request one class."""
    base = PRIORITIES.index(w.priority)
    if aging <= 0:
        return base
    return max(0, base - int(w.waited // aging))


def plan(
    waiting: Sequence[Waiting],
    scanners: Sequence[Candidate],
    *,
    running: Mapping[str, int] | None = None,
    now: float = 0.0,
    aging: float = DEFAULT_AGING,
) -> list[Decision]:
    """``running`` counts the slots each client already holds in this pool."""
    active = {c.instance: c.active for c in scanners}
    last = {c.instance: c.last_assigned_at for c in scanners}
    by_name = {c.instance: c for c in scanners}
    free_total = sum(max(0, c.limit - c.active) for c in scanners if c.usable)
    decisions: list[Decision] = []
    tick = max(last.values(), default=0.0)

    def free(name: str) -> bool:
        c = by_name[name]
        return c.usable and active[name] < c.limit

    queues: dict[str, list[tuple[int, int, Waiting]]] = {}
    weights: dict[str, float] = {}
    for w in sorted(waiting, key=lambda w: w.seq):
        if w.held_by is not None:
            if w.held_by in by_name:
                decisions.append(Decision(w.task_id, w.held_by, already_reserved=True))
            continue
        if w.not_before > now:
            continue
        queues.setdefault(w.client, []).append((effective_class(w, aging), w.seq, w))
        weights[w.client] = max(weights.get(w.client, 0.0), w.weight)
    for queue in queues.values():
        queue.sort(key=lambda item: (item[0], item[1]))
    share = {client: float((running or {}).get(client, 0)) for client in queues}
    position = dict.fromkeys(queues, 0)

    def head(client: str) -> tuple[int, int, Waiting] | None:
        """The client's first request that could start now (targeted ones at a busy scanner skipped)."""
        queue, i = queues[client], position[client]
        while i < len(queue):
            w = queue[i][2]
            if w.instance is None or (w.instance in by_name and free(w.instance)):
                break
            i += 1
        position[client] = i
        return queue[i] if i < len(queue) else None

    while free_total > 0:
        best: tuple[tuple[int, float, int], str] | None = None
        for client in queues:
            item = head(client)
            if item is None:
                continue
            rank = (item[0], share[client] / max(weights[client], 1e-9), item[1])
            if best is None or rank < best[0]:
                best = (rank, client)
        if best is None:
            break
        client = best[1]
        w = queues[client][position[client]][2]
        position[client] += 1
        if w.instance is not None:
            choice = w.instance
        else:
            options = [name for name in by_name if free(name)]
            choice = min(options, key=lambda n: (active[n] / by_name[n].limit, last[n], n))
        active[choice] += 1
        tick += 1.0
        last[choice] = tick
        free_total -= 1
        share[client] += 1.0
        decisions.append(Decision(w.task_id, choice))
    return decisions
