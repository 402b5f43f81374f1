"""Prometheus metrics written by more than one service; each service's own live in its package.

Names and labels are the origin system's (``nessus_*``), so existing dashboards and alerts
keep working; ``scanner_instance`` is ``<pool>:<instance>`` as it was. Who owns what is in
docs/architecture.md ("Observability").
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NATS_CONNECTED = Gauge("nessus_nats_connected", "1 while the service's NATS connection is up", ["service"])

SCANS = Counter(
    "nessus_scans",
    "Scans by outcome: status=queued when submitted (gateway), the terminal state when ended (janitor)",
    ["scan_type", "pool", "status"],
)

TASK_DURATION = Histogram(
    "nessus_task_duration_seconds",
    "Time from submission to the terminal state, observed once per ended task (janitor)",
    ["scan_type", "pool", "status"],
    buckets=(1, 5, 15, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400),
)


def scanner_label(pool: str, instance: str) -> str:
    return f"{pool}:{instance}"
