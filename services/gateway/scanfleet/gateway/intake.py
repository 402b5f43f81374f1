"""Claim, record and queue one admitted submission so that a crash at any step is repaired.

The steps run in this order: idempotency claim, active-limit claim, audit, task record,
client history and QUEUED event, request. A gateway may die between any two of them; a
retry with the same idempotency key then completes the same task:

- claim without record: the retry adopts the claimed task id and carries on (within
  ``ADOPT_WITHIN`` of the claim; an older claim's record has expired, which stays a 409);
- record without request: the retry publishes the request, only if the stream has none
  for the task (``enqueue(if_absent=True)``), so a request is never doubled. A publish NATS
  did not take (a cluster electing the stream's leader) leaves the same state, so a keyed
  submission's task is not failed then: the client is told to retry with its key.

Two retries racing each other meet at the record's create-only write: one writes, the
other answers with the record as a repeat.

``crash`` is a test hook called after each step; it raises ``Crash`` to stop the
submission there as a killed process would: no clean-up runs after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec
from nats.js.errors import KeyWrongLastSequenceError

from scanfleet.common import client_tasks
from scanfleet.common.bus import kv_get
from scanfleet.common.contract import EventKind
from scanfleet.common.messages import SealedCredentials
from scanfleet.common.runtime import Runtime
from scanfleet.common.task_ops import enqueue
from scanfleet.common.tasks import TaskRecord, TaskState
from scanfleet.gateway.errors import GatewayError, bus_unavailable

Step = Literal["claimed", "admitted", "audited", "recorded", "announced", "published"]
STEPS: tuple[Step, ...] = ("claimed", "admitted", "audited", "recorded", "announced", "published")


class Crash(BaseException):
    """Raised by a test's crash hook: the submission stops as if the process died."""


def no_crash(step: Step) -> None:
    return None


class IdempotencyClaim(msgspec.Struct, kw_only=True):
    task_id: str
    request_hash: str


ADOPT_WITHIN = timedelta(minutes=10)


def recent(task_id: str, now: datetime) -> bool:
    """Task ids start with their submission time (``tasks.new_task_id``)."""
    try:
        at = datetime.strptime(task_id.split("-", 1)[0], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
    except ValueError:
        return False
    return now - at <= ADOPT_WITHIN


Audit = Callable[[str], Awaitable[None]]
AdmitActive = Callable[[str], Awaitable[None]]
Seal = Callable[[str], SealedCredentials | None]


@dataclasses.dataclass
class Intake:
    rt: Runtime
    crash: Callable[[Step], None] = no_crash

    async def queue(
        self,
        record: TaskRecord,
        *,
        key_hash: str | None,
        digest: str,
        admit_active: AdmitActive,
        audit: Audit,
        seal: Seal,
    ) -> tuple[TaskRecord, bool]:
        """Queue ``record`` (or finish the task a previous try with this key started).

        Returns the task's record and whether it is a repeat of an earlier submission.
        ``seal`` seals the request's credentials for the task id that is finally used.
        """
        if key_hash is not None:
            claimed = await self._claim(key_hash, record.task_id, digest)
            self.crash("claimed")
            if claimed is not None:
                existing = await self.rt.tasks.get(claimed)
                if existing is not None:
                    await audit(existing.task_id)
                    await self._repair(existing, seal)
                    return existing, True
                if not recent(claimed, record.created_at):
                    raise GatewayError(409, "idempotency_conflict", "the task of this idempotency_key no longer exists")
                record = msgspec.structs.replace(record, task_id=claimed)
        await admit_active(record.task_id)
        self.crash("admitted")
        submitter = record.submitted_by
        try:
            await audit(record.task_id)
            self.crash("audited")
            await self.rt.tasks.create(record)
        except Crash:
            raise
        except KeyWrongLastSequenceError as exc:
            # Another retry of the same key wrote the record first: this is a repeat of it.
            existing = await self.rt.tasks.get(record.task_id)
            if existing is None:  # read from a replica the write has not reached yet
                raise bus_unavailable() from exc
            await self._repair(existing, seal)
            return existing, True
        except BaseException:
            if submitter is not None:
                await client_tasks.release_active(self.rt.client_tasks, submitter, record.task_id)
            raise
        self.crash("recorded")
        await self._announce(record)
        self.crash("announced")
        await enqueue(
            self.rt,
            record,
            credentials=seal(record.task_id),
            credential_ref=record.credential_ref,
            fail_task=key_hash is None,  # with a key, the client's retry completes this very task
        )
        self.crash("published")
        return record, False

    async def _announce(self, record: TaskRecord) -> None:
        """The client's history entry and the QUEUED event, side by side; both are idempotent."""
        steps = [self.rt.publish_event(record, EventKind.QUEUED)]
        if record.submitted_by is not None:
            steps.append(client_tasks.record_submission(self.rt.client_tasks, record.submitted_by, record.task_id))
        await asyncio.gather(*steps)

    async def _repair(self, record: TaskRecord, seal: Seal) -> None:
        """A first try's record may lack its event or its request: add them, never twice."""
        if record.state is not TaskState.QUEUED or record.retries != 0:
            return
        await self._announce(record)
        await enqueue(
            self.rt,
            record,
            credentials=seal(record.task_id),
            credential_ref=record.credential_ref,
            if_absent=True,
            fail_task=False,
        )

    async def _claim(self, key_hash: str, task_id: str, digest: str) -> str | None:
        """Claim the idempotency key; a repeat returns the claimed task id, a different request 409."""
        claim = msgspec.json.encode(IdempotencyClaim(task_id=task_id, request_hash=digest))
        try:
            await self.rt.idempotency.create(key_hash, claim)
            return None
        except KeyWrongLastSequenceError:
            pass
        entry = await kv_get(self.rt.idempotency, key_hash)
        if entry is None or entry.value is None:
            await self.rt.idempotency.put(key_hash, claim)
            return None
        previous = msgspec.json.decode(entry.value, type=IdempotencyClaim)
        if previous.request_hash != digest:
            raise GatewayError(
                409,
                "idempotency_conflict",
                "this idempotency_key was already used for a different request",
                task_id=previous.task_id,
            )
        return previous.task_id
