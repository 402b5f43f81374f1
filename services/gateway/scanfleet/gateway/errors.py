"""Refusals the caller can act on, and how they reach REST (JSON + status) and MCP (tool errors)."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request

T = TypeVar("T")


class GatewayError(Exception):
    """A refusal the caller can act on; ``status`` maps to HTTP, ``details`` helps fix it."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details, "next_steps": next_steps(self.code)}


NEXT_STEPS: dict[str, str] = {
    # Authentication and access
    "unauthorized": "Send Authorization: Bearer <token> with a valid API token or OAuth access token.",
    "forbidden": "This needs another role; ask an operator or use a client with that role.",
    "invalid_client": "Check the client id with list_clients (admin) and try again.",
    "confirmation_required": "Ask a human to confirm: call this tool from an MCP client that supports elicitation.",
    "not_confirmed": "Nothing was queued. Ask the user what to change (fewer targets, another scan type) first.",
    # Scope and admission
    "target_denied": (
        "Remove the target: it is never scanned (loopback, link-local and cloud metadata, multicast, broadcast, "
        "scanfleet's own hosts) or resolves into such space. Do not retry it in another form."
    ),
    "target_excluded": "Remove the target: the fleet's configuration excludes it permanently (see 'reason').",
    "target_unreachable": "Pick a pool whose ranges contain every target (see 'pools'), or split the scan by pool.",
    "priority_not_allowed": "Use a priority up to this client's max_priority, or ask an operator to raise it.",
    "target_out_of_scope": "Scan only targets inside 'allowed'; ask an operator to widen the scope if needed.",
    "pool_not_allowed": "Pick a pool from list_pools; this client may not use that one.",
    "scan_type_not_allowed": "Use a scan type in 'allowed.scan_types', or ask an operator to grant it.",
    "credential_ref_not_allowed": "Use a credential_ref in 'allowed.credential_refs', or give inline credentials.",
    "scan_too_large": "Split the targets into scans of at most 'allowed.max_targets' addresses.",
    "no_scope": "This client may scan nothing yet; ask an operator to grant targets.",
    "rate_limited": "Wait Retry-After seconds, then submit again.",
    "too_many_active": "Wait for a scan to end (get_scan_status with wait_seconds) or cancel one, then retry.",
    # Submission
    "invalid_arguments": "Correct the named fields to match the tool's input schema and call again.",
    "invalid_request": "Fix the request body to match the documented schema and send it again.",
    "invalid_name": "Give a name of 1 to 200 characters.",
    "invalid_description": "Shorten the description to 2000 characters or fewer.",
    "invalid_targets": "Give IPs, CIDRs, ranges (10.0.0.1-20) or host names, comma separated.",
    "targets_too_long": "Split the target list into several scans.",
    "too_many_targets": "Split the target list into several scans.",
    "invalid_credentials": "Give credential_ref, or username with password or private_key (escalation for privileged).",
    "unknown_pool": "Use one of 'valid_pools' (list_pools shows them) or leave scanner_pool out.",
    "unknown_instance": "Use one of 'valid_instances' or leave scanner_instance out.",
    "no_scanners": "No scanner is registered yet; try again later or ask an operator.",
    "idempotency_conflict": "Use a new idempotency_key for a different request, or read the task named here.",
    "enqueue_failed": "Nothing was queued; submit the same request again (reuse the idempotency_key).",
    # Tasks and results
    "task_not_found": "Check the task_id; list_tasks shows this client's scans.",
    "not_ready": "Wait for completion: get_scan_status with wait_seconds, then read the results.",
    "no_results": "The scan ended without findings; read get_scan_status for the reason and troubleshooting.",
    "host_not_found": "Use a host from 'hosts' or from get_host_summary.",
    "finding_not_found": "Use a port from 'ports_with_this_plugin', or list findings with get_scan_results.",
    "findings_corrupt": "Report this to an operator with the task_id; the stored findings cannot be read.",
    "invalid_filter": "Correct the filter as the message says (see get_scan_results' description).",
    "invalid_cursor": "Repeat the first page's call without cursor, with the same filters and sort.",
    "invalid_sort": "Use sort keys from the message ('-' for descending), comma separated.",
    "credentials_unavailable": "Use a credential_ref instead of inline credentials, or ask an operator to set keys.",
    "invalid_profile": "Use schema_profile minimal, summary, brief or full.",
    "invalid_fields": "Use field names from the message in custom_fields.",
    "invalid_group_by": "Use group_by 'plugin', or leave it out for one row per finding.",
    "cannot_cancel": "The scan already ended or is ending; read get_scan_status.",
    "cannot_pause": "Only a running scan can be paused; read get_scan_status.",
    "cannot_resume": "Only a paused scan can be resumed; read get_scan_status.",
    # Scan history
    "schedule_not_found": "Check the schedule_id; list_schedules shows this client's schedules.",
    "invalid_schedule": "Give either cron (5 fields) or an RFC 5545 rrule, and an IANA timezone (e.g. Europe/Paris).",
    "not_rollable": "Only a cancelled or timed-out scan rolls over; use rescan to run a scan again.",
    "no_host_status": "scanfleet has no per-host status for this scan; use rescan to scan all its targets again.",
    "nothing_left": "Every host was scanned; read the results, or use rescan to scan again.",
    "credentials_inline": "Submit the scan anew with credentials, or with a credential_ref so it can be repeated.",
    # Service
    "audit_unavailable": "Nothing was done; try again shortly.",
    "service_unavailable": (
        "Try again in a few seconds (Retry-After); a submission sent again with the same idempotency_key "
        "is queued once, whatever the first try got done."
    ),
    "internal_error": "Try again; if it persists, report the time and tool to an operator.",
    "not_found": "Check the path and identifier.",
    "invalid_host": "Call the gateway by a host name it is configured for (SCANFLEET_PUBLIC_URL).",
    "invalid_origin": "Send requests from an allowed origin, or without an Origin header from a server-side client.",
    "unsupported_media_type": "Send the body as JSON with Content-Type: application/json.",
    "body_too_large": "Send a smaller body: split the targets into several scans.",
    "cursor_mismatch": "Repeat the query without cursor (same filters and sort) to start from the first page.",
    "letter_not_found": "List the dead letters again (GET /v1/admin/dlq); this one is gone.",
    "not_retryable": "Only failed or timed-out tasks can be retried; read the task's status.",
    "nothing_selected": "Select dead letters by id, task, stage or reason.",
    "task_gone": "The task expired; submit the scan again.",
    "no_task": "This dead letter names no task; inspect it instead of retrying.",
    "tool_refused": "Read the message; call the tool again once what it names is in place.",
}
"""What an agent can do about each refusal: one table, so every error carries its ``next_steps``."""

