"""Pure parts of scan history: the diff between runs, schedule occurrences, rollover hosts, Nessus hygiene."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanfleet.agent.hygiene import due as hygiene_due
from scanfleet.common.messages import AuthVerdict, ScanType
from scanfleet.common.rollover import split_hosts, target_hosts
from scanfleet.common.scan_diff import Key, RunView, Seen, counts, diff
from scanfleet.common.schedule_times import ON_TIME, InvalidSchedule, Missed, Recurrence, due
from scanfleet.common.tasks import TaskRecord, TaskState

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
VERDICTS: list[AuthVerdict] = ["success", "failed", "partial"]
keys = st.builds(Key, st.sampled_from(HOSTS), st.integers(10000, 10005), st.sampled_from([0, 22, 443]))
findings = st.dictionaries(keys, st.builds(Seen, st.integers(0, 4)), max_size=30)
host_maps = st.dictionaries(st.sampled_from(HOSTS), st.sampled_from(VERDICTS), min_size=1)


@given(findings, findings, host_maps, host_maps, st.booleans())
def test_diff_is_set_algebra_on_comparable_hosts_and_never_fixes_a_failed_login(
    before: dict[Key, Seen], after: dict[Key, Seen], base_hosts: dict[str, AuthVerdict],
    run_hosts: dict[str, AuthVerdict], authenticated: bool,
) -> None:  # fmt: skip
    scan_type: ScanType = "authenticated" if authenticated else "untrusted"
    base = RunView(scan_type, {k: v for k, v in before.items() if k.host in base_hosts}, base_hosts)
    run = RunView(scan_type, {k: v for k, v in after.items() if k.host in run_hosts}, run_hosts)
    entries = diff(base, run)
    assert len(entries) == len({*base.findings, *run.findings})
    assert sum(sum(c.values()) for c in counts(entries).values()) == len(entries)
    for e in entries:
        host = e.key.host
        comparable = host in base_hosts and host in run_hosts
        if authenticated:
            comparable = comparable and base_hosts.get(host) == "success" and run_hosts.get(host) == "success"
        if not comparable:
            assert e.change == "not_comparable" and e.why is not None
            continue
        expected = {(True, False): "fixed", (False, True): "new", (True, True): "still_open"}
        assert e.change == expected[(e.key in base.findings, e.key in run.findings)]
    assert [e.severity for e in entries] == sorted((e.severity for e in entries), reverse=True)


def test_a_finding_gone_where_the_login_failed_is_not_comparable() -> None:
    key = Key("10.0.0.1", 10001, 22)
    base = RunView("authenticated", {key: Seen(4)}, {"10.0.0.1": "success"})
    run = RunView("authenticated", {}, {"10.0.0.1": "failed"})
    [entry] = diff(base, run)
    assert (entry.change, entry.why) == ("not_comparable", "login_failed_in_run")


def test_a_weekly_cron_stays_at_local_time_across_daylight_saving() -> None:
    rec = Recurrence.parse(
        cron="0 3 * * 1", rrule=None, timezone="Europe/Paris", start=datetime(2026, 3, 1, tzinfo=UTC)
    )
    found = list(itertools.islice(rec.after(datetime(2026, 3, 20, tzinfo=UTC)), 3))
    paris = ZoneInfo("Europe/Paris")
    assert [(o.astimezone(paris).weekday(), o.astimezone(paris).hour) for o in found] == [(0, 3)] * 3
    assert found[1] - found[0] == timedelta(days=7, hours=-1)  # the night the clocks go forward


def test_an_rrule_and_its_cron_twin_agree() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    cron = Recurrence.parse(cron="30 6 * * 2", rrule=None, timezone="America/New_York", start=start)
    rule = Recurrence.parse(
        cron=None,
        rrule="FREQ=WEEKLY;BYDAY=TU;BYHOUR=6;BYMINUTE=30;BYSECOND=0",
        timezone="America/New_York",
        start=start,
    )
    moment = datetime(2026, 2, 1, tzinfo=UTC)
    assert list(itertools.islice(cron.after(moment), 10)) == list(itertools.islice(rule.after(moment), 10))


@pytest.mark.parametrize(
    ("cron", "rrule", "zone"),
    [(None, None, "UTC"), ("* * *", None, "UTC"), (None, "FREQ=SOMETIMES", "UTC"), ("0 3 * * 1", None, "Mars/Base")],
)
def test_invalid_schedules_are_refused(cron: str | None, rrule: str | None, zone: str) -> None:
    with pytest.raises(InvalidSchedule):
        Recurrence.parse(cron=cron, rrule=rrule, timezone=zone, start=datetime(2026, 1, 1, tzinfo=UTC))


@settings(deadline=None)
@given(st.integers(0, 500), st.integers(1, 120), st.sampled_from(["run_once", "skip"]))
def test_missed_occurrences_collapse_into_at_most_one(lag: int, interval: int, missed: Missed) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rec = Recurrence.parse(cron=None, rrule=f"FREQ=SECONDLY;INTERVAL={interval}", timezone="UTC", start=start)
    now = start + timedelta(seconds=lag)
    fire, cursor = due(rec, start, now, missed)
    occurred = [o for o in itertools.islice(rec.after(start), lag + 1) if o <= now]
    assert cursor == (occurred[-1] if occurred else None)
    if not occurred or (missed == "skip" and now - occurred[-1] > ON_TIME):
        assert fire is None
    else:
        assert fire == occurred[-1]
    if cursor is not None:
        assert due(rec, cursor, now, missed) == (None, None)  # dealt with: never fired twice


@given(st.lists(st.integers(1, 40), min_size=1, max_size=10, unique=True), st.data())
def test_rollover_names_exactly_the_hosts_not_finished(lasts: list[int], data: st.DataObject) -> None:
    targets = [f"10.1.{i}.1-{last}" if last > 1 else f"10.1.{i}.1" for i, last in enumerate(lasts)]
    hosts = target_hosts(targets)
    assert len(hosts) == sum(lasts) == len(set(hosts))
    listed = data.draw(st.dictionaries(st.sampled_from(hosts), st.integers(0, 100)))
    done, left = split_hosts(targets, listed)
    assert set(done) | set(left) == set(hosts) and not set(done) & set(left)
    assert set(done) == {h for h, pct in listed.items() if pct >= 100}


def _record(state: TaskState, finished: datetime | None) -> TaskRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return TaskRecord(
        task_id="t", trace_id="x", pool="p", targets=["10.0.0.1"], name="n", created_at=now, updated_at=now,
        state=state, finished_at=finished,
    )  # fmt: skip


def test_nessus_scans_go_when_their_export_is_stored_or_their_task_is_gone_never_while_it_runs() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    day = timedelta(days=1)
    assert hygiene_due(None, 30 * day, now)
    assert not hygiene_due(_record(TaskState.RUNNING, None), timedelta(0), now)
    assert hygiene_due(_record(TaskState.VALIDATING, None), timedelta(0), now)
    assert not hygiene_due(_record(TaskState.VALIDATING, None), day, now)
    assert hygiene_due(_record(TaskState.COMPLETED, now - 2 * day), day, now)
    assert not hygiene_due(_record(TaskState.CANCELLED, now - day / 2), day, now)
