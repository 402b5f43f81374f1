"""Fleet and queue gauges: the dispatcher owns them because it mirrors the whole fleet.

They are computed at scrape time from the live mirror (registry, slots, agent heartbeats)
and the pools' dispatch consumers, so they are never stale. Several dispatchers (leader and
standbys) export the same values: aggregate them with ``max``, never ``sum``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Gauge, Histogram

from scanfleet.common import contract
from scanfleet.common.metrics import scanner_label
from scanfleet.common.registry import ScannerView
from scanfleet.common.runtime import Runtime

_SCANNER = ["pool", "scanner_instance"]

SCANNER_ACTIVE = Gauge("nessus_scanner_active_scans", "Scans holding a slot on the scanner", _SCANNER)
SCANNER_CAPACITY = Gauge("nessus_scanner_capacity", "The scanner's max_concurrent_scans", _SCANNER)
SCANNER_UTILIZATION = Gauge("nessus_scanner_utilization_pct", "Active scans / capacity, in percent", _SCANNER)
SCANNER_ENABLED = Gauge("nessus_scanner_enabled", "1 if enabled in scanners.yaml and not being removed", _SCANNER)
AGENT_ALIVE = Gauge("nessus_scanner_agent_alive", "1 while the scanner's agent heartbeat lease exists", _SCANNER)
SCANNER_REACHABLE = Gauge("nessus_scanner_reachable", "1 if the agent's last probe reached the scanner", _SCANNER)
SCANNER_AUTHENTICATED = Gauge("nessus_scanner_authenticated", "1 if the agent's last probe logged in", _SCANNER)
SCANNER_SCAN_API = Gauge("nessus_scanner_scan_api", "1 if the scanner's licence allows launching scans", _SCANNER)
SCANNER_USABLE = Gauge("nessus_scanner_usable", "1 if the scanner may receive new work right now", _SCANNER)
CIRCUIT_STATE = Gauge("nessus_circuit_state", "Circuit breaker: 0 closed, 1 open, 2 half open", _SCANNER)
SCANNER_INSTANCES = Gauge("nessus_scanner_instances", "Registered scanners", ["scanner_type", "enabled"])
POOL_CAPACITY = Gauge("nessus_pool_total_capacity", "Sum of the pool's scanner capacities", ["pool"])
POOL_ACTIVE = Gauge("nessus_pool_total_active", "Scans holding a slot in the pool", ["pool"])
POOL_QUEUE_DEPTH = Gauge("nessus_pool_queue_depth", "Requests waiting for a scanner in the pool", ["pool"])
ACTIVE_SCANS = Gauge("nessus_active_scans", "Scans holding a slot, fleet-wide")
DISPATCH_LATENCY = Histogram(
    "scanfleet_dispatch_latency_seconds",
    "From the dispatcher noticing a change (a freed slot, a new request) to the assignment published",
    ["pool"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

CIRCUIT_CODES = {"closed": 0, "open": 1, "half_open": 2}
Samples = dict[Gauge, dict[tuple[str, ...], float]]


def fleet_samples(views: Iterable[ScannerView]) -> Samples:
    """Every fleet gauge's value per label set, from one snapshot of the mirror."""
    out: Samples = {g: {} for g in FLEET_GAUGES}
    enabled_count = {"true": 0.0, "false": 0.0}
    for view in views:
        pool = view.entry.pool
        labels = (pool, scanner_label(pool, view.entry.instance))
        hb = view.heartbeat
        enabled = view.entry.enabled and not view.entry.removing
        out[SCANNER_ACTIVE][labels] = view.slots.active
        out[SCANNER_CAPACITY][labels] = view.slots.limit
        out[SCANNER_UTILIZATION][labels] = round(100.0 * view.utilization, 3)
        out[SCANNER_ENABLED][labels] = float(enabled)
        out[AGENT_ALIVE][labels] = float(hb is not None)
        out[SCANNER_REACHABLE][labels] = float(bool(hb and hb.reachable))
        out[SCANNER_AUTHENTICATED][labels] = float(bool(hb and hb.authenticated))
        out[SCANNER_SCAN_API][labels] = float(bool(hb and hb.scan_api))
        out[SCANNER_USABLE][labels] = float(view.usable)
        if hb is not None:
            out[CIRCUIT_STATE][labels] = CIRCUIT_CODES[hb.circuit]
        enabled_count["true" if enabled else "false"] += 1
        out[POOL_CAPACITY][(pool,)] = out[POOL_CAPACITY].get((pool,), 0.0) + view.slots.limit
        out[POOL_ACTIVE][(pool,)] = out[POOL_ACTIVE].get((pool,), 0.0) + view.slots.active
    out[ACTIVE_SCANS][()] = sum(out[POOL_ACTIVE].values())
    for flag, count in enabled_count.items():
        out[SCANNER_INSTANCES][("nessus", flag)] = count
    return out


FLEET_GAUGES = (
    SCANNER_ACTIVE,
    SCANNER_CAPACITY,
    SCANNER_UTILIZATION,
    SCANNER_ENABLED,
    AGENT_ALIVE,
    SCANNER_REACHABLE,
    SCANNER_AUTHENTICATED,
    SCANNER_SCAN_API,
    SCANNER_USABLE,
    CIRCUIT_STATE,
    SCANNER_INSTANCES,
    POOL_CAPACITY,
    POOL_ACTIVE,
    ACTIVE_SCANS,
)


def apply(samples: Samples) -> None:
    """Replace each gauge's series, so a removed scanner's series disappear with it.

    No await between clear and set: a scrape served by this event loop never sees a gap.
    """
    for gauge, values in samples.items():
        if gauge._labelnames:
            gauge.clear()
            for labels, value in values.items():
                gauge.labels(*labels).set(value)
        else:
            gauge.set(values.get((), 0.0))


async def queue_depths(rt: Runtime, pools: Iterable[str]) -> dict[tuple[str, ...], float]:
    """Waiting requests per pool: not yet delivered plus held unacknowledged by a dispatcher."""
    depths: dict[tuple[str, ...], float] = {}
    for pool in sorted(set(pools)):
        info = await rt.js.consumer_info(contract.REQUESTS_STREAM, contract.dispatch_consumer_name(pool))
        depths[(pool,)] = float(info.num_pending or 0) + float(info.num_ack_pending or 0)
    return depths


async def refresh(rt: Runtime, views: list[ScannerView]) -> None:
    depths = await queue_depths(rt, (v.entry.pool for v in views))
    samples = fleet_samples(views)
    samples[POOL_QUEUE_DEPTH] = depths
    apply(samples)
