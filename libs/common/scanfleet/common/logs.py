"""JSON log lines that carry the ``task_id`` and ``trace_id`` of the work in hand."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

task_id_var: ContextVar[str | None] = ContextVar("task_id", default=None)
trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        task_id, trace_id = task_id_var.get(), trace_id_var.get()
        if task_id:
            line["task_id"] = task_id
        if trace_id:
            line["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "uvicorn.access", "mcp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def task_context(task_id: str | None, trace_id: str | None) -> Iterator[None]:
    """Tag every log line written inside the block (and its asyncio children) with the task."""
    t1 = task_id_var.set(task_id)
    t2 = trace_id_var.set(trace_id)
    try:
        yield
    finally:
        task_id_var.reset(t1)
        trace_id_var.reset(t2)
