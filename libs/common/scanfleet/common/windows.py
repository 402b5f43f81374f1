"""Scan windows: recurring blackouts and permanent exclusions, as pure functions of a time.

A blackout starts at each fire time of a cron expression (five fields, read in the window's
own time zone, so "09:00 on weekdays" follows daylight saving) and lasts ``duration``. While
one is in force no new scan starts on the targets it covers; a scan already running is paused
(``on_running: pause``) and resumed when it ends, or stopped (``stop``, ending the task
``timeout`` with reason ``WINDOW_STOPPED``) with its unscanned hosts recorded, which the janitor
rolls over. A window with no ``targets`` covers every target of its pool (pool
windows) or of every pool (fleet windows). Host-name targets are matched only by windows that
cover every target: their addresses are unknown until the scanner resolves them.

An exclusion is permanent: a submission touching it is refused with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from croniter import croniter

from scanfleet.common.scope import Interval, first_overlap, interval_of, parse_ranges
from scanfleet.common.targets import InvalidTarget, parse_target

OnRunning = Literal["pause", "stop"]
# The ``error_reason`` of a task a window stopped: the janitor queues its rollover.
WINDOW_STOPPED = "window_stopped"
# Chained or overlapping occurrences are followed this far before giving up (a window that
# never ends, e.g. "* * * * *" lasting two minutes, is reported as ending at the horizon).
MAX_CHAIN = 512


@dataclass(frozen=True)
class Blackout:
    name: str
    cron: str
    duration: timedelta
    timezone: ZoneInfo
    ranges: tuple[Interval, ...] = ()
    pool: str | None = None
    on_running: OnRunning = "pause"

    def covers(self, pool: str, targets: Sequence[Interval | None]) -> bool:
        """``targets`` are address intervals, None for a host name."""
        if self.pool is not None and self.pool != pool:
            return False
        if not self.ranges:
            return True
        return any(t is not None and first_overlap(t, self.ranges) is not None for t in targets)

    def ends_at(self, at: datetime) -> datetime | None:
        """When the occurrence in force at ``at`` is over (following chained ones), else None."""
        local = at.astimezone(self.timezone)
        fires = croniter(self.cron, local - self.duration)
        first: datetime = fires.get_next(datetime)
        if first > local:
            return None
        end = first + self.duration
        for _ in range(MAX_CHAIN):
            nxt: datetime = fires.get_next(datetime)
            if nxt > end:
                break
            end = max(end, nxt + self.duration)
        return end

    def next_start(self, at: datetime) -> datetime:
        return croniter(self.cron, at.astimezone(self.timezone)).get_next(datetime)


@dataclass(frozen=True)
class Exclusion:
    ranges: tuple[Interval, ...]
    reason: str


@dataclass(frozen=True)
class Hold:
    """Why and until when a scan may not run now."""

    until: datetime
    window: str
    on_running: OnRunning


@dataclass(frozen=True)
class ScanWindows:
    blackouts: tuple[Blackout, ...] = ()
    exclusions: tuple[Exclusion, ...] = ()

    def held(self, pool: str, targets: Iterable[str], at: datetime) -> Hold | None:
        """The blackout(s) in force at ``at`` for these targets, and when the last one ends."""
        if not self.blackouts:
            return None
        intervals = intervals_of(targets)
        hold: Hold | None = None
        moment = at
        for _ in range(MAX_CHAIN):
            found = None
            for b in self.blackouts:
                if not b.covers(pool, intervals):
                    continue
                end = b.ends_at(moment)
                if end is not None and (found is None or end > found[0]):
                    found = (end, b)
            if found is None:
                break
            end, blackout = found
            if hold is None:
                hold = Hold(end, blackout.name, blackout.on_running)
            else:
                hold = Hold(max(end, hold.until), hold.window, hold.on_running)
            moment = hold.until
        return hold

    def next_start(self, pool: str, targets: Iterable[str], at: datetime) -> datetime | None:
        """The next time a blackout covering these targets begins (after ``at``)."""
        intervals = intervals_of(targets)
        starts = [b.next_start(at) for b in self.blackouts if b.covers(pool, intervals)]
        return min(starts, default=None)

    def excluded(self, targets: Iterable[str]) -> tuple[str, Exclusion] | None:
        """The first target that touches a permanent exclusion, with the exclusion."""
        for text in targets:
            iv = _interval(text)
            if iv is None:
                continue
            for ex in self.exclusions:
                if first_overlap(iv, ex.ranges) is not None:
                    return text, ex
        return None


def _interval(text: str) -> Interval | None:
    try:
        target = parse_target(text)
    except InvalidTarget:
        return None
    return None if target.kind == "hostname" else interval_of(target)


def intervals_of(targets: Iterable[str]) -> list[Interval | None]:
    return [_interval(t) for t in targets]


def compile_blackout(
    *,
    name: str,
    cron: str,
    duration_minutes: float,
    timezone: str,
    targets: Iterable[str] = (),
    pool: str | None = None,
    on_running: OnRunning = "pause",
) -> Blackout:
    """Raise ValueError naming the problem (config load reports it with the key)."""
    if not croniter.is_valid(cron) or len(cron.split()) != 5:
        raise ValueError(f"cron: {cron!r} is not a five-field cron expression")
    if duration_minutes <= 0:
        raise ValueError(f"duration_minutes: must be positive, got {duration_minutes}")
    try:
        zone = ZoneInfo(timezone)
    except (KeyError, ValueError):
        raise ValueError(f"timezone: unknown time zone {timezone!r}") from None
    return Blackout(
        name=name,
        cron=cron,
        duration=timedelta(minutes=duration_minutes),
        timezone=zone,
        ranges=tuple(parse_ranges(targets, what="targets")),
        pool=pool,
        on_running=on_running,
    )


DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def weekly_cron(days: Sequence[str], start: str) -> str:
    """``days`` (mon..sun) and ``start`` (HH:MM) as the cron expression of a weekly window."""
    try:
        hour, minute = (int(part) for part in start.split(":"))
    except ValueError:
        raise ValueError(f"start: {start!r} is not HH:MM") from None
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ValueError(f"start: {start!r} is not HH:MM")
    numbers = []
    for day in days:
        key = day.strip().lower()[:3]
        if key not in DAYS:
            raise ValueError(f"days: {day!r} is not a day of the week")
        numbers.append(str(DAYS.index(key)))
    return f"{minute} {hour} * * {','.join(numbers) if numbers else '*'}"


def weekly_minutes(start: str, end: str) -> float:
    """Minutes from ``start`` to ``end`` (HH:MM), past midnight when ``end`` is not later."""
    h1, m1 = (int(p) for p in start.split(":"))
    try:
        h2, m2 = (int(p) for p in end.split(":"))
    except ValueError:
        raise ValueError(f"end: {end!r} is not HH:MM") from None
    minutes = (h2 * 60 + m2) - (h1 * 60 + m1)
    return float(minutes if minutes > 0 else minutes + 24 * 60)
