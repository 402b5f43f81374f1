"""TTL housekeeping: ended tasks expire through JetStream TTLs and their delete markers.

The janitor's consumer ``janitor-terminal`` sees every terminal event and arms the task's
expiry lease (``scanfleet.common.expiry``). When a lease's TTL runs out, the server leaves
a MaxAge marker on the key; consumer ``janitor-expiry`` receives it, and if it is still the
key's last message the task's stored objects and then its record are deleted. A task that
is not ended (a retry made it queued again) is never deleted, whatever marker arrives.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg
from nats.js.errors import APIError, NotFoundError

from scanfleet.common import contract, expiry
from scanfleet.common.logs import task_context
from scanfleet.common.runtime import Runtime
from scanfleet.common.schedules import CLAIM_TIMEOUT
from scanfleet.common.tasks import TaskNotFound
from scanfleet.janitor.metrics import TTL_DELETIONS, count_ended
from scanfleet.janitor.scheduler import ClaimHeld, Scheduler

log = logging.getLogger("scanfleet.janitor")


class Housekeeper:
    def __init__(self, rt: Runtime, scheduler: Scheduler | None = None) -> None:
        self.rt = rt
        self.scheduler = scheduler

    async def on_terminal_event(self, msg: Msg) -> None:
        task_id = contract.task_of_event(msg.subject)
        record = await self.rt.tasks.get(task_id) if task_id else None
        if record is not None and record.state.terminal:
            with task_context(record.task_id, record.trace_id):
                if await expiry.arm(self.rt.js, record, self.rt.settings):
                    log.info("expiry armed for the %s task", record.state)
                try:
                    if self.scheduler is not None and await self.scheduler.rollover(record):
                        log.info("rollover queued for the hosts the %s task did not reach", record.state)
                except ClaimHeld:
                    # Redelivered once the holder's claim may be stale: taken over then if it crashed.
                    log.info("rollover claimed by another janitor; looking again later")
                    await msg.nak(delay=CLAIM_TIMEOUT.total_seconds())
                    return
            count_ended(record, contract.kind_of_event(msg.subject) or "")
        await msg.ack()

    async def on_lease_message(self, msg: Msg) -> None:
        if expiry.is_expiry_marker(msg.headers) and msg.metadata is not None:
            task_id = contract.key_of_kv_subject(contract.EXPIRY_BUCKET, msg.subject)
            current = await expiry.key_state(self.rt.js, task_id) if task_id else None
            if task_id and current is not None and current.seq == msg.metadata.sequence.stream:
                await self.expire(task_id)
        await msg.ack()

    async def expire(self, task_id: str) -> bool:
        """Delete an ended task's objects, then its record; True if anything was removed."""
        try:
            record, revision = await self.rt.tasks.read(task_id)
        except TaskNotFound:
            record, revision = None, 0
        if record is not None and not record.state.terminal:
            log.info("expiry of task %s skipped: it is %s again", task_id, record.state)
            return False
        with task_context(task_id, record.trace_id if record else None):
            removed = await self._delete_objects(task_id)
            if record is not None:
                if not await self._purge_record(task_id, revision):
                    log.info("expiry of task %s skipped: the record changed meanwhile", task_id)
                    return False
                removed = True
            if removed:
                TTL_DELETIONS.labels(state=str(record.state) if record else "unknown").inc()
                log.info("expired: task and stored results deleted")
        return removed

    async def _delete_objects(self, task_id: str) -> bool:
        removed = False
        for store_name, name in contract.task_objects(task_id):
            try:
                store = await self.rt.js.object_store(store_name)
                await store.delete(name)
            except NotFoundError:
                continue
            removed = True
        return removed

    async def _purge_record(self, task_id: str, revision: int) -> bool:
        """Purge every revision of the record, only if it is still the one that was read."""
        headers = {
            expiry.HDR_KV_OPERATION: "PURGE",
            "Nats-Rollup": "sub",
            expiry.HDR_EXPECTED_LAST_SUBJECT_SEQ: str(revision),
        }
        try:
            await self.rt.js.publish(contract.kv_subject(contract.TASKS_BUCKET, task_id), b"", headers=headers)
        except APIError as exc:
            if exc.err_code == 10071:
                return False
            raise
        return True
