"""Which waiting request goes to which scanner: a pure function over one fleet snapshot.

Rules:
  (a) a request for a named scanner that is free goes there;
  (b) a request for a named scanner that is busy waits for it, without blocking others;
  (c) any other request goes to the least utilized free scanner, ties broken by the one
      assigned least recently;
  (d) a request held by a scan window (``not_before`` later than now) waits, blocking nobody;
  (e) who goes next: the best priority class first (``high`` > ``normal`` > ``low``; a request
      climbs one class per ``aging`` seconds waited, so low priority is never starved); within
      a class the client with the least service for its weight: start-time fair queueing,
      each start costing ``1 / weight`` of a client's virtual time (``served``; a client that
      was not waiting starts at the start tag of the least served waiting client's last start,
      so idle time is not banked and a newcomer to a flood takes the next free slot), then
      the fewest slots held for its weight, then the oldest request;
  (f) a client's own requests of one class keep their order: first in, first out.
A request whose task already holds a slot (a crash between reserving and acking) goes
back to that slot's scanner.

Without priorities, weights, windows or a second client this is first in, first out.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from scanfleet.common.messages import PRIORITIES, Priority
from scanfleet.common.queue_order import RESERVED_CLASS, ClientState, QueueOrder

DEFAULT_AGING = 600.0
RANK = {p: i for i, p in enumerate(PRIORITIES)}


@dataclass(frozen=True)
class Waiting:
    task_id: str
    seq: int
    instance: str | None = None
    held_by: str | None = None
    client: str = ""
    priority: Priority = "normal"
    weight: float = 1.0
    # When it was submitted (aging) and when a scan window lets it start (epoch seconds).
    submitted: float = 0.0
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


def effective_class(w: Waiting, aging: float, now: float) -> int:
    """0 is high; waiting ``aging`` seconds lifts a request one class."""
    base = RANK[w.priority]
    if aging <= 0 or base == 0:
        return base
    return max(0, base - int(max(0.0, now - w.submitted) // aging))


@dataclass
class _FairQueues:
    """Rule (e)'s state: per client its startable requests as a heap in (class, seq) order,
    its weight, slots held, and virtual time (``floor`` for a client that was not waiting)."""

    queues: dict[str, list[tuple[int, int, Waiting]]]
    weights: dict[str, float]
    share: dict[str, float]
    vtime: dict[str, float]
    floor: float

    @classmethod
    def of(
        cls,
        waiting: Sequence[Waiting],
        *,
        running: Mapping[str, int] | None,
        served: Mapping[str, float] | None,
        now: float,
        aging: float,
    ) -> _FairQueues:
        queues: dict[str, list[tuple[int, int, Waiting]]] = {}
        weights: dict[str, float] = {}
        for w in waiting:
            if w.held_by is not None or w.not_before > now:
                continue
            queue = queues.get(w.client)
            if queue is None:
                queue = queues[w.client] = []
                weights[w.client] = w.weight
            queue.append((effective_class(w, aging, now) if w.priority != "high" else 0, w.seq, w))
        for queue in queues.values():
            heapq.heapify(queue)
        share = {client: float((running or {}).get(client, 0)) for client in queues}
        # A newcomer starts at the start tag of the least served waiting client's last start.
        known = [v - 1.0 / max(weights[c], 1e-9) for c, v in (served or {}).items() if c in queues]
        floor = max(0.0, min(known, default=0.0))
        vtime = {client: max(floor, (served or {}).get(client, floor)) for client in queues}
        return cls(queues, weights, share, vtime, floor)


@dataclass(frozen=True)
class Ordered:
    """The waiting requests in the order ``plan`` would start them if slots freed one at a time:
    those already holding a slot (class ``None``), then the startable ones by rule (e) (a
    targeted request as if its scanner were free), then those a scan window holds (by when
    they may start). ``vtime``/``share``/``weights``/``floor``: rule (e)'s state before the order."""

    entries: list[tuple[Waiting, int | None]]
    startable: int
    vtime: dict[str, float]
    share: dict[str, float]
    weights: dict[str, float]
    floor: float


def order(
    waiting: Sequence[Waiting],
    *,
    running: Mapping[str, int] | None = None,
    served: Mapping[str, float] | None = None,
    now: float = 0.0,
    aging: float = DEFAULT_AGING,
    limit: int | None = None,
) -> Ordered:
    """The policy's waiting order (see ``Ordered``), the first ``limit`` requests of it."""
    fair = _FairQueues.of(waiting, running=running, served=served, now=now, aging=aging)
    state = (dict(fair.vtime), dict(fair.share), dict(fair.weights))
    cap = len(waiting) if limit is None else limit
    reserved = sorted((w for w in waiting if w.held_by is not None), key=lambda w: w.seq)
    entries: list[tuple[Waiting, int | None]] = [(w, None) for w in reserved[:cap]]
    vtime, share, weights = fair.vtime, fair.share, fair.weights

    def rank(client: str) -> tuple[int, float, float, int, str]:
        cls, seq, _ = fair.queues[client][0]
        return (cls, vtime[client], share[client] / max(weights[client], 1e-9), seq, client)

    heap = [rank(client) for client in fair.queues]
    heapq.heapify(heap)
    while heap and len(entries) < cap:
        client = heapq.heappop(heap)[-1]
        cls, _, w = heapq.heappop(fair.queues[client])
        entries.append((w, cls))
        share[client] += 1.0
        vtime[client] += 1.0 / max(weights[client], 1e-9)
        if fair.queues[client]:
            heapq.heappush(heap, rank(client))
    startable = len(entries)
    later = sorted(
        (w for w in waiting if w.held_by is None and w.not_before > now), key=lambda w: (w.not_before, w.seq)
    )
    entries += [(w, effective_class(w, aging, now)) for w in later[: max(0, cap - len(entries))]]
    return Ordered(entries, startable, *state, fair.floor)


