"""Property tests of the scheduling policy as pure functions: fair share, priority, aging,
windows, routing by network and targeting (``routing.plan``, ``windows``, ``route_by_network``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from scanfleet.common.messages import PRIORITIES
from scanfleet.common.scope import Interval, interval_of, merge, parse_ranges
from scanfleet.common.targets import parse_target
from scanfleet.common.windows import ScanWindows, compile_blackout
from scanfleet.dispatcher.routing import Candidate, Waiting, effective_class, plan, plan_shares
from scanfleet.gateway.core import route_by_network

AGING = 600.0
CLIENTS = ("a", "b", "c", "d")


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[list[Waiting], list[Candidate], dict[str, int], dict[str, float]]:
    n_scanners = draw(st.integers(1, 4))
    scanners = []
    for i in range(n_scanners):
        limit = draw(st.integers(1, 4))
        scanners.append(Candidate(f"s{i}", limit=limit, active=draw(st.integers(0, limit)), usable=draw(st.booleans())))
    weights = {c: draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])) for c in CLIENTS}
    running = {c: draw(st.integers(0, 6)) for c in CLIENTS}
    waiting = []
    for seq in range(draw(st.integers(0, 30))):
        client = draw(st.sampled_from(CLIENTS))
        waiting.append(
            Waiting(
                task_id=f"t{seq}",
                seq=seq,
                instance=draw(st.one_of(st.none(), st.sampled_from([f"s{i}" for i in range(n_scanners + 1)]))),
                client=client,
                priority=draw(st.sampled_from(PRIORITIES)),
                weight=weights[client],
                submitted=10.0 - draw(st.sampled_from([0.0, 100.0, 700.0, 1300.0])),
                not_before=draw(st.sampled_from([0.0, 0.0, 0.0, 50.0])),
            )
        )
    return waiting, scanners, running, weights


def placeable(w: Waiting, scanners: dict[str, Candidate], active: dict[str, int]) -> bool:
    if w.not_before > 10.0:
        return False
    if w.instance is None:
        return True
    c = scanners.get(w.instance)
    return c is not None and c.usable and active[w.instance] < c.limit


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_capacity_targeting_and_windows_are_respected(snapshot: tuple) -> None:  # type: ignore[type-arg]
    waiting, scanners, running, _ = snapshot
    decisions = plan(waiting, scanners, running=running, now=10.0, aging=AGING)
    by_task = {w.task_id: w for w in waiting}
    assert len({d.task_id for d in decisions}) == len(decisions)
    load = {c.instance: c.active for c in scanners}
    for d in decisions:
        w = by_task[d.task_id]
        assert w.not_before <= 10.0, "a request held by a scan window was started"
        assert w.instance in (None, d.instance), "a targeted request went elsewhere"
        load[d.instance] += 1
    for c in scanners:
        if load[c.instance] > c.active:
            assert c.usable and load[c.instance] <= c.limit
    # Work conservation: a free slot stays free only when nothing that could use it waits.
    assigned = {d.task_id for d in decisions}
    by_name = {c.instance: c for c in scanners}
    if any(c.usable and load[c.instance] < c.limit for c in scanners):
        for w in waiting:
            if w.task_id not in assigned and w.instance is None:
                assert w.not_before > 10.0
            if w.task_id not in assigned and w.instance is not None:
                assert not placeable(w, by_name, load)


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_priority_first_then_weighted_fair_share_then_fifo(snapshot: tuple) -> None:  # type: ignore[type-arg]
    waiting, scanners, running, weights = snapshot
    # Untargeted requests only: every one of them competes for the same slots.
    waiting = [Waiting(**{**w.__dict__, "instance": None}) for w in waiting]
    # Only clients in the best class were served: a request of a worse class never went first.
    decisions = plan(waiting, scanners, running=running, now=10.0, aging=AGING)
    assigned = [next(w for w in waiting if w.task_id == d.task_id) for d in decisions]
    left = [w for w in waiting if w.task_id not in {d.task_id for d in decisions} and w.not_before <= 10.0]
    if not left:
        return
    share = {c: float(running[c]) for c in CLIENTS}
    for w in assigned:
        cls = effective_class(w, AGING, 10.0)
        for other in left:
            other_cls = effective_class(other, AGING, 10.0)
            # priority: nothing worse went while something better waits
            assert cls <= other_cls
        share[w.client] += 1
    for w in assigned:
        for other in left:
            if effective_class(other, AGING, 10.0) != effective_class(w, AGING, 10.0):
                continue
            if other.client == w.client:
                # a client's own requests of one class: first in, first out
                assert w.seq < other.seq
    # fair share (start-time fair queueing): within the best waiting class, a client was served
    # again only while its virtual time (starts / weight) was no later than that of every client
    # left waiting.
    best = min(effective_class(w, AGING, 10.0) for w in left)
    count = dict.fromkeys(CLIENTS, 0)
    for w in assigned:
        count[w.client] += 1
    for w in assigned:
        if effective_class(w, AGING, 10.0) != best:
            continue
        before_last = (count[w.client] - 1) / weights[w.client]
        for other in left:
            if effective_class(other, AGING, 10.0) == best:
                assert before_last <= count[other.client] / weights[other.client] + 1e-9


@given(st.sampled_from(PRIORITIES), st.floats(0, 10_000))
def test_aging_lifts_one_class_per_period_and_never_past_high(priority: str, waited: float) -> None:
    w = Waiting("t", 1, priority=priority, submitted=-waited)  # type: ignore[arg-type]
    cls = effective_class(w, AGING, 0.0)
    assert cls == max(0, PRIORITIES.index(w.priority) - int(waited // AGING))
    assert 0 <= cls <= PRIORITIES.index(w.priority)


def test_low_priority_that_waited_long_enough_goes_before_fresh_high_priority_work() -> None:
    old_low = Waiting("old", 1, client="a", priority="low", submitted=0.0)
    new_high = Waiting("new", 2, client="b", priority="high", submitted=2 * AGING)
    decisions = plan([new_high, old_low], [Candidate("s", limit=1, active=0)], now=2 * AGING, aging=AGING)
    assert [d.task_id for d in decisions] == ["old"]


def test_a_flood_from_one_client_waits_behind_the_next_free_slot_for_another() -> None:
    flood = [Waiting(f"f{i}", i, client="flood") for i in range(1000)]
    other = Waiting("small", 1001, client="small")
    decisions = plan([*flood, other], [Candidate("s", limit=10, active=9)], running={"flood": 9})
    assert [d.task_id for d in decisions] == ["small"]


def test_high_priority_behind_a_full_queue_takes_the_next_free_slot() -> None:
    queue = [Waiting(f"q{i}", i, client=f"c{i % 3}") for i in range(50)]
    urgent = Waiting("urgent", 99, client="c0", priority="high")
    decisions = plan([*queue, urgent], [Candidate("s", limit=4, active=3)], running={"c0": 3})
    assert [d.task_id for d in decisions] == ["urgent"]


def test_a_targeted_request_for_a_busy_scanner_blocks_nobody() -> None:
    scanners = [Candidate("busy", limit=1, active=1), Candidate("free", limit=1, active=0)]
    waiting = [Waiting("t1", 1, instance="busy", priority="high"), Waiting("t2", 2)]
    assert [d.task_id for d in plan(waiting, scanners)] == ["t2"]


def test_a_newcomer_alternates_with_a_flood_even_on_a_single_slot() -> None:
    """Virtual time, not slots held: with one slot the flood holds none when it frees, yet the
    newcomer and the flood take turns instead of the flood winning every tie by age."""
    flood = [Waiting(f"f{i}", i, client="flood") for i in range(10)]
    mine = [Waiting(f"m{i}", 100 + i, client="mine") for i in range(3)]
    waiting, served, order = [*flood, *mine], {"flood": 1.0}, []
    for _ in range(6):
        decisions, served = plan_shares(waiting, [Candidate("s", limit=1, active=0)], served=served)
        order += [d.task_id for d in decisions]
        waiting = [w for w in waiting if w.task_id not in order]
        served = {c: v for c, v in served.items() if any(w.client == c for w in waiting)}
    assert order == ["m0", "f0", "m1", "f1", "m2", "f2"]


def test_weights_split_slots_in_proportion() -> None:
    waiting = [Waiting(f"a{i}", i, client="a", weight=3.0) for i in range(20)]
    waiting += [Waiting(f"b{i}", 100 + i, client="b", weight=1.0) for i in range(20)]
    decisions = plan(waiting, [Candidate("s", limit=8, active=0)])
    assert sum(d.task_id.startswith("a") for d in decisions) == 6
    assert sum(d.task_id.startswith("b") for d in decisions) == 2


# Windows ----------------------------------------------------------------------------------

DAY0 = datetime(2026, 6, 1, tzinfo=UTC)


@settings(max_examples=200, deadline=None)
@given(
    hour=st.integers(0, 23),
    minute=st.sampled_from([0, 15, 30, 45]),
    duration=st.integers(1, 26 * 60),
    offset=st.integers(0, 14 * 24 * 60),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
)
def test_a_blackout_holds_exactly_while_it_is_in_force(
    hour: int, minute: int, duration: int, offset: int, zone: str
) -> None:
    blackout = compile_blackout(
        name="w", cron=f"{minute} {hour} * * 1-5", duration_minutes=duration, timezone=zone, targets=["10.1.0.0/16"]
    )
    windows = ScanWindows((blackout,))
    at = DAY0 + timedelta(minutes=offset)
    hold = windows.held("p", ["10.1.2.3"], at)
    assert windows.held("p", ["10.2.0.1"], at) is None, "a window covers only its ranges"
    # brute force: is ``at`` inside [start, start + duration) of some occurrence?
    starts = []
    first = (at - timedelta(minutes=duration + 3 * 24 * 60)).astimezone(blackout.timezone).date()
    for days in range((at.astimezone(blackout.timezone).date() - first).days + 1):
        date = first + timedelta(days=days)
        local = datetime(date.year, date.month, date.day, hour, minute, tzinfo=blackout.timezone)
        if local.weekday() < 5:
            starts.append(local)
    inside = any(s <= at < s + timedelta(minutes=duration) for s in starts)
    assert (hold is not None) == inside
    if hold is not None:
        assert hold.until > at
        assert windows.held("p", ["10.1.2.3"], hold.until) is None, "the hold ends when no window is in force"
        assert windows.held("p", ["10.1.2.3"], hold.until - timedelta(seconds=1)) is not None


def test_a_pool_window_covers_only_its_pool_and_every_target_in_it() -> None:
    windows = ScanWindows(
        (compile_blackout(name="w", cron="0 0 * * *", duration_minutes=60, timezone="UTC", pool="prod"),)
    )
    at = DAY0 + timedelta(minutes=30)
    assert windows.held("prod", ["10.0.0.1", "host.example"], at) is not None
    assert windows.held("lab", ["10.0.0.1"], at) is None


def test_next_start_is_the_next_occurrence() -> None:
    windows = ScanWindows((compile_blackout(name="w", cron="0 9 * * *", duration_minutes=60, timezone="UTC"),))
    assert windows.next_start("p", ["10.0.0.1"], DAY0) == DAY0.replace(hour=9)


# Routing by network -----------------------------------------------------------------------

NETS = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "192.168.0.0/16", "172.16.0.0/12", "10.2.0.0/16"]


@settings(max_examples=300, deadline=None)
@given(
    declared=st.dictionaries(st.sampled_from(["p0", "p1", "p2", "p3"]), st.lists(st.sampled_from(NETS), max_size=2)),
    addresses=st.lists(st.sampled_from(["10.1.2.3", "10.1.9.9", "10.2.3.4", "192.168.1.1", "172.16.0.1"]), max_size=3),
)
def test_routing_picks_the_narrowest_pool_that_reaches_every_target(
    declared: dict[str, list[str]], addresses: list[str]
) -> None:
    pools = ["p0", "p1", "p2", "p3"]
    reach = {p: merge(parse_ranges(r, what="t")) for p, r in declared.items() if r}
    targets = [interval_of(parse_target(a)) for a in addresses]
    chosen = route_by_network(targets, pools, reach, default="p0")

    def reaches(pool: str) -> bool:
        return pool not in reach or all(
            any(r.start <= t.start and t.end <= r.end for r in reach[pool]) for t in targets
        )

    def size(pool: str) -> int:
        return sum(r.end - r.start + 1 for r in reach[pool])

    if chosen is None:
        assert targets and not any(reaches(p) for p in pools)
        return
    assert reaches(chosen)
    if targets and chosen in reach:
        assert all(size(chosen) <= size(p) for p in reach if reaches(p))
    if targets and chosen not in reach:
        assert not any(p in reach and reaches(p) for p in pools), "a declared pool that reaches them wins"


def test_scans_without_address_targets_go_to_the_default_pool() -> None:
    reach: dict[str, list[Interval]] = {"p1": parse_ranges(["10.0.0.0/8"], what="t")}
    assert route_by_network([], ["p0", "p1"], reach, default="p0") == "p0"


def test_an_unreachable_target_has_no_pool() -> None:
    reach = {"p1": parse_ranges(["10.0.0.0/8"], what="t")}
    target = interval_of(parse_target("192.168.1.1"))
    assert route_by_network([target], ["p1"], reach, default="p1") is None
