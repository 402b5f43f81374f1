"""One big export parsed by several processes at once, split at ReportHost boundaries.

lxml's ``iterparse`` holds the GIL, so threads cannot share a parse; processes can. The file is cut
at ``<ReportHost`` starts into pieces, each parsed by a worker as a document of its own (wrapped in
the export's root and ``Report`` with the namespaces in scope there) with the same streaming code as
the sequential pass, writing its own part of the findings spool. Meanwhile this process parses the
rest of the file, everything outside the hosts, with one sentinel host where the hosts were.

The split is trusted only if every piece and that frame parse cleanly. A cut that fell inside a
comment, CDATA section or processing instruction leaves a piece unterminated, a piece that is not
balanced element content does not fit its wrapper, and hosts hidden inside markup hide the sentinel
too: libxml2 refuses each of these, or the frame check notices. Then the whole file is parsed again
in one sequential pass, whose verdict and rejection message are the authoritative ones, so a hostile
file can only cost time, never change a result.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import multiprocessing
import os
import resource
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from lxml import etree

from scanfleet.validator.parsing import (
    DEFAULT_LIMITS,
    ROOT_TAG,
    SNIFF_BYTES,
    ExportSummary,
    Limits,
    Walked,
    hardened_iterparse,
    parse_export,
    sniff,
    summarize,
    walk,
)
from scanfleet.validator.store import FindingsSpool

log = logging.getLogger("scanfleet.validator.parallel")

PARALLEL_MIN_BYTES = 8 * 1024 * 1024
"""Smaller exports take a few tens of milliseconds in one pass: not worth the hand-over."""
PIECE_BYTES = 8 * 1024 * 1024
"""About this much XML per piece, at least one piece per worker: small enough to balance the load."""

_HOST_OPEN = b"<ReportHost"
_HOST_CLOSE = b"</ReportHost"
_AFTER_NAME = frozenset(b" \t\r\n>/")
_SENTINEL = "scanfleet-split-sentinel"
_UTF8 = frozenset({"UTF-8", "US-ASCII", "ASCII"})


@dataclass(frozen=True)
class Layout:
    """Byte offsets: ``cuts[0]`` is the first host's start, ``cuts[-1]`` just after the last host."""

    cuts: list[int]

    @property
    def pieces(self) -> list[tuple[int, int]]:
        return list(zip(self.cuts, self.cuts[1:], strict=False))


@dataclass(frozen=True)
class Frame:
    """What wraps a piece so it parses as the document it came from."""

    open: bytes
    close: bytes
    report_name: str | None


def _host_start(buf: Any, pos: int, limit: int) -> int:
    while True:
        i = buf.find(_HOST_OPEN, pos, limit)
        if i < 0 or i + len(_HOST_OPEN) >= limit:
            return -1
        if buf[i + len(_HOST_OPEN)] in _AFTER_NAME:
            return int(i)
        pos = i + len(_HOST_OPEN)


