"""The MCP tools: thin adapters from tool arguments to the gateway core."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

from scanfleet.gateway.control_tools import register_control_tools
from scanfleet.gateway.core import Gateway, SubmitScan
from scanfleet.gateway.errors import call
from scanfleet.gateway.queue_tools import register_queue_tools
from scanfleet.gateway.results import Results
from scanfleet.gateway.results_tools import register_results_tools

INSTRUCTIONS = (
    "scanfleet runs Nessus vulnerability scans on a fleet of scanners. Submitting a scan returns a "
    "task_id at once; poll get_scan_status until status is completed, failed, cancelled or timeout, then "
    "read get_scan_results. Only scan targets you are authorised to scan."
)


def build_mcp(gateway: Gateway, results: Results) -> MCPServer:
    mcp = MCPServer("scanfleet", instructions=INSTRUCTIONS)
    register_scan_tools(mcp, gateway)
    register_results_tools(mcp, results)
    register_control_tools(mcp, gateway)
    register_queue_tools(mcp, gateway)
    return mcp


def register_scan_tools(mcp: MCPServer, gateway: Gateway) -> None:

    @mcp.tool()
    async def run_untrusted_scan(
        targets: str,
        name: str,
        description: str = "",
        scanner_pool: str | None = None,
        scanner_instance: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Queue a network (unauthenticated) Nessus scan.

        targets: IPs, CIDRs, ranges (10.0.0.1-20) or host names, comma separated.
        Returns task_id, trace_id and queue_position immediately; the scan runs in the background.
        Reusing an idempotency_key returns the original task instead of a duplicate.
        """
        submit = SubmitScan(
            targets=targets,
            name=name,
            description=description,
            scanner_pool=scanner_pool,
            scanner_instance=scanner_instance,
            idempotency_key=idempotency_key,
        )
        return await call(gateway.submit(submit))

    @mcp.tool()
    async def get_scan_status(task_id: str) -> dict[str, Any]:
        """Status, progress and, once validated, a results summary with the authentication verdict."""
        return await call(gateway.status(task_id))

    @mcp.tool()
    async def list_scanners(scanner_pool: str | None = None) -> dict[str, Any]:
        """Scanners with live load, agent liveness and whether each can launch scans."""
        return await call(gateway.scanners(scanner_pool))

    @mcp.tool()
    async def list_pools() -> dict[str, Any]:
        """Scanner pools with capacity and utilization, and the default pool."""
        return await call(gateway.pools())
