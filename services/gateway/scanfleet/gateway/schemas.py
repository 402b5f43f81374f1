"""The shapes the gateway answers with, as msgspec types: one source for MCP output schemas,
the REST OpenAPI and the agents' guide.

The views build plain dicts (cheap, and absent keys stay absent); these types name every key a
view may give, with ``UNSET`` for keys that appear only in some states. Tests convert real
answers into them, and the official MCP client validates ``structuredContent`` against them.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from scanfleet.common.messages import Priority, ScanAuth, ScanType
from scanfleet.common.scan_diff import NotComparable
from scanfleet.common.schedule_times import Missed

Severity = Literal["critical", "high", "medium", "low", "info"]


class Out(msgspec.Struct, kw_only=True):
    """Unknown keys are allowed (forward compatible), known ones are typed."""


# Errors ------------------------------------------------------------------------------------


class ErrorResult(Out, kw_only=True):
    """Every refusal, on REST and as an MCP tool error: a stable code, a message, what to do next."""

    error: str
    message: str
    next_steps: str


# Submission and status ----------------------------------------------------------------------


class Placement(Out, kw_only=True):
    queue_position: int | UnsetType | None = UNSET
    queue_depth: int | UnsetType = UNSET
    estimated_wait_seconds: float | UnsetType | None = UNSET
    estimate_basis: str | UnsetType = UNSET


class ScanSubmitted(Placement, kw_only=True):
    task_id: str
    trace_id: str
    status: str
    scanner_pool: str
    scanner_instance: str | None = None
    free_slots_in_pool: int | UnsetType = UNSET
    message: str | UnsetType = UNSET
    idempotent: bool | UnsetType = UNSET


class SeverityCountsOut(Out, kw_only=True):
    critical: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    info: int = 0


class ResultsSummaryOut(Out, kw_only=True):
    hosts_scanned: int
    total_vulnerabilities: int
    severity_breakdown: SeverityCountsOut
    auth_verdicts: dict[str, int] = {}
    export_size: int = 0
    findings_stored: int = 0


class PluginGroup(Out, kw_only=True):
    """One plugin across every host it reported on: what it is, how bad, where, and the fix."""

    plugin_id: int
    plugin_name: str
    severity: int
    cvss3: float | UnsetType | None = UNSET
    cvss: float | UnsetType | None = UNSET
    cve: list[str] | UnsetType = UNSET
    cve_more: int | UnsetType = UNSET
    exploit_available: bool | UnsetType = UNSET
    hosts_affected: int
    hosts: list[str]
    solution: str | UnsetType = UNSET


class Digest(Out, kw_only=True):
    """A completed scan at a glance, sized for a model's context (a few KB at most)."""

    hosts_scanned: int
    severity_counts: SeverityCountsOut
    authentication_status: ScanAuth | None
    top_findings: list[PluginGroup]
    more_critical_high_plugins: int = 0
    next: str


class ScanStatus(Placement, kw_only=True):
    task_id: str
    trace_id: str
    status: str
    scan_type: ScanType
    scanner_pool: str
    scanner_instance: str | None = None
    targets: list[str]
    name: str
    progress: int
    nessus_scan_id: int | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    submitted_by: str | None = None
    cancelled_by: str | UnsetType = UNSET
    paused: bool | UnsetType = UNSET
    pause_requested: bool | UnsetType = UNSET
    host_progress: dict[str, int] | UnsetType = UNSET
    cancel_requested: str | UnsetType = UNSET
    error_message: str | UnsetType = UNSET
    error_reason: str | UnsetType | None = UNSET
    authentication_status: ScanAuth | UnsetType = UNSET
    results_summary: ResultsSummaryOut | UnsetType = UNSET
    validation_warnings: list[str] | UnsetType = UNSET
    troubleshooting: dict[str, Any] | UnsetType = UNSET
    digest: Digest | UnsetType = UNSET
    changed: bool | UnsetType = UNSET
    message: str | UnsetType = UNSET


class TaskLine(Out, kw_only=True):
    task_id: str
    name: str
    status: str
    scan_type: ScanType
    scanner_pool: str
    targets: list[str]
    target_count: int
    progress: int
    created_at: str | None = None
    completed_at: str | None = None
    submitted_by: str | None = None
    authentication_status: ScanAuth | UnsetType = UNSET


class TaskList(Out, kw_only=True):
    client: str | None = None
    tasks: list[TaskLine]
    returned: int
    next_cursor: str | None = None


# Fleet --------------------------------------------------------------------------------------


class ContainerOut(Out, kw_only=True):
    """The container of a container-managed scanner, as its engine reports it (``state``:
    created, running, restarting, paused, exited, dead, or unknown with ``error``), and the
    last restart scanfleet made or tried (by an operator, or ``system`` after a long-open circuit)."""

    name: str
    engine: str
    state: str
    health: str | None = None
    started_at: str | None = None
    restart_count: int = 0
    error: str | None = None
    restarted_at: str | None = None
    restarted_by: str | None = None


ScannerState = Literal["ready", "starting", "circuit_open", "unreachable", "unavailable", "no_agent", "disabled"]


