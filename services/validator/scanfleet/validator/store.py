"""Writing a task's findings store: spooled to disk while parsing, then streamed to the object store.

The parser runs in a worker thread and hands over one ``Finding`` at a time; each is encoded as a
frame and appended to a local spool file, so memory stays flat however many findings an export has.
Only when the export is accepted is the spool streamed into ``scan_findings`` (never whole in memory).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from nats.js import JetStreamContext

from scanfleet.common import contract
from scanfleet.common.bus import CHUNK_SIZE, put_object_stream
from scanfleet.common.findings import MAGIC, Finding, HostsDoc, encode_frame, encode_hosts
from scanfleet.common.tasks import FindingsRef
from scanfleet.validator.parsing import ExportSummary


class FindingsSpool:
    """``on_finding`` target for ``parse_export``: appends frames to local files, counting them.

    It may also adopt ``parts`` (frames without the magic) written by parse workers; the store
    streams them in order.
    """

    def __init__(self, path: Path, *, header: bool = True) -> None:
        self.path = path
        self.count = 0
        self.parts: list[Path] = [path]
        self._file: BinaryIO = path.open("wb", buffering=1 << 20)
        if header:
            self._file.write(MAGIC)

    def __call__(self, finding: Finding) -> None:
        self._file.write(encode_frame(finding))
        self.count += 1

    def adopt(self, part: Path, count: int) -> None:
        """Append a file of frames (no magic) that another process wrote."""
        self.parts.append(part)
        self.count += count

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


async def _read_chunks(paths: list[Path]) -> AsyncIterator[bytes]:
    for path in paths:
        with path.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, CHUNK_SIZE * 8):
                yield chunk


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def publish_findings(
    js: JetStreamContext, task_id: str, spool: FindingsSpool, parsed: ExportSummary
) -> FindingsRef:
    """Store findings, then host summaries; a repeat for the same task replaces both (idempotent)."""
    spool.close()
    findings_name = contract.findings_object_name(task_id)
    hosts_name = contract.hosts_object_name(task_id)
    stored = await put_object_stream(js, contract.FINDINGS_OBJECTS, findings_name, _read_chunks(spool.parts))
    doc = HostsDoc(task_id=task_id, finding_count=spool.count, hosts=parsed.hosts)
    await put_object_stream(js, contract.FINDINGS_OBJECTS, hosts_name, _once(encode_hosts(doc)))
    return FindingsRef(
        findings_object=findings_name,
        hosts_object=hosts_name,
        count=spool.count,
        size=stored.size,
        sha256=stored.sha256,
    )
