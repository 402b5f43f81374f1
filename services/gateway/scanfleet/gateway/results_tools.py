"""MCP tools and REST routes for scan results: thin adapters over ``results.Results``."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Query
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult

from scanfleet.gateway.access import Caller
from scanfleet.gateway.errors import GatewayError
from scanfleet.gateway.findings_query import DEFAULT_PAGE_SIZE, FILTER_KEYS, MAX_PAGE_SIZE
from scanfleet.gateway.guard import Guard
from scanfleet.gateway.results import Results
from scanfleet.gateway.schemas import FindingDetail, HostSummary, ScanResults, rest_responses
from scanfleet.gateway.toolkit import READ, ScanfleetMCP, structured


async def compact(result: Awaitable[dict[str, Any]]) -> CallToolResult:
    """Compact JSON (the SDK would indent it) as text and as structured content."""
    return structured(await result)


def register_results_tools(mcp: ScanfleetMCP, results: Results, guard: Guard) -> None:
    @mcp.scan_tool("Scan findings", ScanResults, READ)
    async def get_scan_results(
        task_id: str,
        filters: dict[str, Any] | None = None,
        sort: str | None = None,
        schema_profile: str = "summary",
        custom_fields: list[str] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        group_by: Literal["plugin"] | None = None,
        *,
        ctx: Context[Any, Any],
    ) -> CallToolResult:
        """Findings of a finished scan, filtered, sorted and paged. The first key, summary, has totals,
        counts by severity (whole scan and matched) and the authentication status.

        filters (all optional, combined with AND):
          severity: 0-4 or info/low/medium/high/critical, a list ([3, 4]) or a comparison (">=3");
          cvss, cvss3, vpr, epss: a number, ">=7", "7..10" or [min, max] (findings without that score never match);
          cve: "CVE-2021-44228" or a list; exploit_available: true/false;
          host: exact IP, CIDR ("10.0.0.0/24") or exact host name/FQDN, or a list (never a substring);
          port, plugin_id: an integer or a list; plugin_family, protocol: exact name or a list;
          text: words searched in plugin name and synopsis.
        sort: comma-separated keys, '-' for descending; default "-severity,-cvss3,-cvss".
          Keys: severity, cvss3, cvss, vpr, epss, host, port, plugin_id, plugin_name.
        schema_profile: minimal | summary (default) | brief | full; custom_fields picks exact fields instead.
        page_size: 1-200 (default 10). Pass page.next_cursor back as cursor, with the same filters and sort,
        for the next page. For one finding's complete plugin output use get_finding.
        group_by: "plugin" gives one row per plugin across hosts (severity, CVSS, CVEs, exploit, hosts
        affected and the first few, the solution in one line) under "plugins" instead of "findings".
        """
        return await compact(
            guard.tool(
                ctx,
                "get_scan_results",
                lambda caller: results.scan_results(
                    caller,
                    task_id,
                    filters=filters,
                    sort=sort,
                    profile=schema_profile,
                    custom_fields=custom_fields,
                    page_size=page_size,
                    cursor=cursor,
                    group_by=group_by,
                ),
                task_id=task_id,
            )
        )

    @mcp.scan_tool("Host results", HostSummary, READ)
    async def get_host_summary(
        task_id: str, host: str | None = None, page_size: int = 50, cursor: str | None = None, *, ctx: Context[Any, Any]
    ) -> CallToolResult:
        """Per-host results: without host, every scanned host with OS, severity counts and authentication
        verdict (success | failed | partial | not_attempted | not_evaluable), paged. With host (IP or name),
        that host's properties, the evidence behind its authentication verdict and its top findings."""
        return await compact(
            guard.tool(
                ctx,
                "get_host_summary",
                lambda caller: results.host_summary(caller, task_id, host, page_size=page_size, cursor=cursor),
                task_id=task_id,
            )
        )

    @mcp.scan_tool("One finding in full", FindingDetail, READ)
    async def get_finding(
        task_id: str, host: str, plugin_id: int, port: int | None = None, *, ctx: Context[Any, Any]
    ) -> CallToolResult:
        """One plugin's result on one host (every port it reported on, or just port), with the whole
        description, solution and plugin output."""
        return await compact(
            guard.tool(
                ctx,
                "get_finding",
                lambda caller: results.finding(caller, task_id, host, plugin_id, port),
                task_id=task_id,
            )
        )


