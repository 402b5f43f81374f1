"""``list_tasks``: a client's own tasks, newest first, filtered by status and time, in cursor pages.

It reads the client's index (``scan_client_tasks``), never every task record: ids sort by
submission time, so time bounds and the cursor are comparisons on ids, and only the records
of the page (and of those its status filter skips) are read.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import msgspec

from scanfleet.common import client_tasks, contract
from scanfleet.common.clients import Role
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.gateway import views
from scanfleet.gateway.access import Caller, can_see_task
from scanfleet.gateway.errors import GatewayError

MAX_PAGE = 100
MAX_READ = 1000  # records read for one page at most; past it the page ends early with a cursor


class TaskQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    status: list[TaskState] | None = None
    since: datetime | None = None
    until: datetime | None = None
    client: str | None = None
    cursor: str | None = None
    limit: int = 20


def id_bound(at: datetime) -> str:
    """The smallest task id submitted at ``at`` (task ids start with their UTC timestamp)."""
    return f"{at:%Y%m%dT%H%M%S%f}"


def owner(caller: Caller, client: str | None) -> str:
    if client is None or client == caller.id:
        return caller.id
    if caller.role is Role.AGENT:
        raise GatewayError(403, "forbidden", "an agent lists only its own tasks; leave client empty")
    if not contract.NAME_RE.match(client):
        raise GatewayError(422, "invalid_client", "client ids are 1-64 of [A-Za-z0-9_-]")
    return client


def candidates(ids: list[str], query: TaskQuery) -> list[str]:
    """Ids (newest first) after the cursor and inside the time bounds."""
    low = id_bound(query.since) if query.since else None
    high = id_bound(query.until) if query.until else None
    return [
        i
        for i in ids
        if (query.cursor is None or i < query.cursor) and (low is None or i >= low) and (high is None or i < high)
    ]


async def list_tasks(rt: Runtime, caller: Caller, query: TaskQuery) -> dict[str, Any]:
    client = owner(caller, query.client)
    limit = max(1, min(MAX_PAGE, query.limit))
    ids = candidates(await client_tasks.submitted(rt.client_tasks, client), query)
    wanted = set(query.status) if query.status else None
    page: list[dict[str, Any]] = []
    read = 0
    last: str | None = None
    while ids and len(page) < limit and read < MAX_READ:
        batch, ids = ids[: limit - len(page)], ids[limit - len(page) :]
        records = await asyncio.gather(*(rt.tasks.get(i) for i in batch))
        read += len(batch)
        last = batch[-1]
        page += [views.task_line(r) for r in records if r is not None and _keep(caller, r, wanted)]
    more = bool(ids)
    return {
        "client": client,
        "tasks": page,
        "returned": len(page),
        "next_cursor": last if more and last else None,
    }


def _keep(caller: Caller, record: TaskRecord, wanted: set[TaskState] | None) -> bool:
    return can_see_task(caller, record) and (wanted is None or record.state in wanted)
