"""Admin REST routes under /v1/admin: dead letters and stats (``scanfleet dlq|stats``), scanner
restarts (``scanfleet scanners restart``) and the audit trail.

Only admins: a client with the ``admin`` role, or ``Authorization: Bearer $SCANFLEET_ADMIN_TOKEN``
(compared in constant time). Every call, and every refused attempt, is audited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine
from datetime import datetime
from typing import Any, Literal, TypeVar

import msgspec
from fastapi import APIRouter, Depends, Path, Query, Request
from nats.errors import Error as NatsError

from scanfleet.common import admin_ops as admin
from scanfleet.common import audit as trail
from scanfleet.common import scanner_ops
from scanfleet.common.clients import Role
from scanfleet.common.runtime import Runtime
from scanfleet.gateway.access import Caller
from scanfleet.gateway.errors import GatewayError, read_body
from scanfleet.gateway.guard import Guard

T = TypeVar("T")
Seq = Path(ge=1, le=2**63 - 1, description="the dead letter's sequence number in SCAN_DLQ")


class RestartBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``force``: restart even with scans in hand on the scanner (they are cut off)."""

    reason: str = ""
    force: bool = False


class PurgeBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    sequences: list[int] = []
    stage: str | None = None
    task_id: str | None = None
    all: bool = False


async def plain(call: Awaitable[T]) -> Any:
    """Run an admin operation; its refusal (or a sequence NATS rejects) becomes a 4xx."""
    try:
        return msgspec.to_builtins(await call)
    except admin.AdminError as exc:
        raise GatewayError(exc.status, exc.code, exc.message, **exc.details) from None
    except NatsError as exc:
        raise GatewayError(404, "not_found", f"no such dead letter ({type(exc).__name__})") from None


async def admin_only(caller: Caller, work: Coroutine[Any, Any, T]) -> Any:
    """The admin operation, for admins only; anyone else gets 403 and the work never starts."""
    if caller.role is not Role.ADMIN:
        work.close()
        raise GatewayError(403, "forbidden", "the admin routes need a client with the admin role")
    return await plain(work)


def admin_router(rt: Runtime, guard: Guard) -> APIRouter:
    router = APIRouter(prefix="/v1/admin")
    authenticated = Depends(guard.rest_caller)

    async def run(caller: Caller, action: str, work: Coroutine[Any, Any, T], **fields: Any) -> Any:
        return await guard.run(caller, f"admin.{action}", admin_only(caller, work), **fields)

    @router.get("/dlq")
    async def list_letters(
        stage: str | None = None, task_id: str | None = None, limit: int = 50, caller: Caller = authenticated
    ) -> dict[str, Any]:
        letters = await run(caller, "dlq_list", admin.list_letters(rt, stage=stage, task_id=task_id, limit=limit))
        return {"letters": letters, "count": len(letters)}

    @router.get("/dlq/{seq}")
    async def inspect(seq: int = Seq, caller: Caller = authenticated) -> dict[str, Any]:
        return await run(caller, "dlq_inspect", admin.inspect(rt, seq))  # type: ignore[no-any-return]

    @router.post("/dlq/{seq}/retry")
    async def retry(seq: int = Seq, caller: Caller = authenticated) -> dict[str, Any]:
        return await run(caller, "dlq_retry", admin.retry(rt, seq, actor=caller.id))  # type: ignore[no-any-return]

    @router.delete("/dlq/{seq}")
    async def delete(seq: int = Seq, caller: Caller = authenticated) -> dict[str, Any]:
        return {"purged": await run(caller, "dlq_purge", admin.purge(rt, seqs=[seq]))}

    @router.post("/dlq/purge")
    async def purge(request: Request, caller: Caller = authenticated) -> dict[str, Any]:
        async def work() -> int:
            body = await read_body(request, PurgeBody, b"{}")
            if any(s < 1 for s in body.sequences):
                raise GatewayError(422, "invalid_request", "sequence numbers start at 1")
            return await admin.purge(
                rt, seqs=body.sequences, stage=body.stage, task_id=body.task_id, everything=body.all
            )

        return {"purged": await run(caller, "dlq_purge", work())}

    @router.get("/stats")
    async def stats(caller: Caller = authenticated) -> dict[str, Any]:
        return await run(caller, "stats", admin.stats(rt))  # type: ignore[no-any-return]

    @router.post("/scanners/{pool}/{instance}/restart")
    async def restart_scanner(pool: str, instance: str, request: Request, caller: Caller = authenticated) -> Any:
        """Restart a container-managed scanner's container, through the agent that serves it."""

        async def work() -> Any:
            body = await read_body(request, RestartBody, b"{}")
            return await scanner_ops.restart(rt, pool, instance, actor=caller.id, reason=body.reason, force=body.force)

        return await run(caller, "scanner_restart", work(), pool=pool[:64], scanner=instance[:64])

    @router.get("/audit")
    async def audit(
        client: str | None = None,
        task_id: str | None = None,
        action: str | None = None,
        decision: Literal["allow", "deny"] | None = None,
        since: datetime | None = None,
        limit: int = Query(100, ge=1, le=1000),
        caller: Caller = authenticated,
    ) -> dict[str, Any]:
        """The newest matching audit records, oldest first."""
        query = trail.AuditQuery(
            client=client, task_id=task_id, action=action, decision=decision, since=since, limit=limit
        )
        records = await run(caller, "audit_read", trail.read(rt.js, query))
        return {"records": records, "count": len(records)}

    return router