@dataclass
class FilterParams:
    """The filters as query parameters, named as in the tool; FastAPI reads them from ``__init__``."""

    severity: str | None = None
    cvss: str | None = None
    cvss3: str | None = None
    vpr: str | None = None
    epss: str | None = None
    cve: str | None = None
    exploit_available: str | None = None
    host: str | None = None
    port: str | None = None
    protocol: str | None = None
    plugin_id: str | None = None
    plugin_family: str | None = None
    text: str | None = None
    filters: str | None = Query(None, description="all filters as one JSON object instead")

    def chosen(self) -> dict[str, Any]:
        chosen: dict[str, Any] = {k: getattr(self, k) for k in FILTER_KEYS if getattr(self, k) is not None}
        if self.filters:
            try:
                decoded = msgspec.json.decode(self.filters)
            except msgspec.DecodeError as exc:
                raise GatewayError(422, "invalid_filter", f"filters is not JSON: {exc}") from None
            if not isinstance(decoded, dict):
                raise GatewayError(422, "invalid_filter", "filters must be a JSON object")
            chosen.update(decoded)
        return chosen


assert tuple(f.name for f in fields(FilterParams))[:-1] == FILTER_KEYS


def results_router(results: Results, guard: Guard) -> APIRouter:
    """``/v1/scans/{task_id}/results|hosts|findings``; filters are query parameters named as in the tool."""
    router = APIRouter(prefix="/v1/scans")
    authenticated = Depends(guard.rest_caller)

    @router.get("/{task_id}/results", responses=rest_responses(ScanResults))
    async def scan_results(
        task_id: str,
        filters: Annotated[FilterParams, Depends()],
        caller: Caller = authenticated,
        sort: str | None = None,
        profile: str = "summary",
        fields: str | None = Query(None, description="comma-separated custom fields"),
        page_size: int = Query(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
        cursor: str | None = None,
        group_by: Literal["plugin"] | None = None,
    ) -> dict[str, Any]:
        async def work() -> dict[str, Any]:
            return await results.scan_results(
                caller,
                task_id,
                filters=filters.chosen(),
                sort=sort,
                profile=profile,
                custom_fields=[f.strip() for f in fields.split(",") if f.strip()] if fields else None,
                page_size=page_size,
                cursor=cursor,
                group_by=group_by,
            )

        return await guard.run(caller, "get_scan_results", work(), task_id=task_id)

    @router.get("/{task_id}/hosts", responses=rest_responses(HostSummary))
    async def hosts(
        task_id: str,
        caller: Caller = authenticated,
        page_size: int = Query(50, ge=1, le=MAX_PAGE_SIZE),
        cursor: str | None = None,
    ) -> dict[str, Any]:
        work = results.host_summary(caller, task_id, page_size=page_size, cursor=cursor)
        return await guard.run(caller, "get_host_summary", work, task_id=task_id)

    @router.get("/{task_id}/hosts/{host}", responses=rest_responses(HostSummary))
    async def one_host(task_id: str, host: str, caller: Caller = authenticated) -> dict[str, Any]:
        return await guard.run(caller, "get_host_summary", results.host_summary(caller, task_id, host), task_id=task_id)

    @router.get("/{task_id}/findings/{host}/{plugin_id}", responses=rest_responses(FindingDetail))
    async def finding(
        task_id: str, host: str, plugin_id: int, caller: Caller = authenticated, port: int | None = None
    ) -> dict[str, Any]:
        work = results.finding(caller, task_id, host, plugin_id, port)
        return await guard.run(caller, "get_finding", work, task_id=task_id)

    return router
