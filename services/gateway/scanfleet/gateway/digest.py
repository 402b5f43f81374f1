"""Results shaped for a model: one row per plugin across hosts, and a completed scan's digest.

A model asked "what is critical and how do I fix it" needs the plugin, how bad, where and the
fix, once per plugin, not once per host and port. The digest is bounded by construction (a
fixed number of plugin rows, each with capped hosts, CVEs and solution) so it stays a few KB
whatever the scan's size.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from scanfleet.common.findings import Finding
from scanfleet.common.tasks import TaskRecord
from scanfleet.gateway import findings_query as q

HOSTS_SHOWN = 3
CVES_SHOWN = 3
SOLUTION_CHARS = 160
DIGEST_PLUGINS = 8
"""Critical and high plugins in a digest; the rest are counted, and get_scan_results pages them."""

_SPACE = re.compile(r"\s+")


def one_line(text: str | None, limit: int = SOLUTION_CHARS) -> str | None:
    if not text:
        return None
    flat = _SPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


class _Group:
    __slots__ = ("exploit", "first", "hosts", "severity")

    def __init__(self, first: Finding) -> None:
        self.first = first
        self.hosts: dict[str, None] = {}
        self.severity = first.severity
        self.exploit = first.exploit_available


def plugin_groups(index: q.FindingsIndex, rows: Sequence[int]) -> list[dict[str, Any]]:
    """One row per plugin, in the order of its first matching finding (so the query's sort holds)."""
    groups: dict[int, _Group] = {}
    heads = index.heads
    for i in rows:
        head = heads[i]
        group = groups.get(head.plugin_id)
        if group is None:
            group = groups[head.plugin_id] = _Group(index.finding(i))
        group.hosts[head.host] = None
        group.severity = max(group.severity, head.severity)
    return [_row(g) for g in groups.values()]


def _row(group: _Group) -> dict[str, Any]:
    f = group.first
    hosts = list(group.hosts)
    row: dict[str, Any] = {"plugin_id": f.plugin_id, "plugin_name": f.plugin_name, "severity": group.severity}
    if f.cvss3_base_score is not None:
        row["cvss3"] = f.cvss3_base_score
    if f.cvss_base_score is not None:
        row["cvss"] = f.cvss_base_score
    if f.cve:
        row["cve"] = f.cve[:CVES_SHOWN]
        if len(f.cve) > CVES_SHOWN:
            row["cve_more"] = len(f.cve) - CVES_SHOWN
    if f.exploit_available:
        row["exploit_available"] = True
    row["hosts_affected"] = len(hosts)
    row["hosts"] = hosts[:HOSTS_SHOWN]
    solution = one_line(f.solution)
    if solution:
        row["solution"] = solution
    return row


def scan_digest(record: TaskRecord, index: q.FindingsIndex | None) -> dict[str, Any]:
    """Counts by severity, the authentication verdict and the top critical and high plugins with fixes."""
    results = record.results
    if index is None:
        counts = q.severity_dict([0, 0, 0, 0, 0])
        top: list[dict[str, Any]] = []
        more = 0
        hosts = results.hosts_scanned if results else 0
    else:
        counts = q.severity_dict(index.severity_counts)
        serious = [i for i in index.default_order if index.heads[i].severity >= 3]
        groups = plugin_groups(index, serious)
        top, more = groups[:DIGEST_PLUGINS], max(0, len(groups) - DIGEST_PLUGINS)
        hosts = len(index.hosts)
    if hosts == 0:
        hint = "No host answered: check the targets and that the scanner can reach them (routes, firewalls)."
    elif more:
        hint = (
            "More critical/high plugins: get_scan_results with group_by='plugin' and "
            "filters={'severity': '>=3'}; per host: get_host_summary."
        )
    else:
        hint = "Details: get_scan_results (group_by='plugin' for one row per plugin), get_finding for full text."
    return {
        "hosts_scanned": hosts,
        "severity_counts": counts,
        "authentication_status": results.auth_status if results else None,
        "top_findings": top,
        "more_critical_high_plugins": more,
        "next": hint,
    }


def has_digest(record: TaskRecord) -> bool:
    """Completed scans, and failed ones that still have results (every login failed)."""
    return record.state.terminal and record.results is not None