def plan(buf: Any, pieces: int) -> Layout | None:
    """Cut points at host starts, about evenly spaced; ``None`` when the file has no clear host span."""
    size = len(buf)
    first = _host_start(buf, 0, size)
    close = buf.rfind(_HOST_CLOSE)
    if first < 0 or close < first:
        return None
    gt = buf.find(b">", close)
    if gt < 0 or buf[close + len(_HOST_CLOSE) : gt].strip():
        return None
    end = gt + 1
    cuts = [first]
    for k in range(1, pieces):
        cut = _host_start(buf, first + (end - first) * k // pieces, end)
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(end)
    return Layout(cuts)


class RangeReader:
    """A ``read(n)`` over literal bytes and byte ranges of one file, in order, for ``iterparse``."""

    def __init__(self, path: str, parts: list[bytes | tuple[int, int]]) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._parts = list(reversed(parts))
        self._literal = b""
        self._left = 0

    def read(self, n: int = -1) -> bytes:
        n = n if n > 0 else 1 << 20
        while True:
            if self._literal:
                data, self._literal = self._literal[:n], self._literal[n:]
                return data
            if self._left:
                data = self._file.read(min(n, self._left))
                if not data:
                    raise OSError("export shrank while it was being parsed")
                self._left -= len(data)
                return data
            if not self._parts:
                return b""
            part = self._parts.pop()
            if isinstance(part, bytes):
                self._literal = part
            else:
                self._file.seek(part[0])
                self._left = part[1] - part[0]

    def close(self) -> None:
        self._file.close()


def check_frame(path: str, layout: Layout, limits: Limits) -> Frame | None:
    """Parse everything outside the hosts with a sentinel host in their place; ``None`` if anything is off."""
    sentinel = f'<ReportHost name="{_SENTINEL}"/>'.encode()
    reader = RangeReader(path, [(0, layout.cuts[0]), sentinel, (layout.cuts[-1], os.path.getsize(path))])
    try:
        found: Any = None
        context = hardened_iterparse(reader, ("ReportHost", "ReportItem", "HostProperties"))
        for _, el in context:
            if el.tag != "ReportHost" or el.get("name") != _SENTINEL or found is not None:
                return None
            found = el
        if found is None:
            return None
        report = found.getparent()
        root = found.getroottree().getroot()
        tree = root.getroottree()
        if root.tag != ROOT_TAG or report is None or report.tag != "Report" or report.getparent() is not root:
            return None
        if tree.docinfo.doctype or (tree.docinfo.encoding or "UTF-8").upper() not in _UTF8:
            return None
        nsmap = found.nsmap
        if None in nsmap or len(str(report.get("name") or "")) > limits.max_attribute_chars:
            return None
        decls = "".join(f" xmlns:{prefix}={quoteattr(uri)}" for prefix, uri in sorted(nsmap.items()))
        return Frame(
            open=f'<?xml version="1.0" encoding="UTF-8"?><{ROOT_TAG}{decls}><Report>'.encode(),
            close=f"</Report></{ROOT_TAG}>".encode(),
            report_name=report.get("name"),
        )
    except etree.XMLSyntaxError:
        return None
    finally:
        reader.close()


PieceResult = tuple[Walked, int, int] | str
"""``(walked, findings, worker peak RSS KiB)``, or why the piece could not be parsed."""


def parse_piece(path: str, start: int, end: int, frame: Frame, part: str, limits: Limits) -> PieceResult:
    """Runs in a worker. Errors come back as text: a failed piece only means "parse sequentially"."""
    spool = FindingsSpool(Path(part), header=False)
    reader = RangeReader(path, [frame.open, (start, end), frame.close])
    try:
        walked = walk(reader, spool, limits)
    except Exception as exc:  # whatever it was, the sequential pass decides
        return f"piece {start}..{end}: {exc!r}"
    finally:
        reader.close()
        spool.close()
    return walked, spool.count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _die_with_validator(alive: Connection) -> None:
    """Pool initializer: end this worker the moment the validator process ends, however it ends.

    Only the validator holds the write end of ``alive``, so the read end sees EOF exactly when that
    process is gone, on any POSIX system. A parent-death signal could not do this: a worker's parent
    is the fork server, not the validator. Once the workers are gone nothing holds the fork server's
    "alive" pipe or the resource tracker's pipe open any more, so both of them exit on EOF too.
    """
    threading.Thread(target=_exit_on_eof, args=(alive,), name="scanfleet-validator-watch", daemon=True).start()


def _exit_on_eof(alive: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        alive.recv_bytes()
    os._exit(1)


def _ready() -> int:
    time.sleep(0.02)  # long enough that one worker cannot answer a whole round alone
    return os.getpid()


class _Fallback(Exception):
    pass


class ParsePool:
    """Worker processes for big exports; small ones, and any doubt about a split, go sequential.

    Workers come from a fork server that preloads this module, so starting one costs milliseconds,
    and the pool lives as long as the service: ``start`` it once, ``close`` it on the way out.
    """

    def __init__(self, workers: int, *, min_bytes: int = PARALLEL_MIN_BYTES, piece_bytes: int = PIECE_BYTES) -> None:
        self.workers = max(0, workers)
        self.min_bytes = min_bytes
        self.piece_bytes = piece_bytes
        self.worker_peak_kib = 0
        self.last_mode = "sequential"
        self._executor: ProcessPoolExecutor | None = None
        self._alive: tuple[Connection, Connection] | None = None
        """Read and write end of the pipe the workers watch; only this process ever holds the write end."""

    def start(self) -> bool:
        """Start every worker now rather than on the first big export; ``False`` if they cannot run.

        Workers that cannot start (no ``fork``, a ``__main__`` that cannot be re-imported, no
        processes left) turn the pool off for good: every export is then parsed in this process.
        """
        if not self.workers:
            return False
        if self._executor is None:
            try:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload([__name__])
                self._alive = context.Pipe(duplex=False)
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=context,
                    initializer=_die_with_validator,
                    initargs=(self._alive[0],),
                )
                seen: set[int] = set()
                for _ in range(100):
                    seen.update(f.result() for f in [self._executor.submit(_ready) for _ in range(self.workers)])
                    if len(seen) >= self.workers:
                        break
            except (BrokenProcessPool, OSError, ValueError) as exc:
                log.warning("parse workers unavailable, parsing every export in one process: %s", exc)
                self.close()
                self.workers = 0
                return False
        return True

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        alive, self._alive = self._alive, None
        for end in alive or ():
            end.close()

    def parse(
        self,
        path: Path,
        spool: FindingsSpool,
        *,
        expected_hosts: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> ExportSummary:
        """``parse_export(path, on_finding=spool, …)``, in parallel when the export is big enough."""
        if self.workers and path.stat().st_size >= max(1, self.min_bytes):
            try:
                summary = self._parallel(path, spool, expected_hosts, limits)
            except _Fallback as why:
                log.info("parsing %s sequentially: %s", path.name, why)
            else:
                self.last_mode = "parallel"
                return summary
        self.last_mode = "sequential"
        return parse_export(path, on_finding=spool, expected_hosts=expected_hosts, limits=limits)

    def _parallel(self, path: Path, spool: FindingsSpool, expected_hosts: int | None, limits: Limits) -> ExportSummary:
        name = os.fspath(path)
        size = path.stat().st_size
        with open(name, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            sniff(buf[:SNIFF_BYTES], complete=size <= SNIFF_BYTES)
            rounds = -(-size // (self.piece_bytes * self.workers))
            layout = plan(buf, self.workers * rounds)
        if layout is None:
            raise _Fallback("no clear span of ReportHost elements to split")
        frame = check_frame(name, layout, limits)
        if frame is None:
            raise _Fallback("the document around the hosts is not a plain export frame")
        if not self.start() or self._executor is None:
            raise _Fallback("no parse workers")
        parts = [spool.path.with_name(f"{spool.path.name}.part{i}") for i in range(len(layout.pieces))]
        futures: list[Future[PieceResult]] = []
        try:
            for (start, end), part in zip(layout.pieces, parts, strict=True):
                futures.append(self._executor.submit(parse_piece, name, start, end, frame, str(part), limits))
            results = [future.result() for future in futures]
        except BrokenProcessPool as exc:
            self.close()
            _remove(parts)
            raise _Fallback(f"a parse worker died: {exc}") from None
        except Exception as exc:
            _remove(parts)
            raise _Fallback(f"a parse worker failed: {exc!r}") from None
        failed = [r for r in results if isinstance(r, str)]
        if failed:
            _remove(parts)
            raise _Fallback(failed[0])
        walked: list[Walked] = []
        for part, result in zip(parts, results, strict=True):
            assert not isinstance(result, str)
            piece, count, peak_kib = result
            walked.append(piece)
            spool.adopt(part, count)
            self.worker_peak_kib = max(self.worker_peak_kib, peak_kib)
        walked[0].report_name = frame.report_name
        return summarize(walked, file_size=size, expected_hosts=expected_hosts)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