class ScannerOut(Out, kw_only=True):
    scanner_pool: str
    instance_id: str
    instance_key: str
    url: str
    enabled: bool
    max_concurrent_scans: int
    active_scans: int
    available_capacity: int
    utilization_pct: float
    agent_alive: bool
    reachable: bool
    authenticated: bool
    scan_api: bool
    version: str | None = None
    usable: bool
    state: ScannerState
    startup_progress: int | None = None
    circuit: str | None = None
    circuit_failures: int = 0
    problem: str | None = None
    labels: dict[str, str] = {}
    container: ContainerOut | None = None


class ScannerList(Out, kw_only=True):
    scanners: list[ScannerOut]
    total: int
    pools: list[str]


class PoolSummary(Out, kw_only=True):
    pool: str
    scanners: int
    usable_scanners: int
    total_capacity: int
    usable_capacity: int
    active_scans: int
    available_capacity: int
    utilization_pct: float


class PoolList(Out, kw_only=True):
    pools: list[PoolSummary]
    default_pool: str | None = None


class ScannerLoad(Out, kw_only=True):
    instance_id: str
    active_scans: int
    max_concurrent_scans: int
    available_capacity: int
    utilization_pct: float
    usable: bool


class PoolLoad(Out, kw_only=True):
    pool: str
    usable_scanners: int
    total_capacity: int
    usable_capacity: int
    active_scans: int
    available_capacity: int
    utilization_pct: float
    queue_depth: int
    avg_scan_duration_s: float | None = None
    scanners: list[ScannerLoad]


class PoolStatus(Out, kw_only=True):
    pools: list[PoolLoad]


class QueuedTask(Out, kw_only=True):
    task_id: str
    position: int
    name: str
    scan_type: ScanType
    targets: list[str]
    scanner_instance: str | None = None
    queued_at: str
    submitted_by: str | None = None


class PoolQueue(Out, kw_only=True):
    pool: str
    queue_depth: int
    next_tasks: list[QueuedTask]


class QueueStatus(Out, kw_only=True):
    pools: list[PoolQueue]
    dlq_depth: int


# Results ------------------------------------------------------------------------------------


class FindingRow(Out, kw_only=True):
    """One plugin result on one host and port; the profile decides which keys are present."""

    host: str | UnsetType = UNSET
    ip: str | UnsetType = UNSET
    port: int | UnsetType = UNSET
    protocol: str | UnsetType = UNSET
    svc_name: str | UnsetType = UNSET
    plugin_id: int | UnsetType = UNSET
    plugin_name: str | UnsetType = UNSET
    plugin_family: str | UnsetType = UNSET
    severity: int | UnsetType = UNSET
    risk_factor: str | UnsetType = UNSET
    cvss_base_score: float | UnsetType = UNSET
    cvss3_base_score: float | UnsetType = UNSET
    vpr_score: float | UnsetType = UNSET
    epss_score: float | UnsetType = UNSET
    cve: list[str] | UnsetType = UNSET
    cve_more: int | UnsetType = UNSET
    exploit_available: bool | UnsetType = UNSET
    synopsis: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    solution: str | UnsetType = UNSET
    plugin_output: str | UnsetType = UNSET
    see_also: str | UnsetType = UNSET


class Page(Out, kw_only=True):
    offset: int
    page_size: int | UnsetType = UNSET
    returned: int
    has_more: bool
    next_cursor: str | None = None


class ResultsHeader(Out, kw_only=True):
    task_id: str
    status: str
    scan_type: ScanType
    authentication_status: ScanAuth | None = None
    hosts_scanned: int
    total_findings: int
    total_vulnerabilities: int
    severity_counts: SeverityCountsOut
    matched: int
    matched_severity_counts: SeverityCountsOut
    filters_applied: dict[str, Any]
    sort: str
    profile: str
    group_by: Literal["plugin"] | UnsetType = UNSET
    matched_plugins: int | UnsetType = UNSET
    severity_scale: str
    fields: list[str] | UnsetType = UNSET
    warning: str | UnsetType = UNSET


class ScanResults(Out, kw_only=True):
    summary: ResultsHeader
    findings: list[FindingRow] | UnsetType = UNSET
    plugins: list[PluginGroup] | UnsetType = UNSET
    page: Page


class HostLine(Out, kw_only=True):
    host: str
    ip: str | UnsetType = UNSET
    fqdn: str | UnsetType = UNSET
    os: str | UnsetType = UNSET
    severity_counts: SeverityCountsOut
    auth: str


class HostSummary(Out, kw_only=True):
    """Without ``host``: the page of hosts. With ``host``: that host's detail (the other keys)."""

    task_id: str
    status: str | UnsetType = UNSET
    authentication_status: ScanAuth | UnsetType | None = UNSET
    hosts_total: int | UnsetType = UNSET
    hosts: list[HostLine] | UnsetType = UNSET
    page: Page | UnsetType = UNSET
    host: str | UnsetType = UNSET
    ip: str | UnsetType = UNSET
    fqdn: str | UnsetType = UNSET
    os: str | UnsetType = UNSET
    severity_counts: SeverityCountsOut | UnsetType = UNSET
    auth: str | UnsetType = UNSET
    start: str | UnsetType = UNSET
    end: str | UnsetType = UNSET
    findings: int | UnsetType = UNSET
    credentialed_scan: bool | UnsetType = UNSET
    credentialed_checks: str | UnsetType = UNSET
    auth_evidence: list[str] | UnsetType = UNSET
    auth_plugins: Any = UNSET
    top_findings: list[FindingRow] | UnsetType = UNSET


