"""Scan results for an LLM: filtered, sorted, paged findings, host summaries and single findings.

A task's findings object is downloaded once into a temporary file and memory-mapped; the decoded
heads (the fields filters and sorting read) stay in an LRU cache bounded by their estimated size,
and the row lists of recent queries are cached too, so following a cursor costs one page of decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO

from nats.js import JetStreamContext

from scanfleet.common import contract, expiry
from scanfleet.common.findings import CorruptFindings, Finding, HostRecord, decode_hosts
from scanfleet.common.tasks import FindingsRef, TaskRecord
from scanfleet.gateway import findings_query as q
from scanfleet.gateway.access import Caller
from scanfleet.gateway.core import Gateway
from scanfleet.gateway.digest import has_digest, plugin_groups, scan_digest
from scanfleet.gateway.errors import GatewayError

MAX_OUTPUT_CHARS = 100_000


@dataclass
class _Loaded:
    index: q.FindingsIndex
    file: BinaryIO | None
    mapping: mmap.mmap | None

    def close(self) -> None:
        self.index.buf = b""
        if self.mapping is not None:
            with contextlib.suppress(BufferError):
                self.mapping.close()
        if self.file is not None:
            self.file.close()


class FindingsCache:
    """Loaded findings indexes, least recently used first out once over ``max_bytes``."""

    def __init__(self, js: JetStreamContext, *, max_bytes: int = 512 * 1024 * 1024, max_queries: int = 64) -> None:
        self.js = js
        self.max_bytes = max_bytes
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._loading: dict[str, asyncio.Future[_Loaded]] = {}
        self._queries: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
        self.max_queries = max_queries
        self.loads = 0

    async def index(self, task_id: str, ref: FindingsRef) -> q.FindingsIndex:
        loaded = self._loaded.get(task_id)
        if loaded is not None and loaded.index.sha256 == ref.sha256:
            self._loaded.move_to_end(task_id)
            return loaded.index
        pending = self._loading.get(task_id)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[task_id] = pending
            try:
                fresh = await self._load(task_id, ref)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()
                raise
            finally:
                self._loading.pop(task_id, None)
            pending.set_result(fresh)
            self._store(task_id, fresh)
            return fresh.index
        return (await asyncio.shield(pending)).index

    def rows(self, index: q.FindingsIndex, filters: q.Filters, spec: q.SortSpec, digest: str) -> list[int]:
        key = (index.task_id, digest)
        rows = self._queries.get(key)
        if rows is None:
            rows = q.select(index, filters, spec)
            self._queries[key] = rows
            while len(self._queries) > self.max_queries:
                self._queries.popitem(last=False)
        else:
            self._queries.move_to_end(key)
        return rows

    def _store(self, task_id: str, loaded: _Loaded) -> None:
        old = self._loaded.pop(task_id, None)
        if old is not None:
            old.close()
        self._loaded[task_id] = loaded
        while len(self._loaded) > 1 and sum(x.index.approx_bytes for x in self._loaded.values()) > self.max_bytes:
            evicted_id, evicted = self._loaded.popitem(last=False)
            evicted.close()
            for key in [k for k in self._queries if k[0] == evicted_id]:
                del self._queries[key]

    async def _load(self, task_id: str, ref: FindingsRef) -> _Loaded:
        self.loads += 1
        store = await self.js.object_store(contract.FINDINGS_OBJECTS)
        hosts = decode_hosts((await store.get(ref.hosts_object)).data or b"")
        spool = tempfile.TemporaryFile(prefix="scanfleet-findings-")  # noqa: SIM115 - owned by _Loaded
        try:
            await store.get(ref.findings_object, writeinto=spool)  # checks the object's SHA-256
            spool.flush()
            mapping = mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ)
            index = await asyncio.to_thread(q.build_index, task_id, ref.sha256, mapping, hosts.hosts)
        except BaseException:
            spool.close()
            raise
        return _Loaded(index=index, file=spool, mapping=mapping)

    def close(self) -> None:
        for loaded in self._loaded.values():
            loaded.close()
        self._loaded.clear()
        self._queries.clear()


class Results:
    """``get_scan_results``, ``get_host_summary`` and ``get_finding`` over the findings store."""

    def __init__(self, gateway: Gateway, cache: FindingsCache | None = None) -> None:
        self.gateway = gateway
        self.cache = cache or FindingsCache(gateway.rt.js)

    async def _open(self, caller: Caller, task_id: str) -> tuple[TaskRecord, q.FindingsIndex]:
        record = await self.gateway.record(caller, task_id)
        if record.findings is None:
            if record.state.terminal:
                raise GatewayError(
                    409,
                    "no_results",
                    f"the scan ended {record.state} without stored findings: {record.error or 'no export'}",
                    state=str(record.state),
                    error_reason=record.error_reason,
                )
            raise GatewayError(
                409,
                "not_ready",
                f"the scan is {record.state}; results come when it is completed (poll get_scan_status)",
                state=str(record.state),
            )
        await expiry.note_access(self.gateway.rt.js, record, self.gateway.rt.settings)
        try:
            index = await self.cache.index(task_id, record.findings)
        except CorruptFindings as exc:
            raise GatewayError(500, "findings_corrupt", f"the stored findings cannot be read: {exc}") from None
        return record, index

    async def scan_results(
        self,
        caller: Caller,
        task_id: str,
        *,
        filters: dict[str, Any] | None = None,
        sort: str | list[str] | None = None,
        profile: str | None = None,
        custom_fields: list[str] | None = None,
        page_size: int | None = None,
        cursor: str | None = None,
        group_by: str | None = None,
    ) -> dict[str, Any]:
        if group_by not in (None, "plugin"):
            raise GatewayError(422, "invalid_group_by", f"cannot group by {group_by!r}", valid_group_by=["plugin"])
        try:
            parsed = q.parse_filters(filters)
            spec = q.parse_sort(sort)
            profile_name, fields = q.resolve_fields(profile, custom_fields)
        except q.QueryError as exc:
            raise _refusal(exc) from None
        record, index = await self._open(caller, task_id)
        digest = q.query_hash(index, parsed, spec)
        try:
            offset = q.decode_cursor(cursor, digest + ":plugin" if group_by else digest) if cursor else 0
        except q.QueryError as exc:
            raise _refusal(exc) from None
        size = q.clamp_page_size(page_size)
        rows = self.cache.rows(index, parsed, spec, digest)
        summary = _summary(record, index, rows, parsed, spec, profile_name, fields)
        if group_by == "plugin":
            return _grouped(summary, plugin_groups(index, rows), offset, size, digest)
        page = rows[offset : offset + size]
        end = offset + len(page)
        findings = [q.project(index.finding(i), fields) for i in page]
        return {
            "summary": summary,
            "findings": findings,
            "page": {
                "offset": offset,
                "page_size": size,
                "returned": len(findings),
                "has_more": end < len(rows),
                "next_cursor": q.encode_cursor(digest, end) if end < len(rows) else None,
            },
        }

    async def digest(self, record: TaskRecord) -> dict[str, Any] | None:
        """The digest of an ended scan with results (see ``digest.scan_digest``); ``None`` before."""
        if not has_digest(record):
            return None
        if record.findings is None:
            return scan_digest(record, None)
        try:
            index = await self.cache.index(record.task_id, record.findings)
        except CorruptFindings:
            return None
        return scan_digest(record, index)

    async def host_summary(
        self,
        caller: Caller,
        task_id: str,
        host: str | None = None,
        *,
        page_size: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        record, index = await self._open(caller, task_id)
        if host is not None:
            return _host_detail(record, index, _find_host(index, host))
        hosts = sorted(index.hosts.values(), key=lambda h: index.host_sort_key(h.name))
        digest = q.query_hash(index, q.Filters(canonical={"hosts": True}), [])
        try:
            offset = q.decode_cursor(cursor, digest) if cursor else 0
        except q.QueryError as exc:
            raise _refusal(exc) from None
        size = max(1, min(q.MAX_PAGE_SIZE, page_size or 50))
        chunk = hosts[offset : offset + size]
        end = offset + len(chunk)
        return {
            "task_id": record.task_id,
            "status": str(record.state),
            "authentication_status": record.results.auth_status if record.results else None,
            "hosts_total": len(hosts),
            "hosts": [_host_line(h) for h in chunk],
            "page": {
                "offset": offset,
                "returned": len(chunk),
                "has_more": end < len(hosts),
                "next_cursor": q.encode_cursor(digest, end) if end < len(hosts) else None,
            },
        }

    async def finding(
        self,
        caller: Caller,
        task_id: str,
        host: str,
        plugin_id: int,
        port: int | None = None,
        max_chars: int | None = None,
    ) -> dict[str, Any]:
        _, index = await self._open(caller, task_id)
        name = _find_host(index, host).name
        rows = [
            i
            for i in range(len(index))
            if index.heads[i].host == name
            and index.heads[i].plugin_id == plugin_id
            and (port is None or index.heads[i].port == port)
        ]
        if not rows:
            ports = sorted({h.port for h in index.heads if h.host == name and h.plugin_id == plugin_id})
            where = f" on port {port}" if port is not None and ports else ""
            raise GatewayError(
                404,
                "finding_not_found",
                f"plugin {plugin_id} did not report on host {name}{where}",
                ports_with_this_plugin=ports,
            )
        limit = max(1000, min(MAX_OUTPUT_CHARS, max_chars or MAX_OUTPUT_CHARS))
        return {
            "task_id": task_id,
            "host": name,
            "plugin_id": plugin_id,
            "findings": [_whole(index.finding(i), limit) for i in rows],
        }


def _grouped(
    summary: dict[str, Any], groups: list[dict[str, Any]], offset: int, size: int, query: str
) -> dict[str, Any]:
    """A page of plugin rows; its cursors are the query's, marked so a row cursor cannot page groups."""
    key = query + ":plugin"
    page = groups[offset : offset + size]
    end = offset + len(page)
    return {
        "summary": {**summary, "group_by": "plugin", "matched_plugins": len(groups)},
        "plugins": page,
        "page": {
            "offset": offset,
            "page_size": size,
            "returned": len(page),
            "has_more": end < len(groups),
            "next_cursor": q.encode_cursor(key, end) if end < len(groups) else None,
        },
    }


