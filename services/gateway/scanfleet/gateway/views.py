"""Response shapes for MCP clients and REST callers: small, flat, never a credential."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from scanfleet.common.registry import ScannerView
from scanfleet.common.tasks import TaskRecord


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def status(record: TaskRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "task_id": record.task_id,
        "trace_id": record.trace_id,
        "status": str(record.state),
        "scan_type": record.scan_type,
        "scanner_pool": record.pool,
        "scanner_instance": record.instance or record.requested_instance,
        "targets": record.targets,
        "name": record.name,
        "progress": record.progress,
        "nessus_scan_id": record.nessus_scan_id,
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "completed_at": _iso(record.finished_at),
    }
    if record.error:
        out["error_message"] = record.error
        out["error_reason"] = record.error_reason
    if record.results is not None:
        r = record.results
        out["authentication_status"] = r.auth_status
        out["results_summary"] = {
            "hosts_scanned": r.hosts_scanned,
            "total_vulnerabilities": r.total_vulnerabilities,
            "severity_breakdown": msgspec.to_builtins(r.severity_counts),
            "auth_verdicts": r.auth_counts,
            "export_size": r.export_size,
        }
    if record.warnings:
        out["validation_warnings"] = record.warnings
    if record.troubleshooting:
        out["troubleshooting"] = record.troubleshooting
    return out


def submitted(record: TaskRecord, position: int | None, fleet: list[ScannerView]) -> dict[str, Any]:
    free = sum(v.slots.free for v in fleet if v.entry.pool == record.pool and v.usable)
    return {
        "task_id": record.task_id,
        "trace_id": record.trace_id,
        "status": str(record.state),
        "scanner_pool": record.pool,
        "scanner_instance": record.requested_instance,
        "queue_position": position,
        "free_slots_in_pool": free,
        "message": "Scan queued. Poll get_scan_status with the task_id; results follow completion.",
    }


def results(record: TaskRecord) -> dict[str, Any]:
    assert record.results is not None
    r = record.results
    return {
        "task_id": record.task_id,
        "status": str(record.state),
        "scan_type": record.scan_type,
        "report_name": r.report_name,
        "hosts_scanned": r.hosts_scanned,
        "total_items": r.total_items,
        "total_vulnerabilities": r.total_vulnerabilities,
        "severity_counts": msgspec.to_builtins(r.severity_counts),
        "authentication_status": r.auth_status,
        "hosts": [
            {
                "host": h.name,
                "ip": h.ip,
                "fqdn": h.fqdn,
                "os": h.os,
                "severity_counts": msgspec.to_builtins(h.severity_counts),
                "auth": h.auth,
                "auth_evidence": h.auth_evidence,
            }
            for h in r.hosts
        ],
        "warnings": record.warnings,
    }


def scanner(view: ScannerView) -> dict[str, Any]:
    hb = view.heartbeat
    return {
        "scanner_pool": view.entry.pool,
        "instance_id": view.entry.instance,
        "instance_key": f"{view.entry.pool}:{view.entry.instance}",
        "url": view.entry.url,
        "enabled": view.entry.enabled,
        "max_concurrent_scans": view.slots.limit,
        "active_scans": view.slots.active,
        "available_capacity": view.slots.free,
        "utilization_pct": round(100 * view.utilization, 1),
        "agent_alive": view.alive,
        "reachable": hb.reachable if hb else False,
        "authenticated": hb.authenticated if hb else False,
        "scan_api": hb.scan_api if hb else False,
        "version": hb.version if hb else None,
        "usable": view.usable,
        "problem": (hb.error if hb else "no agent heartbeat"),
        "labels": view.entry.labels,
    }


def scanners(fleet: list[ScannerView]) -> dict[str, Any]:
    return {"scanners": [scanner(v) for v in fleet], "total": len(fleet), "pools": pools_of(fleet)}


def pools_of(fleet: list[ScannerView]) -> list[str]:
    return sorted({v.entry.pool for v in fleet})


def pools(fleet: list[ScannerView], default_pool: str | None) -> dict[str, Any]:
    out = []
    for name in pools_of(fleet):
        members = [v for v in fleet if v.entry.pool == name]
        capacity = sum(v.slots.limit for v in members)
        active = sum(v.slots.active for v in members)
        out.append(
            {
                "pool": name,
                "scanners": len(members),
                "usable_scanners": sum(v.usable for v in members),
                "total_capacity": capacity,
                "active_scans": active,
                "utilization_pct": round(100 * active / capacity, 1) if capacity else 0.0,
            }
        )
    return {"pools": out, "default_pool": default_pool or (out[0]["pool"] if out else None)}
