"""Admin REST routes under /v1/admin: the dead-letter and stats operations of ``scanfleet dlq|stats``.

Refused (403) unless ``SCANFLEET_ADMIN_TOKEN`` is set, and then only with
``Authorization: Bearer <token>``: retry and purge change the pipeline's state.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec
from fastapi import APIRouter, Depends, Header, Request

from scanfleet.common import admin_ops as admin
from scanfleet.common.runtime import Runtime
from scanfleet.gateway.core import GatewayError

T = TypeVar("T")


class PurgeBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    sequences: list[int] = []
    stage: str | None = None
    task_id: str | None = None
    all: bool = False


async def guard(call: Awaitable[T]) -> Any:
    """Run an admin operation; its refusal becomes the gateway's usual JSON error."""
    try:
        return msgspec.to_builtins(await call)
    except admin.AdminError as exc:
        raise GatewayError(exc.status, exc.code, exc.message) from None


def admin_router(rt: Runtime) -> APIRouter:
    token = rt.settings.admin_token

    def authorise(authorization: str | None = Header(default=None)) -> None:
        if not token:
            raise GatewayError(403, "admin_disabled", "set SCANFLEET_ADMIN_TOKEN to enable /v1/admin")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise GatewayError(401, "unauthorized", "send Authorization: Bearer <admin token>")

    router = APIRouter(prefix="/v1/admin", dependencies=[Depends(authorise)])

    @router.get("/dlq")
    async def list_letters(stage: str | None = None, task_id: str | None = None, limit: int = 50) -> dict[str, Any]:
        letters = await guard(admin.list_letters(rt, stage=stage, task_id=task_id, limit=limit))
        return {"letters": letters, "count": len(letters)}

    @router.get("/dlq/{seq}")
    async def inspect(seq: int) -> dict[str, Any]:
        return await guard(admin.inspect(rt, seq))  # type: ignore[no-any-return]

    @router.post("/dlq/{seq}/retry")
    async def retry(seq: int) -> dict[str, Any]:
        return await guard(admin.retry(rt, seq, actor="rest-admin"))  # type: ignore[no-any-return]

    @router.delete("/dlq/{seq}")
    async def delete(seq: int) -> dict[str, Any]:
        return {"purged": await guard(admin.purge(rt, seqs=[seq]))}

    @router.post("/dlq/purge")
    async def purge(request: Request) -> dict[str, Any]:
        try:
            body = msgspec.json.decode(await request.body() or b"{}", type=PurgeBody)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise GatewayError(422, "invalid_request", str(exc)) from None
        removed = await guard(
            admin.purge(rt, seqs=body.sequences, stage=body.stage, task_id=body.task_id, everything=body.all)
        )
        return {"purged": removed}

    @router.get("/stats")
    async def stats() -> dict[str, Any]:
        return await guard(admin.stats(rt))  # type: ignore[no-any-return]

    return router