def _refusal(exc: q.QueryError) -> GatewayError:
    return GatewayError(422, exc.code, exc.message, **exc.details)


def _summary(
    record: TaskRecord,
    index: q.FindingsIndex,
    rows: list[int],
    filters: q.Filters,
    spec: q.SortSpec,
    profile: str,
    fields: tuple[str, ...],
) -> dict[str, Any]:
    results = record.results
    out: dict[str, Any] = {
        "task_id": record.task_id,
        "status": str(record.state),
        "scan_type": record.scan_type,
        "authentication_status": results.auth_status if results else None,
        "hosts_scanned": len(index.hosts),
        "total_findings": len(index),
        "total_vulnerabilities": sum(index.severity_counts[1:]),
        "severity_counts": q.severity_dict(index.severity_counts),
        "matched": len(rows),
        "matched_severity_counts": q.severity_dict(q.matched_counts(index, rows)),
        "filters_applied": filters.canonical,
        "sort": ",".join(("-" if desc else "") + key for key, desc in spec),
        "profile": profile,
        "severity_scale": "4 critical, 3 high, 2 medium, 1 low, 0 info",
    }
    if profile == "custom":
        out["fields"] = list(fields)
    if record.error_reason == "auth_failed":
        out["warning"] = (
            "authentication failed on every host: these are unauthenticated results and miss local checks; "
            "see get_scan_status troubleshooting"
        )
    return out