def snapshot(
    pool: str,
    ordered: Ordered,
    *,
    depth: int,
    at: datetime,
    running: Mapping[str, int] | None = None,
    served: Mapping[str, float] | None = None,
) -> QueueOrder:
    """What the gateway needs of ``ordered`` to place a waiting task and a newcomer
    (``queue_order.place``): per client the state a new request of its would meet."""
    running = running or {}
    names: dict[str, int] = {}
    client_of = []
    for w, _ in ordered.entries:
        client_of.append(names.setdefault(w.client, len(names)))
    for client in [*running, *(served or {})]:
        names.setdefault(client, len(names))
    clients = [
        ClientState(
            weight=ordered.weights.get(client, 0.0),
            vtime=ordered.vtime.get(client, max(ordered.floor, (served or {}).get(client, ordered.floor))),
            running=running.get(client, 0),
        )
        for client in names
    ]
    return QueueOrder(
        pool=pool,
        at=at,
        depth=depth,
        startable=ordered.startable,
        tasks=[w.task_id for w, _ in ordered.entries],
        client_of=client_of,
        classes=[RESERVED_CLASS if cls is None else cls for _, cls in ordered.entries],
        seqs=[w.seq for w, _ in ordered.entries],
        client_names=list(names),
        clients=clients,
        floor=ordered.floor,
    )


def plan(
    waiting: Sequence[Waiting],
    scanners: Sequence[Candidate],
    *,
    running: Mapping[str, int] | None = None,
    served: Mapping[str, float] | None = None,
    now: float = 0.0,
    aging: float = DEFAULT_AGING,
) -> list[Decision]:
    return plan_shares(waiting, scanners, running=running, served=served, now=now, aging=aging)[0]


def plan_shares(
    waiting: Sequence[Waiting],
    scanners: Sequence[Candidate],
    *,
    running: Mapping[str, int] | None = None,
    served: Mapping[str, float] | None = None,
    now: float = 0.0,
    aging: float = DEFAULT_AGING,
) -> tuple[list[Decision], dict[str, float]]:
    """The decisions, and each waiting client's virtual time after them (pass it back as
    ``served`` next time). ``running`` counts the slots each client already holds in this pool."""
    active = {c.instance: c.active for c in scanners}
    last = {c.instance: c.last_assigned_at for c in scanners}
    by_name = {c.instance: c for c in scanners}
    free_total = sum(max(0, c.limit - c.active) for c in scanners if c.usable)
    tick = max(last.values(), default=0.0)

    def free(name: str) -> bool:
        c = by_name[name]
        return c.usable and active[name] < c.limit

    held = sorted((w for w in waiting if w.held_by is not None and w.held_by in by_name), key=lambda w: w.seq)
    decisions = [Decision(w.task_id, w.held_by, already_reserved=True) for w in held if w.held_by is not None]
    if free_total <= 0:  # the common case while a pool is full: nothing to order
        clients = {w.client for w in waiting}
        return decisions, {c: v for c, v in (served or {}).items() if c in clients}
    fair = _FairQueues.of(waiting, running=running, served=served, now=now, aging=aging)
    queues, weights, share, vtime = fair.queues, fair.weights, fair.share, fair.vtime

    def head(client: str) -> tuple[int, int, Waiting] | None:
        """The client's first request that could start now (targeted ones at a busy scanner
        dropped from this plan: their scanner only gets busier)."""
        queue = queues[client]
        while queue:
            w = queue[0][2]
            if w.instance is None or (w.instance in by_name and free(w.instance)):
                return queue[0]
            heapq.heappop(queue)
        return None

    while free_total > 0:
        best: tuple[tuple[int, float, float, int], str] | None = None
        for client in queues:
            item = head(client)
            if item is None:
                continue
            weight = max(weights[client], 1e-9)
            rank = (item[0], vtime[client], share[client] / weight, item[1])
            if best is None or rank < best[0]:
                best = (rank, client)
        if best is None:
            break
        client = best[1]
        w = heapq.heappop(queues[client])[2]
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
        vtime[client] += 1.0 / max(weights[client], 1e-9)
        decisions.append(Decision(w.task_id, choice))
    return decisions, vtime
