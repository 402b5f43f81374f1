"""Each client's tasks, kept beside the task records (KV ``scan_client_tasks``).

``task.<client>.<task_id>`` is written once per submission, so a client's list reads only its
own keys. ``active.<client>`` holds the ids of its unended tasks, changed by compare-and-set:
the gateway adds a task only while the list is under the client's limit, and ``end_task``
removes it, so the limit holds across gateway replicas. A task that ended without being
removed (a crash between the two writes) is pruned when the limit is reached, after its record
says it has ended.

A writer that lost a compare-and-set waits a random moment, growing with each round, before
it reads again: every submission and every ended task of one client writes the same key, and
on a cluster (a longer round trip) twelve writers retrying in lockstep used up every round.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import msgspec
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from scanfleet.common import contract
from scanfleet.common.bus import kv_create, kv_get, kv_items
from scanfleet.common.tasks import TaskStore

StillActive = Callable[[list[str]], Awaitable[list[str]]]
MAX_CAS_ROUNDS = 50


class Active(msgspec.Struct):
    tasks: list[str] = msgspec.field(default_factory=list)


async def _read(kv: KeyValue, client: str) -> tuple[Active, int | None]:
    entry = await kv_get(kv, contract.client_active_key(client))
    if entry is None or entry.value is None:
        return Active(), None
    return msgspec.json.decode(entry.value, type=Active), entry.revision


async def _back_off(round_: int) -> None:
    await asyncio.sleep(random.uniform(0, min(0.25, 0.002 * 2**round_)))


async def _write(kv: KeyValue, client: str, active: Active, revision: int | None) -> bool:
    key, value = contract.client_active_key(client), msgspec.json.encode(active)
    try:
        if revision is None:
            await kv_create(kv, key, value)
        else:
            await kv.update(key, value, last=revision)
    except KeyWrongLastSequenceError:
        return False
    return True


async def claim_active(kv: KeyValue, client: str, task_id: str, limit: int, still_active: StillActive) -> int | None:
    """Count ``task_id`` against the client's limit; None when that would exceed it, else the
    number of the client's active tasks including this one."""
    for round_ in range(MAX_CAS_ROUNDS):
        active, revision = await _read(kv, client)
        if task_id in active.tasks:
            return len(active.tasks)
        if len(active.tasks) >= limit:
            alive = await still_active(active.tasks)
            if len(alive) >= limit:
                return None
            active.tasks = alive
        active.tasks.append(task_id)
        if await _write(kv, client, active, revision):
            return len(active.tasks)
        await _back_off(round_)
    raise RuntimeError(f"active tasks of {client}: too much contention")


def unended_in(tasks: TaskStore) -> StillActive:
    """``claim_active``'s pruning check: the ids whose task records say they have not ended."""

    async def still_active(ids: list[str]) -> list[str]:
        records = await asyncio.gather(*(tasks.get(i) for i in ids))
        return [r.task_id for r in records if r is not None and not r.state.terminal]

    return still_active


async def release_active(kv: KeyValue, client: str, task_id: str) -> None:
    for round_ in range(MAX_CAS_ROUNDS):
        active, revision = await _read(kv, client)
        if task_id not in active.tasks:
            return
        active.tasks.remove(task_id)
        if await _write(kv, client, active, revision):
            return
        await _back_off(round_)
    raise RuntimeError(f"active tasks of {client}: too much contention")


async def active_tasks(kv: KeyValue, client: str) -> list[str]:
    return (await _read(kv, client))[0].tasks


async def record_submission(kv: KeyValue, client: str, task_id: str) -> None:
    await kv.put(contract.client_task_key(client, task_id), b"1")


async def submitted(kv: KeyValue, client: str) -> list[str]:
    """The client's task ids, newest first (task ids sort by submission time)."""
    prefix = contract.client_tasks_prefix(client)
    return sorted((key[len(prefix) :] for key in await kv_items(kv, prefix)), reverse=True)
