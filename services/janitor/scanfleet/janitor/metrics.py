"""The janitor's metrics: outcomes and durations of ended scans, the DLQ, stuck work, TTL deletions.

The janitor owns them because it already reads every terminal event (``janitor-terminal``),
every dead letter and every task record (the sweep), exactly once for the whole system.
"""

from __future__ import annotations

import json
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from datetime import datetime

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Gauge

from scanfleet.common import contract
from scanfleet.common.messages import DeadLetter, decode
from scanfleet.common.metrics import SCANS, TASK_DURATION
from scanfleet.common.tasks import TaskRecord, TaskState

TTL_DELETIONS = Counter(
    "nessus_ttl_deletions",
    "Ended tasks deleted with their stored results when their retention ran out, by final state",
    ["state"],
)
STALE_ENDED = Counter("nessus_stale_tasks", "Tasks the janitor ended because they were stuck, by reason", ["reason"])
DLQ_SIZE = Gauge("nessus_dlq_size", "Dead letters in SCAN_DLQ")
POOL_DLQ_DEPTH = Gauge("nessus_pool_dlq_depth", "Dead letters in SCAN_DLQ by the pool of the failed task", ["pool"])
TASKS = Gauge("nessus_tasks", "Task records by state, as of the last sweep", ["state"])
OLDEST_TASK_AGE = Gauge(
    "nessus_task_oldest_age_seconds",
    "Age in its current state of the oldest unfinished task, by state, as of the last sweep (paused excluded)",
    ["state"],
)
UNKNOWN_POOL = "unknown"


def count_ended(record: TaskRecord, status: str) -> None:
    """One terminal event: its outcome, and how long the task took from submission."""
    SCANS.labels(scan_type=record.scan_type, pool=record.pool, status=status).inc()
    if record.finished_at is not None:
        seconds = max(0.0, (record.finished_at - record.created_at).total_seconds())
        TASK_DURATION.labels(scan_type=record.scan_type, pool=record.pool, status=status).observe(seconds)


def task_census(
    records: Iterable[TaskRecord], now: datetime, entered: Callable[[TaskRecord], datetime]
) -> tuple[dict[str, int], dict[str, float]]:
    """Records per state, and the age in its state (``entered``) of the oldest unpaused unfinished task."""
    counts: dict[str, int] = {str(s): 0 for s in TaskState}
    oldest: dict[str, float] = {str(s): 0.0 for s in TaskState if not s.terminal}
    for record in records:
        counts[str(record.state)] += 1
        if not record.state.terminal and not record.paused:
            age = (now - entered(record)).total_seconds()
            oldest[str(record.state)] = max(oldest[str(record.state)], age)
    return counts, oldest


def observe_tasks(records: Iterable[TaskRecord], now: datetime, entered: Callable[[TaskRecord], datetime]) -> None:
    counts, oldest = task_census(records, now, entered)
    for state, count in counts.items():
        TASKS.labels(state=state).set(count)
    for state, age in oldest.items():
        OLDEST_TASK_AGE.labels(state=state).set(age)


def letter_pool(data: bytes) -> str:
    """The pool of the task a dead letter is about, from its (scrubbed) original message."""
    try:
        letter = decode(data, DeadLetter)
        original = json.loads(letter.original) if letter.original else None
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
        return UNKNOWN_POOL
    if isinstance(original, dict):
        pool = original.get("pool") or (original.get("request") or {}).get("pool")
        if isinstance(pool, str) and contract.NAME_RE.match(pool):
            return pool
    return UNKNOWN_POOL


class DlqCensus:
    """Dead letters per pool, reading only letters it has not seen yet.

    The pool is not in the DLQ subject, so letters are read once each and remembered by
    sequence. When letters were removed from the middle (``dlq retry``/``purge``) the count
    no longer matches the stream's, and the census starts over.
    """

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.pools: dict[int, str] = {}
        self.next_seq = 1

    async def refresh(self) -> None:
        info = await self.js.stream_info(contract.DLQ_STREAM)
        first, total = int(info.state.first_seq or 0), int(info.state.messages or 0)
        self.pools = {seq: pool for seq, pool in self.pools.items() if seq >= first}
        await self._read_new()
        if len(self.pools) != total:
            self.pools, self.next_seq = {}, 1
            await self._read_new()
        DLQ_SIZE.set(total)
        POOL_DLQ_DEPTH.clear()
        for pool, count in Tally(self.pools.values()).items():
            POOL_DLQ_DEPTH.labels(pool=pool).set(count)

    async def _read_new(self) -> None:
        while True:
            try:
                msg = await self.js.get_msg(
                    contract.DLQ_STREAM, seq=self.next_seq, subject=contract.DLQ_FILTER, next=True
                )
            except NotFoundError:
                return
            seq = int(msg.seq or 0)
            self.pools[seq] = letter_pool(msg.data or b"")
            self.next_seq = seq + 1
