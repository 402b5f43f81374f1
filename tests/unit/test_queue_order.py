"""Property tests: the waiting order the dispatcher publishes is the order ``routing.plan``
starts requests in, and ``queue_order.place`` puts a newcomer where ``plan`` would."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from scanfleet.common import queue_order
from scanfleet.common.messages import PRIORITIES, Priority
from scanfleet.dispatcher.routing import Candidate, Waiting, order, plan, snapshot

AGING = 600.0
NOW = 2000.0
CLIENTS = ("a", "b", "c", "d")
AT = datetime(2026, 6, 1, tzinfo=UTC)


@st.composite
def queues(draw: st.DrawFn) -> tuple[list[Waiting], dict[str, int], dict[str, float]]:
    weights = {c: draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])) for c in CLIENTS}
    running = {c: draw(st.integers(0, 4)) for c in CLIENTS if draw(st.booleans())}
    served = {c: draw(st.sampled_from([0.0, 1.0, 2.5, 4.0])) for c in CLIENTS if draw(st.booleans())}
    waiting = []
    for seq in range(draw(st.integers(0, 40))):
        client = draw(st.sampled_from(CLIENTS))
        waiting.append(
            Waiting(
                task_id=f"t{seq}",
                seq=seq,
                client=client,
                priority=draw(st.sampled_from(PRIORITIES)),
                weight=weights[client],
                submitted=NOW - draw(st.sampled_from([0.0, 100.0, 700.0, 1300.0])),
                not_before=draw(st.sampled_from([0.0, 0.0, 0.0, NOW + 50.0])),
            )
        )
    # The dispatcher keeps virtual times only for clients still waiting (and, exactly here, startable).
    startable = {w.client for w in waiting if w.not_before <= NOW}
    return waiting, running, {c: v for c, v in served.items() if c in startable}


def started(waiting: list[Waiting], running: dict[str, int], served: dict[str, float], free: int) -> list[str]:
    """The tasks ``plan`` starts, in order, when ``free`` slots are free."""
    scanner = Candidate("s0", limit=free, active=0)
    return [d.task_id for d in plan(waiting, [scanner], running=running, served=served, now=NOW, aging=AGING)]


@settings(max_examples=300, deadline=None)
@given(queues(), st.integers(1, 50))
def test_the_published_order_is_the_order_plan_starts_requests_in(snapshot_: tuple, free: int) -> None:  # type: ignore[type-arg]
    waiting, running, served = snapshot_
    ordered = order(waiting, running=running, served=served, now=NOW, aging=AGING)
    listed = [w.task_id for w, _ in ordered.entries]
    assert sorted(listed) == sorted(w.task_id for w in waiting)
    assert listed[: min(free, ordered.startable)] == started(waiting, running, served, free)
    held = [w.task_id for w, _ in ordered.entries[ordered.startable :]]
    assert held == [w.task_id for w in sorted(waiting, key=lambda w: (w.not_before, w.seq)) if w.not_before > NOW]
    limited = order(waiting, running=running, served=served, now=NOW, aging=AGING, limit=free)
    assert [w.task_id for w, _ in limited.entries] == listed[:free]


@settings(max_examples=400, deadline=None)
@given(queues(), st.sampled_from((*CLIENTS, "newcomer")), st.sampled_from(PRIORITIES), st.sampled_from([0.5, 1.0, 3.0]))
def test_a_newcomer_is_placed_where_plan_would_start_it(
    snapshot_: tuple,  # type: ignore[type-arg]
    client: str,
    priority: Priority,
    weight: float,
) -> None:
    waiting, running, served = snapshot_
    ordered = order(waiting, running=running, served=served, now=NOW, aging=AGING)
    published = queue_order.decode(
        queue_order.encode(snapshot("p", ordered, depth=len(waiting), at=AT, running=running, served=served))
    )
    known = {w.client: w.weight for w in waiting}  # a client's weight is its scope's, on every request
    newcomer = Waiting(
        task_id="new",
        seq=len(waiting),
        client=client,
        priority=priority,
        weight=known.get(client, weight),
        submitted=NOW,
    )
    expected = started([*waiting, newcomer], running, served, len(waiting) + 1).index("new") + 1
    assert queue_order.place(published, client, priority, newcomer.weight) == expected


def test_a_listed_task_s_position_is_its_index_and_an_unlisted_one_has_none() -> None:
    waiting = [
        Waiting(task_id="a1", seq=0, client="a", submitted=NOW),
        Waiting(task_id="a2", seq=1, client="a", submitted=NOW),
        Waiting(task_id="b1", seq=2, client="b", submitted=NOW),
    ]
    published = snapshot("p", order(waiting, now=NOW), depth=3, at=AT)
    assert [queue_order.position_of(published, t) for t in ("a1", "b1", "a2", "zz")] == [1, 2, 3, None]
    assert queue_order.place(published, "c", "normal") == 3, "a third client takes its turn before a's second"
    assert queue_order.place(published, "a", "high") == 1
