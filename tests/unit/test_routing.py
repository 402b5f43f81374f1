"""Unit tests for the dispatcher's pure routing function ``plan``."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from scanfleet.dispatcher.routing import Candidate, Decision, Waiting, plan


def untargeted(task_id: str, seq: int) -> Waiting:
    return Waiting(task_id=task_id, seq=seq)


def assigned(decisions: list[Decision]) -> dict[str, str]:
    return {d.task_id: d.instance for d in decisions}


# Examples: rule (a) -----------------------------------------------------------------------


def test_a_targeted_request_goes_to_its_free_scanner() -> None:
    scanners = [Candidate("a", limit=2, active=0), Candidate("b", limit=2, active=1)]
    # "a" is less utilized, but the request names "b".
    decisions = plan([Waiting("t1", 1, instance="b")], scanners)
    assert decisions == [Decision("t1", "b")]


def test_a_targeted_requests_fill_their_scanner_up_to_the_limit() -> None:
    scanners = [Candidate("a", limit=5, active=0), Candidate("b", limit=2, active=0)]
    waiting = [Waiting(f"t{i}", i, instance="b") for i in range(1, 5)]
    decisions = plan(waiting, scanners)
    assert decisions == [Decision("t1", "b"), Decision("t2", "b")]


# Rule (b) ---------------------------------------------------------------------------------


def test_b_targeted_request_for_busy_scanner_waits() -> None:
    scanners = [Candidate("a", limit=2, active=0), Candidate("b", limit=1, active=1)]
    assert plan([Waiting("t1", 1, instance="b")], scanners) == []


def test_b_busy_target_does_not_block_later_untargeted_requests() -> None:
    scanners = [Candidate("a", limit=1, active=0), Candidate("b", limit=1, active=1)]
    waiting = [Waiting("t1", 1, instance="b"), untargeted("t2", 2)]
    assert plan(waiting, scanners) == [Decision("t2", "a")]


def test_b_busy_target_does_not_block_later_targeted_requests_for_others() -> None:
    scanners = [Candidate("a", limit=1, active=0), Candidate("b", limit=1, active=1)]
    waiting = [Waiting("t1", 1, instance="b"), Waiting("t2", 2, instance="a")]
    assert plan(waiting, scanners) == [Decision("t2", "a")]


def test_b_targeted_request_filled_by_an_earlier_one_in_the_same_plan_waits() -> None:
    scanners = [Candidate("a", limit=1, active=0), Candidate("b", limit=3, active=0)]
    waiting = [untargeted("t1", 1), Waiting("t2", 2, instance="a"), untargeted("t3", 3)]
    # t1 takes "a" (name tie-break: both at 0 utilization, same last_assigned_at).
    assert plan(waiting, scanners) == [Decision("t1", "a"), Decision("t3", "b")]


# Rule (c) ---------------------------------------------------------------------------------


def test_c_goes_to_least_utilized_scanner() -> None:
    scanners = [
        Candidate("a", limit=2, active=1),  # 0.5
        Candidate("b", limit=4, active=1),  # 0.25
        Candidate("c", limit=3, active=2),  # 0.67
    ]
    assert plan([untargeted("t1", 1)], scanners) == [Decision("t1", "b")]


def test_c_utilization_is_relative_to_the_limit_not_absolute() -> None:
    # "a" has fewer active scans, but "b" is proportionally less loaded.
    scanners = [Candidate("a", limit=2, active=1), Candidate("b", limit=10, active=3)]
    assert plan([untargeted("t1", 1)], scanners) == [Decision("t1", "b")]


def test_c_tie_broken_by_least_recently_assigned() -> None:
    scanners = [
        Candidate("a", limit=2, active=0, last_assigned_at=50.0),
        Candidate("b", limit=2, active=0, last_assigned_at=10.0),
        Candidate("c", limit=2, active=0, last_assigned_at=30.0),
    ]
    assert plan([untargeted("t1", 1)], scanners) == [Decision("t1", "b")]


def test_c_tie_broken_by_name_when_equally_recent() -> None:
    scanners = [
        Candidate("zeta", limit=2, active=1, last_assigned_at=5.0),
        Candidate("alpha", limit=2, active=1, last_assigned_at=5.0),
        Candidate("mid", limit=2, active=1, last_assigned_at=5.0),
    ]
    assert plan([untargeted("t1", 1)], scanners) == [Decision("t1", "alpha")]


def test_c_assignment_in_the_plan_counts_as_most_recent() -> None:
    scanners = [
        Candidate("a", limit=4, active=0, last_assigned_at=5.0),
        Candidate("b", limit=4, active=0, last_assigned_at=3.0),
    ]
    waiting = [untargeted(f"t{i}", i) for i in range(1, 5)]
    # b (older), then a (less utilized), then both at 1/4: b was assigned before a in
    # this plan, so b is the least recently assigned; then a.
    assert [d.instance for d in plan(waiting, scanners)] == ["b", "a", "b", "a"]


def test_c_spreads_over_an_idle_fleet_then_fills() -> None:
    scanners = [Candidate("a", limit=2, active=0), Candidate("b", limit=2, active=0)]
    waiting = [untargeted(f"t{i}", i) for i in range(1, 6)]
    decisions = plan(waiting, scanners)
    assert decisions == [
        Decision("t1", "a"),
        Decision("t2", "b"),
        Decision("t3", "a"),
        Decision("t4", "b"),
    ]


def test_c_full_scanner_is_skipped_even_if_least_recent() -> None:
    scanners = [
        Candidate("a", limit=1, active=1, last_assigned_at=0.0),
        Candidate("b", limit=5, active=4, last_assigned_at=99.0),
    ]
    assert plan([untargeted("t1", 1)], scanners) == [Decision("t1", "b")]


# Rule (d) ---------------------------------------------------------------------------------


def test_d_nothing_free_nothing_assigned() -> None:
    scanners = [Candidate("a", limit=1, active=1), Candidate("b", limit=2, active=2)]
    waiting = [untargeted("t1", 1), Waiting("t2", 2, instance="a"), untargeted("t3", 3)]
    assert plan(waiting, scanners) == []


def test_d_requests_are_served_in_seq_order_not_list_order() -> None:
    scanners = [Candidate("a", limit=1, active=0)]
    waiting = [untargeted("late", 9), untargeted("early", 2), untargeted("middle", 5)]
    assert plan(waiting, scanners) == [Decision("early", "a")]


def test_d_empty_inputs() -> None:
    assert plan([], []) == []
    assert plan([], [Candidate("a", limit=1, active=0)]) == []
    assert plan([untargeted("t1", 1)], []) == []


# held_by ----------------------------------------------------------------------------------


def test_held_by_goes_back_to_its_scanner_as_already_reserved() -> None:
    scanners = [Candidate("a", limit=4, active=0), Candidate("b", limit=1, active=1)]
    decisions = plan([Waiting("t1", 1, held_by="b")], scanners)
    assert decisions == [Decision("t1", "b", already_reserved=True)]


def test_held_by_wins_over_a_named_instance() -> None:
    scanners = [Candidate("a", limit=4, active=0), Candidate("b", limit=4, active=1)]
    decisions = plan([Waiting("t1", 1, instance="a", held_by="b")], scanners)
    assert decisions == [Decision("t1", "b", already_reserved=True)]


def test_held_by_even_when_the_scanner_is_unusable() -> None:
    scanners = [Candidate("a", limit=2, active=1, usable=False)]
    decisions = plan([Waiting("t1", 1, held_by="a")], scanners)
    assert decisions == [Decision("t1", "a", already_reserved=True)]


def test_held_by_does_not_consume_capacity() -> None:
    # The held slot is already counted in "active": one slot stays free.
    scanners = [Candidate("a", limit=2, active=1)]
    waiting = [Waiting("t1", 1, held_by="a"), untargeted("t2", 2)]
    assert plan(waiting, scanners) == [
        Decision("t1", "a", already_reserved=True),
        Decision("t2", "a"),
    ]


def test_held_by_unknown_scanner_gets_nothing() -> None:
    scanners = [Candidate("a", limit=2, active=0)]
    waiting = [Waiting("t1", 1, held_by="gone"), untargeted("t2", 2)]
    assert plan(waiting, scanners) == [Decision("t2", "a")]


# Unusable and unknown ---------------------------------------------------------------------


def test_unusable_scanner_gets_nothing() -> None:
    scanners = [Candidate("a", limit=5, active=0, usable=False), Candidate("b", limit=2, active=1)]
    waiting = [untargeted("t1", 1), untargeted("t2", 2), Waiting("t3", 3, instance="a")]
    assert plan(waiting, scanners) == [Decision("t1", "b")]


def test_all_unusable_nothing_assigned() -> None:
    scanners = [Candidate("a", limit=5, active=0, usable=False)]
    assert plan([untargeted("t1", 1), Waiting("t2", 2, instance="a")], scanners) == []


def test_unknown_instance_is_never_assigned_and_blocks_nobody() -> None:
    scanners = [Candidate("a", limit=2, active=0)]
    waiting = [Waiting("t1", 1, instance="ghost"), untargeted("t2", 2)]
    assert plan(waiting, scanners) == [Decision("t2", "a")]


# Properties -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    scanners: list[Candidate]
    waiting: list[Waiting]


@st.composite
def candidates(draw: st.DrawFn) -> list[Candidate]:
    n = draw(st.integers(1, 8))
    out = []
    for i in range(n):
        limit = draw(st.integers(1, 5))
        out.append(
            Candidate(
                instance=f"s{i}",
                limit=limit,
                active=draw(st.integers(0, limit)),
                usable=draw(st.booleans()),
                last_assigned_at=float(draw(st.integers(0, 6))),
            )
        )
    return out


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    scanners = draw(candidates())
    names = [c.instance for c in scanners]
    seqs = draw(st.lists(st.integers(1, 10_000), min_size=0, max_size=30, unique=True))
    known = st.sampled_from(names)
    unknown = st.sampled_from(["ghost", "gone"])
    waiting = []
    for i, seq in enumerate(seqs):
        kind = draw(st.sampled_from(["untargeted"] * 4 + ["known"] * 2 + ["unknown", "held", "held_unknown"]))
        instance = held = None
        if kind == "known":
            instance = draw(known)
        elif kind == "unknown":
            instance = draw(unknown)
        elif kind == "held":
            held = draw(known)
            instance = draw(st.none() | known)
        elif kind == "held_unknown":
            held = draw(unknown)
        waiting.append(Waiting(task_id=f"task-{i}", seq=seq, instance=instance, held_by=held))
    return Snapshot(scanners, waiting)


def is_untargeted(w: Waiting) -> bool:
    return w.instance is None and w.held_by is None


def load_after(snapshot: Snapshot, decisions: list[Decision]) -> dict[str, int]:
    load = {c.instance: c.active for c in snapshot.scanners}
    for d in decisions:
        if not d.already_reserved:
            load[d.instance] += 1
    return load


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_property_no_scanner_exceeds_its_limit(snapshot: Snapshot) -> None:
    decisions = plan(snapshot.waiting, snapshot.scanners)
    load = load_after(snapshot, decisions)
    for c in snapshot.scanners:
        assert load[c.instance] <= c.limit, c


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_property_work_conservation(snapshot: Snapshot) -> None:
    decisions = plan(snapshot.waiting, snapshot.scanners)
    got = assigned(decisions)
    starving = [w for w in snapshot.waiting if is_untargeted(w) and w.task_id not in got]
    if starving:
        load = load_after(snapshot, decisions)
        idle = [c.instance for c in snapshot.scanners if c.usable and load[c.instance] < c.limit]
        assert idle == [], (starving, idle)


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_property_targeted_request_waits_only_when_its_scanner_cannot_take_it(snapshot: Snapshot) -> None:
    decisions = plan(snapshot.waiting, snapshot.scanners)
    got = assigned(decisions)
    load = load_after(snapshot, decisions)
    by_name = {c.instance: c for c in snapshot.scanners}
    for w in snapshot.waiting:
        if w.held_by is None and w.instance is not None and w.task_id not in got:
            c = by_name.get(w.instance)
            assert c is None or not c.usable or load[c.instance] >= c.limit, w


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_property_untargeted_served_in_seq_order(snapshot: Snapshot) -> None:
    got = assigned(plan(snapshot.waiting, snapshot.scanners))
    order = sorted((w for w in snapshot.waiting if is_untargeted(w)), key=lambda w: w.seq)
    served = [w.task_id in got for w in order]
    # Once one got nothing, none after it got something: served is True* False*.
    assert served == sorted(served, reverse=True), served


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_property_decisions_are_well_formed(snapshot: Snapshot) -> None:
    decisions = plan(snapshot.waiting, snapshot.scanners)
    by_task = {w.task_id: w for w in snapshot.waiting}
    names = {c.instance for c in snapshot.scanners}
    ids = [d.task_id for d in decisions]
    assert len(ids) == len(set(ids))
    for d in decisions:
        assert d.task_id in by_task
        assert d.instance in names
        w = by_task[d.task_id]
        if w.held_by is not None:
            assert d.instance == w.held_by
            assert d.already_reserved
        else:
            assert not d.already_reserved
            if w.instance is not None:
                assert d.instance == w.instance
    # Every request holding a slot on a known scanner goes back to it.
    for w in snapshot.waiting:
        if w.held_by in names:
            assert w.task_id in ids


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_property_unusable_scanners_only_get_already_reserved(snapshot: Snapshot) -> None:
    decisions = plan(snapshot.waiting, snapshot.scanners)
    usable = {c.instance: c.usable for c in snapshot.scanners}
    for d in decisions:
        assert usable[d.instance] or d.already_reserved, d


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_property_untargeted_goes_to_least_utilized(snapshot: Snapshot) -> None:
    decisions = plan(snapshot.waiting, snapshot.scanners)
    by_task = {w.task_id: w for w in snapshot.waiting}
    by_name = {c.instance: c for c in snapshot.scanners}
    load = {c.instance: c.active for c in snapshot.scanners}
    # Replay in submission order, so "earlier decisions of the same plan" are counted.
    for d in sorted(decisions, key=lambda d: by_task[d.task_id].seq):
        if d.already_reserved:
            continue
        if is_untargeted(by_task[d.task_id]):
            free = [c for c in snapshot.scanners if c.usable and load[c.instance] < c.limit]
            best = min(Fraction(load[c.instance], c.limit) for c in free)
            chosen = by_name[d.instance]
            assert Fraction(load[d.instance], chosen.limit) == best, (d, load)
        load[d.instance] += 1
