"""The validator's Prometheus counters, in one place so every label set is visible at a glance."""

from __future__ import annotations

from prometheus_client import Counter

VALIDATIONS = Counter(
    "scanfleet_validations",
    "Exports validated, by outcome (completed or failed)",
    ["outcome"],
)
VALIDATION_FAILURES = Counter(
    "scanfleet_validation_failures",
    "Exports that failed validation, by reason (xml_invalid, auth_failed, checksum_mismatch, ...)",
    ["reason"],
)
AUTH_FAILURES = Counter(
    "scanfleet_auth_failures",
    "Authenticated scans whose authentication failed on every host, by pool and scan type",
    ["pool", "scan_type"],
)
FINDINGS_STORED = Counter("scanfleet_findings_stored", "Findings written to the findings store")
