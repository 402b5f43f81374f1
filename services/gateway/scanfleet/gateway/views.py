"""Response shapes for MCP clients and REST callers: small, flat, never a credential."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from scanfleet.common.messages import ContainerStatus
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
        "submitted_by": record.submitted_by,
    }
    if record.cancelled_by:
        out["cancelled_by"] = record.cancelled_by
    if record.state == "running":
        out["paused"] = record.paused
        if record.pause_requested != record.paused:
            out["pause_requested"] = record.pause_requested
        if record.host_progress:
            out["host_progress"] = record.host_progress
    if record.cancel_requested and not record.state.terminal:
        out["cancel_requested"] = record.cancel_requested
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
            "findings_stored": record.findings.count if record.findings else 0,
        }
    if record.warnings:
        out["validation_warnings"] = record.warnings
    if record.troubleshooting:
        out["troubleshooting"] = record.troubleshooting
    return out


LISTED_TARGETS = 5


def task_line(record: TaskRecord) -> dict[str, Any]:
    """One row of ``list_tasks``: enough to pick a task, never its whole target list."""
    return {
        "task_id": record.task_id,
        "name": record.name,
        "status": str(record.state),
        "scan_type": record.scan_type,
        "scanner_pool": record.pool,
        "targets": record.targets[:LISTED_TARGETS],
        "target_count": len(record.targets),
        "progress": record.progress,
        "created_at": _iso(record.created_at),
        "completed_at": _iso(record.finished_at),
        "submitted_by": record.submitted_by,
        **({"authentication_status": record.results.auth_status} if record.results else {}),
    }


def submitted(record: TaskRecord, placement: dict[str, Any], fleet: list[ScannerView]) -> dict[str, Any]:
    free = sum(v.slots.free for v in fleet if v.entry.pool == record.pool and v.usable)
    return {
        "task_id": record.task_id,
        "trace_id": record.trace_id,
        "status": str(record.state),
        "scanner_pool": record.pool,
        "scanner_instance": record.requested_instance,
        **placement,
        "free_slots_in_pool": free,
        "message": "Scan queued. Poll get_scan_status with the task_id; results follow completion.",
    }


def container(status: ContainerStatus | None) -> dict[str, Any] | None:
    if status is None:
        return None
    return {
        "name": status.name,
        "engine": status.engine,
        "state": status.state,
        "health": status.health,
        "started_at": _iso(status.started_at),
        "restart_count": status.restart_count,
        "error": status.error,
        "restarted_at": _iso(status.restarted_at),
        "restarted_by": status.restarted_by,
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
        "state": view.state,
        "startup_progress": hb.startup_progress if hb and hb.starting else None,
        "circuit": hb.circuit if hb else None,
        "circuit_failures": hb.circuit_failures if hb else 0,
        "problem": (hb.error if hb else "no agent heartbeat"),
        "labels": view.entry.labels,
        "container": container(hb.container if hb else None),
    }


def scanners(fleet: list[ScannerView]) -> dict[str, Any]:
    return {"scanners": [scanner(v) for v in fleet], "total": len(fleet), "pools": pools_of(fleet)}


def pools_of(fleet: list[ScannerView]) -> list[str]:
    return sorted({v.entry.pool for v in fleet})


def pool_summary(name: str, members: list[ScannerView]) -> dict[str, Any]:
    capacity = sum(v.slots.limit for v in members)
    active = sum(v.slots.active for v in members)
    usable = [v for v in members if v.usable]
    return {
        "pool": name,
        "scanners": len(members),
        "usable_scanners": len(usable),
        "total_capacity": capacity,
        "usable_capacity": sum(v.slots.limit for v in usable),
        "active_scans": active,
        "available_capacity": sum(v.slots.free for v in usable),
        "utilization_pct": round(100 * active / capacity, 1) if capacity else 0.0,
    }


def scanner_load(view: ScannerView) -> dict[str, Any]:
    return {
        "instance_id": view.entry.instance,
        "active_scans": view.slots.active,
        "max_concurrent_scans": view.slots.limit,
        "available_capacity": view.slots.free,
        "utilization_pct": round(100 * view.utilization, 1),
        "usable": view.usable,
    }


def pools(fleet: list[ScannerView], default_pool: str | None) -> dict[str, Any]:
    out = [pool_summary(name, [v for v in fleet if v.entry.pool == name]) for name in pools_of(fleet)]
    return {"pools": out, "default_pool": default_pool or (out[0]["pool"] if out else None)}
