"""Operator actions on scanners, shared by ``scanfleet scanners`` and ``/v1/admin/scanners``.

A library, not part of any service. Only the agent serving a scanner talks to its container
engine, so a restart is a request to that agent over NATS (``contract.scanner_restart_subject``,
core request-reply): the answer is the outcome, and no agent, or none answering in time, is a
refusal the operator sees at once. The callers record the call in the audit trail.
"""

from __future__ import annotations

import msgspec
import nats.errors

from scanfleet.common import contract
from scanfleet.common.admin_ops import AdminError
from scanfleet.common.bus import kv_get
from scanfleet.common.messages import RestartRefusal, RestartRequest, RestartResult, decode, encode, utcnow
from scanfleet.common.runtime import Runtime

# Long enough for a container's default stop timeout (30 s) and its start; a restart that takes
# longer is reported as not answered in time, and may still complete.
RESTART_TIMEOUT = 120.0
MAX_REASON = 500

# HTTP status of each refusal an agent can give.
REFUSAL_STATUS: dict[RestartRefusal, int] = {
    "not_container_managed": 409,
    "restart_in_progress": 409,
    "scanner_busy": 409,
    "container_not_found": 409,
    "engine_unreachable": 503,
    "restart_failed": 502,
}


async def restart(
    rt: Runtime,
    pool: str,
    instance: str,
    *,
    actor: str,
    reason: str = "",
    force: bool = False,
    wait: float = RESTART_TIMEOUT,
) -> RestartResult:
    """Ask the agent serving ``pool/instance`` to restart its container; the result once done.

    Raises ``AdminError`` for an unknown scanner, no agent, no answer in time, and every refusal
    or failure the agent reports (``tasks`` names the scans a forced restart would cut off).
    """
    name = f"{pool}/{instance}"
    if not (contract.NAME_RE.match(pool) and contract.NAME_RE.match(instance)):
        raise AdminError(404, "scanner_not_found", f"{name!r} is not a scanner name (<pool>/<id>)")
    if await kv_get(rt.registry, contract.instance_key(pool, instance)) is None:
        raise AdminError(404, "scanner_not_found", f"no scanner {name} in the registry")
    request = RestartRequest(
        pool=pool, instance=instance, requested_by=actor, reason=reason[:MAX_REASON], force=force, at=utcnow()
    )
    subject = contract.scanner_restart_subject(pool, instance)
    try:
        reply = await rt.nc.request(subject, encode(request), timeout=wait)
    except nats.errors.NoRespondersError:
        raise AdminError(503, "no_agent", f"no agent serves {name} now; nothing was restarted") from None
    except nats.errors.TimeoutError:
        raise AdminError(
            504,
            "agent_timeout",
            f"the agent of {name} did not answer within {wait:g}s; the restart may still be under way",
        ) from None
    try:
        result = decode(reply.data, RestartResult)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise AdminError(502, "restart_failed", f"the agent of {name} answered something unreadable: {exc}") from None
    if result.outcome != "restarted":
        code: RestartRefusal = result.code or "restart_failed"
        details = {"tasks": result.tasks} if result.tasks else {}
        raise AdminError(REFUSAL_STATUS[code], code, f"{name}: {result.message}", **details)
    return result