def _find_host(index: q.FindingsIndex, host: str) -> HostRecord:
    wanted = host.strip().lower()
    address = q.parse_address(wanted)
    for name, record in index.hosts.items():
        if wanted in q.host_names(record) or (address is not None and index.addresses[name] == address):
            return record
    names = sorted(index.hosts)[:20]
    raise GatewayError(404, "host_not_found", f"no host {host!r} in this scan", hosts=names)


def _host_line(h: HostRecord) -> dict[str, Any]:
    line = {
        "host": h.name,
        "ip": h.ip,
        "fqdn": h.fqdn,
        "os": h.os,
        "severity_counts": q.severity_dict(
            [
                h.severity_counts.info,
                h.severity_counts.low,
                h.severity_counts.medium,
                h.severity_counts.high,
                h.severity_counts.critical,
            ]
        ),
        "auth": h.auth,
    }
    return {k: v for k, v in line.items() if v is not None}


def _host_detail(record: TaskRecord, index: q.FindingsIndex, h: HostRecord) -> dict[str, Any]:
    rows = [i for i in index.default_order if index.heads[i].host == h.name]
    top = [q.project(index.finding(i), q.PROFILES["minimal"]) for i in rows[:10] if index.heads[i].severity > 0]
    detail = {
        **_host_line(h),
        "task_id": record.task_id,
        "start": h.start,
        "end": h.end,
        "findings": h.item_count or len(rows),
        "credentialed_scan": h.credentialed_scan,
        "credentialed_checks": h.credentialed_checks,
        "auth_evidence": h.auth_evidence,
        "auth_plugins": h.auth_plugins,
        "top_findings": top,
    }
    return {k: v for k, v in detail.items() if v is not None}


def _whole(finding: Finding, limit: int) -> dict[str, Any]:
    out = q.project(finding, q.PROFILES["full"], full_text=True)
    for name, value in list(out.items()):
        if isinstance(value, str) and len(value) > limit:
            out[name] = value[:limit]
            out[f"{name}_truncated_chars"] = len(value) - limit
    return out
