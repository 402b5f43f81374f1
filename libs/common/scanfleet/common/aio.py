"""asyncio helpers every long-running loop needs."""

from __future__ import annotations

import asyncio


def honour_cancel() -> None:
    """Raise CancelledError if the current task has been asked to stop.

    On Python 3.11 ``asyncio.wait_for`` (inside every nats-py request and fetch) swallows a
    cancel that lands just as its future completes. The task still counts the request, so a
    loop that calls NATS checks it once a round, or it would never stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(*tasks: asyncio.Task[object], every: float = 1.0) -> None:
    """Cancel the tasks and wait until they have ended, cancelling again any that swallowed it."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
    await asyncio.gather(*tasks, return_exceptions=True)
