"""When a schedule's occurrences fall, and which of them are due: pure.

A schedule is a cron expression (five fields, or six with seconds last, as croniter reads them)
or an RFC 5545 recurrence rule (``FREQ=WEEKLY;BYDAY=MO;BYHOUR=3``), read in an IANA time zone,
so "every Monday at 03:00 Europe/Paris" stays at 03:00 across daylight-saving changes. Both
kept libraries (croniter, python-dateutil) do the calendar arithmetic; this module only decides
which occurrences are due after a janitor's last look.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter
from dateutil.rrule import rrulestr

Missed = Literal["run_once", "skip"]
# How late an occurrence may fire and still count as on time (a janitor's tick, a short restart).
ON_TIME = timedelta(seconds=60)
MAX_SCAN_AHEAD = 10_000


class InvalidSchedule(ValueError):
    pass


@dataclass(frozen=True)
class Recurrence:
    """A validated cron expression or recurrence rule, in a time zone, anchored at ``start``."""

    cron: str | None
    rrule: str | None
    timezone: str
    start: datetime

    @classmethod
    def parse(cls, *, cron: str | None, rrule: str | None, timezone: str, start: datetime) -> Recurrence:
        if (cron is None) == (rrule is None):
            raise InvalidSchedule("give exactly one of cron and rrule")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidSchedule(f"unknown time zone {timezone!r} (an IANA name such as Europe/Paris)") from None
        rec = cls(cron.strip() if cron else None, rrule.strip() if rrule else None, timezone, start.astimezone(UTC))
        try:
            next(rec.after(rec.start), None)
        except (CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, ValueError, TypeError) as exc:
            raise InvalidSchedule(f"invalid {'cron expression' if cron else 'rrule'}: {exc}") from None
        return rec

    def after(self, moment: datetime) -> Iterator[datetime]:
        """Occurrences strictly after ``moment``, in order, as UTC datetimes."""
        zone = ZoneInfo(self.timezone)
        local = moment.astimezone(zone)
        if self.cron is not None:
            it = croniter(self.cron, local)
            while True:
                yield it.get_next(datetime).astimezone(UTC)
        assert self.rrule is not None
        rule = rrulestr(self.rrule, dtstart=self.start.astimezone(zone).replace(microsecond=0))
        for found in rule.xafter(local, inc=False):
            yield found.astimezone(UTC)


def next_occurrence(rec: Recurrence, moment: datetime) -> datetime | None:
    return next(rec.after(moment), None)


def due(rec: Recurrence, after: datetime, now: datetime, missed: Missed) -> tuple[datetime | None, datetime | None]:
    """``(to_fire, cursor)``: the occurrence to fire now (None: nothing) and how far occurrences
    have been dealt with. Several missed occurrences collapse into one: the latest fires once
    (``run_once``), or fires only if it is on time (``skip``); the rest are passed over."""
    latest = None
    for count, occurrence in enumerate(rec.after(after)):
        if occurrence > now or count >= MAX_SCAN_AHEAD:
            break
        latest = occurrence
    if latest is None:
        return None, None
    if missed == "skip" and now - latest > ON_TIME:
        return None, latest
    return latest, latest


def occurrence_token(occurrence: datetime) -> str:
    """The occurrence as a KV key token: UTC seconds."""
    return str(int(occurrence.astimezone(UTC).timestamp()))