class FindingDetail(Out, kw_only=True):
    task_id: str
    host: str
    plugin_id: int
    findings: list[dict[str, Any]]


# History ------------------------------------------------------------------------------------


class ScheduleOut(Out, kw_only=True):
    """A recurring scan: what it scans, when (``cron`` or ``rrule`` in ``timezone``), its next runs."""

    schedule_id: str
    owner: str
    name: str
    description: str = ""
    targets: list[str]
    scan_type: ScanType
    pool: str | None = None
    scanner_instance: str | None = None
    credential_ref: str | None = None
    priority: Priority = "normal"
    cron: str | None = None
    rrule: str | None = None
    timezone: str
    missed: Missed
    auto_rollover: bool
    paused: bool
    created_at: str
    updated_at: str
    cursor: str | None = None
    last_task_id: str | None = None
    last_fired_at: str | None = None
    last_refusal: str | None = None
    fired: int
    next_runs: list[str]


class ScheduleList(Out, kw_only=True):
    schedules: list[ScheduleOut]
    count: int


class ScheduleDeleted(Out, kw_only=True):
    schedule_id: str
    deleted: bool


class ScanRequeued(ScanSubmitted, kw_only=True):
    """A rescan or rollover: a new task, linked to the one it repeats."""

    rescan_of: str | UnsetType = UNSET
    rollover_of: str | UnsetType = UNSET


class RunLine(Out, kw_only=True):
    task_id: str
    state: str
    scan_type: ScanType
    finished_at: str | None = None
    hosts_scanned: int | UnsetType = UNSET
    schedule_id: str | UnsetType = UNSET
    rescan_of: str | UnsetType = UNSET
    rollover_of: str | UnsetType = UNSET


class ChangeCounts(Out, kw_only=True):
    new: SeverityCountsOut
    fixed: SeverityCountsOut
    still_open: SeverityCountsOut
    not_comparable: SeverityCountsOut


class ChangeLine(Out, kw_only=True):
    host: str
    port: int
    plugin_id: int
    severity: int
    plugin_name: str
    fix: str | UnsetType = UNSET


class ScanComparison(Out, kw_only=True):
    """Two runs compared: counts first, then the top changes; never "fixed" where a login failed."""

    base: RunLine
    run: RunLine
    counts: ChangeCounts
    not_comparable_hosts: dict[str, NotComparable]
    not_comparable_reason: dict[str, str]
    top_new: list[ChangeLine]
    top_fixed: list[ChangeLine]
    top_still_open: list[ChangeLine]


class PastRun(RunLine, kw_only=True):
    severity_counts: SeverityCountsOut
    auth_status: ScanAuth | None = None


class ScanHistory(Out, kw_only=True):
    targets: list[str]
    runs: list[PastRun]


SCHEMA_TYPES: tuple[type[Out], ...] = (
    ErrorResult,
    ScanSubmitted,
    ScanStatus,
    Digest,
    PluginGroup,
    TaskList,
    ScannerList,
    PoolList,
    PoolStatus,
    QueueStatus,
    ScanResults,
    HostSummary,
    FindingDetail,
    ScheduleOut,
    ScheduleList,
    ScheduleDeleted,
    ScanRequeued,
    ScanComparison,
    ScanHistory,
)


def components(ref_template: str = "#/components/schemas/{name}") -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """Schemas for ``SCHEMA_TYPES`` (in order) with their shared definitions, as OpenAPI wants them."""
    return msgspec.json.schema_components(SCHEMA_TYPES, ref_template=ref_template)


def schema_of(kind: type[Out]) -> dict[str, Any]:
    """A self-contained JSON Schema (``$defs`` inlined by reference) for an MCP ``outputSchema``."""
    schema = msgspec.json.schema(kind)
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        defs = schema.get("$defs", {})
        schema = {**defs[name], "$defs": defs}
    return schema


REF = "#/components/schemas/{name}"


def ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(name=name)}


def rest_responses(ok: type[Out], status: int = 200) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=``: the answer and the refusal, documented from the same types."""
    error = {"description": "a refusal", "content": {"application/json": {"schema": ref("ErrorResult")}}}
    return {
        status: {"content": {"application/json": {"schema": ref(ok.__name__)}}},
        "4XX": error,
        "5XX": error,
    }


def openapi_components(*extra: type[Any]) -> dict[str, Any]:
    """Every documented type's schema (and those they use), as ``components.schemas``."""
    _, definitions = msgspec.json.schema_components((*extra, *SCHEMA_TYPES), ref_template=REF)
    return definitions
