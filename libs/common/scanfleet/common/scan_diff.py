"""What changed between two runs over the same targets, per (host, plugin, port): pure.

A finding present in the base run and absent from the later one is ``fixed`` only when both
runs really looked: for an authenticated scan, the host's login must have succeeded in both
runs (most findings of a credentialed scan come from local checks, which vanish when the
login fails), and the host must have been scanned in both. Anything else is
``not_comparable``, with the reason, and never counts as fixed or new.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from scanfleet.common.messages import SEVERITY_NAMES, AuthVerdict, ScanType

Change = Literal["new", "fixed", "still_open", "not_comparable"]
CHANGES: tuple[Change, ...] = ("new", "fixed", "still_open", "not_comparable")
NotComparable = Literal["login_failed_in_base", "login_failed_in_run", "not_scanned_in_base", "not_scanned_in_run"]


@dataclass(frozen=True, order=True)
class Key:
    """One finding's identity across runs."""

    host: str
    plugin_id: int
    port: int
    protocol: str = "tcp"


@dataclass(frozen=True)
class Seen:
    """What one run reports for one key: enough to rank and to tell the fix."""

    severity: int
    plugin_name: str = ""
    solution: str | None = None


@dataclass(frozen=True)
class RunView:
    """One run, as the diff needs it: its findings, and each scanned host's login verdict."""

    scan_type: ScanType
    findings: Mapping[Key, Seen]
    hosts: Mapping[str, AuthVerdict]

    @property
    def authenticated(self) -> bool:
        return self.scan_type != "untrusted"


@dataclass(frozen=True)
class Entry:
    key: Key
    change: Change
    severity: int
    plugin_name: str = ""
    solution: str | None = None
    why: NotComparable | None = None


def host_comparable(host: str, base: RunView, run: RunView) -> NotComparable | None:
    """Why ``host`` cannot be compared between the two runs, or None when it can."""
    if host not in base.hosts:
        return "not_scanned_in_base"
    if host not in run.hosts:
        return "not_scanned_in_run"
    if base.authenticated and base.hosts[host] != "success":
        return "login_failed_in_base"
    if run.authenticated and run.hosts[host] != "success":
        return "login_failed_in_run"
    return None


def diff(base: RunView, run: RunView) -> list[Entry]:
    """Every key of either run, classified; sorted by severity (highest first), then key."""
    why_of: dict[str, NotComparable | None] = {}
    entries = []
    for key in sorted({*base.findings, *run.findings}):
        before, after = base.findings.get(key), run.findings.get(key)
        seen = after or before
        assert seen is not None
        if key.host not in why_of:
            why_of[key.host] = host_comparable(key.host, base, run)
        why = why_of[key.host]
        if why is not None:
            change: Change = "not_comparable"
        elif before is None:
            change = "new"
        elif after is None:
            change = "fixed"
        else:
            change = "still_open"
        entries.append(Entry(key, change, seen.severity, seen.plugin_name, seen.solution, why))
    entries.sort(key=lambda e: (-e.severity, e.key))
    return entries


def counts(entries: Iterable[Entry], *, min_severity: int = 0) -> dict[str, dict[str, int]]:
    """Per change, per severity name (only severities at least ``min_severity``)."""
    out: dict[str, dict[str, int]] = {
        c: {SEVERITY_NAMES[s]: 0 for s in range(4, min_severity - 1, -1)} for c in CHANGES
    }
    for e in entries:
        if e.severity >= min_severity:
            out[e.change][SEVERITY_NAMES[e.severity]] += 1
    return out


def not_comparable_hosts(base: RunView, run: RunView) -> dict[str, NotComparable]:
    hosts = {*base.hosts, *run.hosts}
    found = {h: host_comparable(h, base, run) for h in sorted(hosts)}
    return {h: why for h, why in found.items() if why is not None}


def top(entries: Sequence[Entry], change: Change, limit: int, *, min_severity: int = 1) -> list[Entry]:
    return [e for e in entries if e.change == change and e.severity >= min_severity][:limit]
