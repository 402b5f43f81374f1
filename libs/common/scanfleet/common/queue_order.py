"""A pool's waiting order as the dispatcher's policy sees it, and where a newcomer would stand.

The dispatcher holds each pool's waiting requests and runs the policy, so it publishes the
order (throttled) in KV ``scan_pool_stats`` under ``contract.pool_order_key``: the first
``MAX_LISTED`` task ids in the order they would start if slots freed one by one, each with its
client, class and arrival sequence, plus each client's fair-queueing state. The gateway reads a
waiting task's position there, and estimates a new submission's (not yet seen by the
dispatcher) with ``place``, which replays the policy's choice (``routing.plan`` rule (e)) over
that snapshot without listing the queue.

Approximations: a targeted request is ordered as if its scanner were free; requests a scan
window holds are listed after the startable ones (``startable`` counts those); a newcomer from
a client whose only waiting requests a window holds does not move the newcomers' virtual-time
floor as the policy would; and the snapshot is up to a throttle period old.
"""

from __future__ import annotations

import heapq
from datetime import datetime

import msgspec

from scanfleet.common.messages import PRIORITIES, Priority

MAX_LISTED = 2000
# A snapshot older than this is ignored (its dispatcher stopped): positions fall back to the listing.
STALE_AFTER_S = 15.0
# Class of a request already holding a slot (a crash between reserving and acking): it goes first.
RESERVED_CLASS = -1


class ClientState(msgspec.Struct, kw_only=True, array_like=True):
    weight: float  # 0 when the client has no startable request: its newcomer's weight applies
    vtime: float  # start-time fair queueing: the client's virtual time before the listed order
    running: int  # slots of the pool it holds


class QueueOrder(msgspec.Struct, kw_only=True):
    pool: str
    at: datetime
    depth: int
    startable: int
    tasks: list[str]
    # Per listed task: its client (index into ``client_names``), effective class, sequence.
    client_of: list[int]
    classes: list[int]
    seqs: list[int]
    client_names: list[str]
    clients: list[ClientState]
    # Virtual time a client not waiting starts at (the least served waiting client's last start tag).
    floor: float = 0.0


def encode(order: QueueOrder) -> bytes:
    return msgspec.json.encode(order)


def decode(data: bytes) -> QueueOrder:
    return msgspec.json.decode(data, type=QueueOrder)


def position_of(order: QueueOrder, task_id: str) -> int | None:
    """1-based index of a listed task, or None when it is not listed."""
    try:
        return order.tasks.index(task_id) + 1
    except ValueError:
        return None


def place(order: QueueOrder, client: str, priority: Priority, weight: float = 1.0) -> int:
    """The 1-based position a request just submitted by ``client`` would take: the startable
    requests the policy serves before it (better class first; within a class the client with
    the least virtual time, then the fewest slots held for its weight, then the oldest), + 1."""
    cls = PRIORITIES.index(priority)
    names = {name: i for i, name in enumerate(order.client_names)}
    me = names.get(client, len(order.client_names))
    queues: dict[int, list[tuple[int, int]]] = {}
    reserved = 0
    for i in range(min(order.startable, len(order.tasks))):
        if order.classes[i] == RESERVED_CLASS:
            reserved += 1  # back to its slot's scanner first, outside the fair queue
        else:
            queues.setdefault(order.client_of[i], []).append((order.classes[i], order.seqs[i]))
    newcomer = (cls, max(order.seqs, default=0) + 1)
    mine = queues.setdefault(me, [])
    at = next((k for k, item in enumerate(mine) if item[0] > cls), len(mine))
    mine.insert(at, newcomer)
    state = {i: order.clients[i] for i in queues if i < len(order.clients)}
    vtime = {i: (state[i].vtime if i in state else order.floor) for i in queues}
    share = {i: float(state[i].running if i in state else 0) for i in queues}
    # A client with no startable request takes the weight its new request carries.
    weights = {i: max((state[i].weight if i in state else 0.0) or weight, 1e-9) for i in queues}
    heads = {i: 0 for i in queues}

    def rank(i: int) -> tuple[int, float, float, int, int]:
        item = queues[i][heads[i]]
        return (item[0], vtime[i], share[i] / weights[i], item[1], i)

    heap = [rank(i) for i in queues]
    heapq.heapify(heap)
    served = reserved
    while heap:
        i = heapq.heappop(heap)[-1]
        if queues[i][heads[i]] == newcomer:
            return served + 1
        served += 1
        heads[i] += 1
        vtime[i] += 1.0 / weights[i]
        share[i] += 1.0
        if heads[i] < len(queues[i]):
            heapq.heappush(heap, rank(i))
    return served + 1