DEFAULT_NEXT_STEPS = "Read the message, correct the request, and try again."


def next_steps(code: str) -> str:
    return NEXT_STEPS.get(code, DEFAULT_NEXT_STEPS)


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def safe_message(message: str) -> str:
    """A validation message without the values it quotes (msgspec quotes values, and backticks
    types and paths): a value typed into the wrong field may be a secret."""
    return _QUOTED.sub("<value>", message)


async def read_body(request: Request, kind: type[T], empty: bytes | None = None) -> T:
    """Decode a JSON body into ``kind``; a malformed one is a 422 that never echoes a value."""
    raw = await request.body()
    try:
        return msgspec.json.decode(raw or empty or b"", type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise GatewayError(422, "invalid_request", safe_message(str(exc))) from None


RETRY_AFTER_UNAVAILABLE = "2"


def unavailable(exc: BaseException) -> GatewayError:
    """NATS did not answer (``bus.UNAVAILABLE``): a 503 to retry, never a 500."""
    return GatewayError(
        503,
        "service_unavailable",
        f"scanfleet's message bus did not answer ({type(exc).__name__}): a server or a stream "
        "leader is failing over; try again",
        headers={"Retry-After": RETRY_AFTER_UNAVAILABLE},
    )


def tool_error(exc: GatewayError) -> ToolError:
    """The same JSON a REST client gets, so an agent can read the code and what it may do instead."""
    return ToolError(msgspec.json.encode(exc.as_dict()).decode())


async def call(coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await coro
    except GatewayError as exc:
        raise tool_error(exc) from None
