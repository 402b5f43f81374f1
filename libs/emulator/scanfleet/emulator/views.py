"""The JSON documents Nessus answers about scans, computed from the state at one instant."""

from __future__ import annotations

from typing import Any

from scanfleet.emulator.report import ReportModel
from scanfleet.emulator.state import EmulatorState, Scan


def scan_summary(state: EmulatorState, scan: Scan, now: float) -> dict[str, Any]:
    """A scan as ``GET /scans`` lists it."""
    return {
        "id": scan.id,
        "uuid": scan.uuid,
        "name": scan.name,
        "status": state.status(scan, now),
        "folder_id": scan.folder_id,
        "owner": scan.owner,
        "enabled": scan.enabled,
        "read": False,
        "shared": False,
        "user_permissions": 128,
        "control": True,
        "type": "local",
        "rrules": None,
        "starttime": None,
        "timezone": None,
        "live_results": 0,
        "creation_date": scan.created,
        "last_modification_date": scan.modified,
    }


def scan_details(state: EmulatorState, scan: Scan, now: float) -> dict[str, Any]:
    """``GET /scans/{id}``: only hosts that finished contribute vulnerabilities, as in a real running scan."""
    visible = state.visible_model(scan, now) if scan.run else None
    return {
        "info": _info(state, scan, now),
        "hosts": _host_entries(state, scan, now),
        "vulnerabilities": _vulnerabilities(visible) if visible else [],
        "history": _history(state, scan, now),
        "remediations": {
            "remediations": None,
            "num_hosts": 0,
            "num_cves": 0,
            "num_impacted_hosts": 0,
            "num_remediated_cves": 0,
        },
        "filters": [],
        "compliance": [],
        "notes": None,
    }


def _info(state: EmulatorState, scan: Scan, now: float) -> dict[str, Any]:
    run = scan.run
    end = state.end_time(scan, now)
    return {
        "acls": None,
        "edit_allowed": True,
        "status": state.status(scan, now),
        "name": scan.name,
        "targets": scan.text_targets,
        "hostcount": len(run.hosts) if run else 0,
        "scan_type": "local",
        "object_id": scan.id,
        "uuid": run.uuid if run else scan.uuid,
        "policy": scan.policy_name,
        "scanner_name": state.config.name,
        "folder_id": scan.folder_id,
        "alt_targets_used": False,
        "pci-can-upload": False,
        "haskb": True,
        "hasaudittrail": False,
        "is_archived": False,
        "control": True,
        "user_permissions": 128,
        "owner": scan.owner,
        "timestamp": int(now),
        "scan_start": int(run.launched_at) if run else None,
        "scan_end": int(end) if end else None,
        "scanner_start": int(run.launched_at) if run else None,
        "scanner_end": int(end) if end else None,
    }


def _history(state: EmulatorState, scan: Scan, now: float) -> list[dict[str, Any]]:
    status = state.status(scan, now)
    return [
        {
            "history_id": r.history_id,
            "uuid": r.uuid,
            "owner_id": 1,
            "type": "local",
            "scheduler": 0,
            "alt_targets_used": False,
            "is_archived": False,
            "status": status if r is scan.run else state.finished_status(r),
            "creation_date": int(r.launched_at),
            "last_modification_date": int(r.launched_at),
        }
        for r in scan.runs
    ]


def _host_entries(state: EmulatorState, scan: Scan, now: float) -> list[dict[str, Any]]:
    run = scan.run
    if run is None or state.status(scan, now) == "pending":
        return []
    model = state.model(scan)
    entries = []
    for index, (host, pct) in enumerate(zip(model.hosts, state.host_progress(scan, now), strict=True)):
        seen = host.items[: (len(host.items) * pct) // 100]
        counts = [0] * 5
        for item in seen:
            counts[item.severity] += 1
        checks = 20000
        entries.append(
            {
                "asset_id": index + 2,
                "host_id": index + 2,
                "uuid": f"{run.uuid}-{index}",
                "hostname": host.name,
                "progress": f"{checks * pct // 100}-{checks}/{655 * pct}-65535",
                "scanprogresscurrent": pct,
                "scanprogresstotal": 100,
                "numchecksconsidered": checks * pct // 100,
                "totalchecksconsidered": checks,
                "severitycount": {"item": [{"count": c, "severitylevel": lvl} for lvl, c in enumerate(counts)]},
                "severity": sum(counts),
                "score": sum(c * 10**lvl for lvl, c in enumerate(counts)),
                "info": counts[0],
                "low": counts[1],
                "medium": counts[2],
                "high": counts[3],
                "critical": counts[4],
            }
        )
    return entries


def _vulnerabilities(model: ReportModel) -> list[dict[str, Any]]:
    """One entry per plugin, counting the hosts it was reported on."""
    seen: dict[int, dict[str, Any]] = {}
    for host in model.hosts:
        for item in host.items:
            entry = seen.setdefault(
                item.plugin.id,
                {
                    "plugin_id": item.plugin.id,
                    "plugin_name": item.plugin.name,
                    "plugin_family": item.plugin.family,
                    "severity": item.severity,
                    "severity_index": item.severity,
                    "vuln_index": len(seen),
                    "count": 0,
                },
            )
            entry["count"] += 1
    return list(seen.values())
