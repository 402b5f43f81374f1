"""The validator's Prometheus counters, in one place so every label set is visible at a glance.

Names and labels are the origin system's (``nessus_*``).
"""

from __future__ import annotations

from prometheus_client import Counter

VALIDATIONS = Counter(
    "nessus_validation",
    "Exports validated, by pool and result (success or failed)",
    ["pool", "result"],
)
VALIDATION_FAILURES = Counter(
    "nessus_validation_failures",
    "Exports that failed validation, by pool and reason (xml_invalid, auth_failed, checksum_mismatch, ...)",
    ["pool", "reason"],
)
AUTH_FAILURES = Counter(
    "nessus_auth_failures",
    "Authenticated scans whose authentication failed on every host, by pool and scan type",
    ["pool", "scan_type"],
)
FINDINGS_STORED = Counter("nessus_findings_stored", "Findings written to the findings store")
