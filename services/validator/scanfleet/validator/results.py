"""From a parsed export to the task's verdict and the summary an LLM reads."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from scanfleet.common.messages import HostResult, ResultsSummary, ScanType, SeverityCounts
from scanfleet.validator.auth import scan_auth_verdict, troubleshooting
from scanfleet.validator.parsing import ExportSummary

HOSTS_IN_RECORD = 100
"""Per-host results kept in the task record; every host is in the findings store (KV values stay small)."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None
    message: str
    summary: ResultsSummary | None = None
    warnings: list[str] = field(default_factory=list)
    troubleshooting: dict[str, object] = field(default_factory=dict)
    dead_letter: bool = False

    @classmethod
    def rejected(cls, reason: str, message: str) -> Verdict:
        """An export that cannot be used at all: fail the task and keep a dead letter."""
        return cls(ok=False, reason=reason, message=message, dead_letter=True)


NO_HOST_HELP = (
    "no host answered: check that the targets are right and up, and that the scanner can reach them "
    "(routes, firewalls, the scan policy's host discovery)"
)


def no_hosts(scan_type: ScanType, *, export_size: int) -> Verdict:
    """An export without a single host: what Nessus reports when no target answered.

    A result, not a broken export (no dead letter): an untrusted scan completes with zero hosts
    and a warning; an authenticated scan fails, because it had no host to log in to.
    """
    summary = ResultsSummary(
        hosts_scanned=0,
        total_items=0,
        total_vulnerabilities=0,
        severity_counts=SeverityCounts(),
        auth_status=scan_auth_verdict(scan_type, []),
        export_size=export_size,
    )
    if scan_type == "untrusted":
        return Verdict(
            ok=True, reason=None, message="0 host(s): " + NO_HOST_HELP, summary=summary, warnings=[NO_HOST_HELP]
        )
    return Verdict(
        ok=False,
        reason="no_hosts",
        message="no host to log in to: " + NO_HOST_HELP,
        summary=summary,
        warnings=[NO_HOST_HELP],
    )


def summarize(parsed: ExportSummary, scan_type: ScanType, export_size: int) -> ResultsSummary:
    auth_status = scan_auth_verdict(scan_type, parsed.hosts)
    return ResultsSummary(
        report_name=parsed.report_name,
        hosts_scanned=parsed.host_count,
        total_items=parsed.item_count,
        total_vulnerabilities=parsed.total_vulnerabilities,
        severity_counts=SeverityCounts(**parsed.severity_counts),
        auth_status=auth_status,
        auth_counts=dict(Counter(h.auth for h in parsed.hosts)),
        export_size=export_size,
        hosts=[
            HostResult(
                name=h.name,
                ip=h.ip,
                fqdn=h.fqdn,
                os=h.os,
                severity_counts=h.severity_counts,
                auth=h.auth,
                auth_evidence=list(h.auth_evidence),
                credentialed_checks=h.credentialed_checks,
            )
            for h in parsed.hosts[:HOSTS_IN_RECORD]
        ],
    )


def judge(parsed: ExportSummary, scan_type: ScanType, *, export_size: int) -> Verdict:
    """An authenticated scan whose logins all failed is never reported as clean."""
    summary = summarize(parsed, scan_type, export_size)
    warnings = list(parsed.warnings)
    help_ = troubleshooting(summary.auth_status, parsed.hosts)
    counts = summary.severity_counts
    described = (
        f"{summary.hosts_scanned} host(s), {summary.total_vulnerabilities} vulnerabilities "
        f"(critical {counts.critical}, high {counts.high}, medium {counts.medium}, low {counts.low})"
    )
    if summary.auth_status == "failed":
        return Verdict(
            ok=False,
            reason="auth_failed",
            message=f"authentication failed on every host; results are not trustworthy: {described}",
            summary=summary,
            warnings=warnings,
            troubleshooting=help_,
        )
    if summary.auth_status == "partial":
        warnings.append(f"authentication succeeded on only some hosts: {summary.auth_counts}")
    return Verdict(ok=True, reason=None, message=described, summary=summary, warnings=warnings, troubleshooting=help_)
