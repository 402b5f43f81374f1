"""The agent's own counters; the fleet gauges (circuit state among them) are the dispatcher's."""

from __future__ import annotations

from prometheus_client import Counter

CIRCUIT_OPENS = Counter(
    "nessus_circuit_opens", "Times a scanner's circuit breaker opened", ["pool", "scanner_instance"]
)
