"""Nessus hygiene: the agent deletes the Nessus scans scanfleet created, and no other.

Every scan an agent creates is written to KV ``scan_nessus_scans`` (``<pool>.<instance>.<scan_id>``
with its task and name). A sweep deletes a listed scan once its task no longer needs it: the
export is stored and announced (the task is validating or ended), or the task ended without
one, and the configured ``nessus_keep_days`` have passed since; at the latest when the task
itself has expired. Before deleting, the scan's name on Nessus must still be the recorded one:
a scan that is not on the list, or whose id now names something else, is never touched.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import msgspec

from scanfleet.agent.nessus import NessusClient, NessusConflict, NessusError, NessusNotFound
from scanfleet.common import contract
from scanfleet.common.aio import honour_cancel
from scanfleet.common.bus import kv_items
from scanfleet.common.messages import utcnow
from scanfleet.common.runtime import Runtime
from scanfleet.common.tasks import TaskRecord, TaskState

log = logging.getLogger("scanfleet.agent.hygiene")


class CreatedScan(msgspec.Struct, kw_only=True):
    task_id: str
    name: str
    scan_id: int
    created_at: datetime


async def remember(rt: Runtime, pool: str, instance: str, task_id: str, name: str, scan_id: int) -> None:
    entry = CreatedScan(task_id=task_id, name=name, scan_id=scan_id, created_at=utcnow())
    await rt.nessus_scans.put(contract.nessus_scan_key(pool, instance, scan_id), msgspec.json.encode(entry))


def due(record: TaskRecord | None, keep: timedelta, now: datetime) -> bool:
    """May the task's Nessus scan go? Gone task: yes. Export stored, or ended without one: after ``keep``."""
    if record is None:
        return True
    if record.state is TaskState.VALIDATING:
        return keep <= timedelta(0)
    if not record.state.terminal:
        return False
    return now - (record.finished_at or record.updated_at) >= keep


async def sweep(rt: Runtime, client: NessusClient, pool: str, instance: str, now: datetime | None = None) -> list[int]:
    """Delete the listed scans that are due; returns their ids."""
    now = now or utcnow()
    keep = timedelta(days=rt.settings.nessus_keep_days)
    deleted = []
    for key, raw in (await kv_items(rt.nessus_scans, contract.nessus_scans_prefix(pool, instance))).items():
        entry = msgspec.json.decode(raw, type=CreatedScan)
        if not due(await rt.tasks.get(entry.task_id), keep, now):
            continue
        try:
            details = await client.scan_details(entry.scan_id)
            if details.name != entry.name:
                log.warning("Nessus scan %s is no longer %s; not touching it", entry.scan_id, entry.name)
            else:
                await client.delete(entry.scan_id)
                deleted.append(entry.scan_id)
                log.info("deleted Nessus scan %s of task %s", entry.scan_id, entry.task_id)
        except NessusNotFound:
            pass
        except NessusConflict:
            continue  # still stopping: next sweep
        except NessusError as exc:
            log.warning("could not delete Nessus scan %s: %s", entry.scan_id, exc)
            continue
        await rt.nessus_scans.delete(key)
    return deleted


async def sweep_forever(rt: Runtime, client: NessusClient, pool: str, instance: str) -> None:
    while True:
        honour_cancel()
        try:
            await sweep(rt, client, pool, instance)
        except Exception:
            log.exception("Nessus hygiene sweep failed; trying again next round")
        await asyncio.sleep(rt.settings.nessus_sweep_interval)
