"""Streaming, hardened parse of a .nessus v2 export into counts, host summaries and findings.

The old system loaded whole files with ``xml.etree`` and re-parsed them per page. This walks the
file once with ``lxml.etree.iterparse``, frees each element after reading it so memory stays flat
whatever the size, never expands entities or fetches DTDs, and rejects bad input with a reason
from a small fixed set that can label a metric.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import IO, Any, Literal, Protocol

import msgspec
from lxml import etree

from scanfleet.common.findings import Finding, HostRecord
from scanfleet.common.messages import SeverityCounts
from scanfleet.validator.auth import (
    AUTH_PLUGINS,
    LOCAL_CHECKS_SUFFIX,
    SCAN_INFO_PLUGIN,
    SMB_LOGIN_PLUGIN,
    HostSignals,
    credentialed_checks_value,
    host_auth,
    is_smb_null_session,
)

ROOT_TAG = "NessusClientData_v2"

RejectReason = Literal["xml_invalid", "xml_forbidden", "wrong_root", "no_hosts", "too_large", "empty"]
REJECT_REASONS: tuple[RejectReason, ...] = (
    "xml_invalid",
    "xml_forbidden",
    "wrong_root",
    "no_hosts",
    "too_large",
    "empty",
)
SEVERITY_KEYS: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
"""Index is the ``severity`` attribute (0..4)."""


class ExportRejected(Exception):
    """The export cannot be used; ``reason`` is one of ``REJECT_REASONS``."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: RejectReason = reason
        self.message = message


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Size caps on the values the parser reads.

    libxml2 itself (``huge_tree=False``) refuses any text or attribute over 10 MB, anywhere in the
    file; these tighter caps apply to the attributes and texts this module extracts.
    """

    max_attribute_chars: int = 64 * 1024
    max_text_chars: int = 8 * 1024 * 1024


DEFAULT_LIMITS = Limits()


class ExportSummary(msgspec.Struct, kw_only=True):
    report_name: str | None
    host_count: int
    item_count: int
    severity_counts: dict[str, int]
    total_vulnerabilities: int
    """Items of severity low or above: informational items are not vulnerabilities."""
    hosts: list[HostRecord]
    warnings: list[str] = []
    file_size: int = 0


OnFinding = Callable[[Finding], None]


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


_TAGS = ("ReportItem", "HostProperties", "ReportHost", "Policy")
_SEVERITY_INDEX = {"0": 0, "1": 1, "2": 2, "3": 3, "4": 4}
_AUTH_IDS = frozenset(str(p) for p in AUTH_PLUGINS)
_SCAN_INFO_ID = str(SCAN_INFO_PLUGIN)
_SMB_LOGIN_ID = str(SMB_LOGIN_PLUGIN)
_HOST_PROPS = frozenset({"host-ip", "host-fqdn", "operating-system", "HOST_START", "HOST_END", "Credentialed_Scan"})
_SCORES = frozenset({"cvss_base_score", "cvss3_base_score", "vpr_score", "epss_score"})
_TEXTS = frozenset({"risk_factor", "synopsis", "description", "solution", "plugin_output", "see_also", "plugin_name"})
_FINDING_TAGS = (*_TEXTS, *_SCORES, "cve", "exploit_available")
_TEXT, _SCORE, _CVE, _EXPLOIT = "text", "score", "cve", "exploit"
_KIND = {
    **dict.fromkeys(_TEXTS, _TEXT),
    **dict.fromkeys(_SCORES, _SCORE),
    "cve": _CVE,
    "exploit_available": _EXPLOIT,
}
SNIFF_BYTES = 64 * 1024
_PROLOG = re.compile(rb"(?:\s+|<\?.*?\?>|<!--.*?-->)*", re.S)
_FIRST_TAG = re.compile(rb"<([A-Za-z_][-\w.:]*)")
_ENTITY_ERRORS = ("amplification", "entity reference loop", "external entity")
_POSITION_SUFFIX = re.compile(r",? line \d+, column \d+\s*$")


class _Reader:
    """Replays the sniffed head, then reads on, counting bytes for ``file_size``."""

    __slots__ = ("_head", "_raw", "size")

    def __init__(self, raw: IO[bytes], head: bytes) -> None:
        self._raw = raw
        self._head = head
        self.size = len(head)

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0 or n >= len(self._head):
                data, self._head = self._head, b""
            else:
                data, self._head = self._head[:n], self._head[n:]
            return data
        data = self._raw.read(n)
        self.size += len(data)
        return data


class _Host:
    __slots__ = ("counts", "ip", "items", "name", "pending", "props", "props_seen", "signals")

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts = [0, 0, 0, 0, 0]
        self.items = 0
        self.props: dict[str, str] = {}
        self.props_seen = False
        self.ip: str | None = None
        self.signals = HostSignals()
        self.pending: list[Finding] = []


def parse_export(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    on_finding: OnFinding | None = None,
    expected_hosts: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ExportSummary:
    """Parse a .nessus v2 export in one streaming pass.

    ``on_finding`` gets every ``ReportItem`` in document order. It may already have been called
    for part of the file when ``ExportRejected`` is raised, so consumers must discard on error.
    I/O errors (a missing file) are not rejections and propagate as ``OSError``.
    """
    reader: _Reader | None = None
    target: str | _Reader
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
        target = path
    else:
        head = source.read(SNIFF_BYTES)
        target = reader = _Reader(source, head)
        size = len(head)
    sniff(head, complete=size <= len(head) if reader is None else len(head) < SNIFF_BYTES)
    walked = walk(target, on_finding, limits)
    return summarize([walked], file_size=reader.size if reader is not None else size, expected_hosts=expected_hosts)


class Walked(msgspec.Struct, kw_only=True):
    """What one streaming pass over a document (or one piece of it) found, before any judgement."""

    report_name: str | None = None
    hosts: list[HostRecord]
    totals: list[int]
    unknown_severity: int = 0
    stray_items: int = 0


def summarize(parts: list[Walked], *, file_size: int, expected_hosts: int | None) -> ExportSummary:
    """Join passes over consecutive pieces of one document (or the single pass over all of it)."""
    hosts = [h for part in parts for h in part.hosts]
    if not hosts:
        raise ExportRejected("no_hosts", "the export contains no ReportHost")
    totals = [sum(part.totals[i] for part in parts) for i in range(len(SEVERITY_KEYS))]
    unknown_severity = sum(part.unknown_severity for part in parts)
    stray_items = sum(part.stray_items for part in parts)
    warnings: list[str] = []
    if unknown_severity:
        warnings.append(f"{unknown_severity} ReportItem(s) with a severity outside 0..4 counted as info")
    if stray_items:
        warnings.append(f"{stray_items} ReportItem(s) outside any ReportHost ignored")
    if expected_hosts is not None and len(hosts) < expected_hosts:
        warnings.append(f"{len(hosts)} host(s) in the export, fewer than the {expected_hosts} expected")
    return ExportSummary(
        report_name=next((part.report_name for part in parts if part.report_name is not None), None),
        host_count=len(hosts),
        item_count=sum(totals),
        severity_counts=_severity_dict(totals),
        total_vulnerabilities=sum(totals[1:]),
        hosts=hosts,
        warnings=warnings,
        file_size=file_size,
    )


def sniff(head: bytes, *, complete: bool) -> None:
    """Reject empty files, DOCTYPEs and foreign roots before libxml2 builds anything."""
    if complete and not head.strip(b" \t\r\n\xef\xbb\xbf"):
        raise ExportRejected("empty", "the export is empty")
    body = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    prolog = _PROLOG.match(body)
    rest = body[prolog.end() :] if prolog else body
    if rest.startswith(b"<!DOCTYPE"):
        raise _forbidden()
    first = _FIRST_TAG.match(rest)
    if first is not None and first.group(1) != ROOT_TAG.encode():
        raise _wrong_root(first.group(1).decode("utf-8", "replace"))


def _forbidden() -> ExportRejected:
    return ExportRejected("xml_forbidden", "DOCTYPE/entity declarations are not allowed in an export")


def _wrong_root(tag: str) -> ExportRejected:
    return ExportRejected("wrong_root", f"root element is <{tag[:100]}>, expected <{ROOT_TAG}>")


def _check_document(root: Any) -> None:
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        raise _forbidden()
    if root.tag != ROOT_TAG:
        raise _wrong_root(str(root.tag))


def _syntax_rejection(exc: etree.XMLSyntaxError) -> ExportRejected:
    detail = _POSITION_SUFFIX.sub("", exc.msg or str(exc)).strip()
    line, column = exc.position
    if "Resource limit exceeded" in detail or "XML_PARSE_HUGE" in detail:
        return ExportRejected("too_large", f"{detail} at line {line}, column {column}")
    if any(marker in detail for marker in _ENTITY_ERRORS):
        return ExportRejected("xml_forbidden", f"{detail} at line {line}, column {column}")
    return ExportRejected("xml_invalid", f"not well-formed XML at line {line}, column {column}: {detail}")


def _too_large(what: str, host: str) -> ExportRejected:
    return ExportRejected("too_large", f"{what} over the size limit (host {host[:200]!r})")


def hardened_iterparse(source: str | Readable, tags: tuple[str, ...]) -> Any:
    """``iterparse`` over ``end`` events of ``tags`` that never expands entities, loads a DTD or
    touches the network, keeps libxml2's size limits and drops comments and PIs: the only way an
    export is ever parsed."""
    return etree.iterparse(
        source,
        events=("end",),
        tag=tags,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def walk(target: str | Readable, on_finding: OnFinding | None, limits: Limits) -> Walked:
    """One streaming pass; a document libxml2 refuses raises ``ExportRejected``."""
    try:
        return _walk(target, on_finding, limits)
    except etree.XMLSyntaxError as exc:
        raise _syntax_rejection(exc) from None


def _walk(target: str | Readable, on_finding: OnFinding | None, limits: Limits) -> Walked:
    """The parse loop, kept as one function on purpose: it runs once per element of exports with
    hundreds of thousands of items, and its state (current host, totals, counters) lives in locals.
    Split into per-tag functions, every item would pay for calls and for state held on an object;
    the per-item work that is not on every item's path (auth plugins, findings) is already outside."""
    max_attr = limits.max_attribute_chars
    max_text = limits.max_text_chars
    hosts: list[HostRecord] = []
    totals = [0, 0, 0, 0, 0]
    report_name: str | None = None
    unknown_severity = 0
    stray_items = 0
    host: _Host | None = None
    checked = False
    context = hardened_iterparse(target, _TAGS)
    for _, el in context:
        if not checked:
            _check_document(el.getroottree().getroot())
            checked = True
        tag = el.tag
        if tag == "ReportItem":
            parent = el.getparent()
            if parent is None or parent.tag != "ReportHost":
                stray_items += 1
                el.clear()
                continue
            if host is None:
                host = _new_host(parent, max_attr)
            attrs = dict(el.items())
            for value in attrs.values():
                if len(value) > max_attr:
                    raise _too_large("a ReportItem attribute", host.name)
            sev = _SEVERITY_INDEX.get(attrs.get("severity", ""))
            if sev is None:
                unknown_severity += 1
                sev = 0
            host.counts[sev] += 1
            host.items += 1
            family = attrs.get("pluginFamily")
            if family is not None and family.endswith(LOCAL_CHECKS_SUFFIX):
                host.signals.local_checks += 1
            plugin_id = attrs.get("pluginID", "")
            if plugin_id in _AUTH_IDS:
                _record_auth(host.signals, plugin_id, el, max_text, host.name)
            if on_finding is not None:
                finding = _finding(el, attrs, host, sev, max_text)
                if host.props_seen:
                    on_finding(finding)
                else:
                    host.pending.append(finding)
            el.clear()
            while el.getprevious() is not None:
                del parent[0]
        elif tag == "HostProperties":
            parent = el.getparent()
            if parent is None or parent.tag != "ReportHost":
                el.clear()
                continue
            if host is None:
                host = _new_host(parent, max_attr)
            _read_properties(host, el, max_text)
            if on_finding is not None and host.pending:
                _flush(host, on_finding)
            el.clear()
        elif tag == "ReportHost":
            if host is None:
                host = _new_host(el, max_attr)
            if on_finding is not None and host.pending:
                _flush(host, on_finding)
            if report_name is None:
                parent = el.getparent()
                report_name = parent.get("name") if parent is not None else None
            hosts.append(_host_record(host))
            for i, count in enumerate(host.counts):
                totals[i] += count
            host = None
            el.clear()
            parent = el.getparent()
            if parent is not None:
                while el.getprevious() is not None:
                    del parent[0]
        else:
            el.clear()
    if not checked:
        _check_document(context.root)
    return Walked(
        report_name=report_name,
        hosts=hosts,
        totals=totals,
        unknown_severity=unknown_severity,
        stray_items=stray_items,
    )


def _new_host(report_host: Any, max_attr: int) -> _Host:
    name = report_host.get("name") or ""
    if len(name) > max_attr:
        raise _too_large("a ReportHost name", name[:50])
    return _Host(name)


def _record_auth(signals: HostSignals, plugin_id: str, el: Any, max_text: int, host: str) -> None:
    signals.plugins.add(int(plugin_id))
    if plugin_id == _SCAN_INFO_ID:
        signals.scan_info_seen = True
        value = credentialed_checks_value(_text(el.findtext("plugin_output"), max_text, host))
        if value is not None and signals.credentialed_checks is None:
            signals.credentialed_checks = value
    elif plugin_id == _SMB_LOGIN_ID:
        output = _text(el.findtext("plugin_output"), max_text, host)
        signals.smb_null_session = signals.smb_null_session or is_smb_null_session(output)


def _text(value: str | None, max_text: int, host: str) -> str | None:
    if value is not None and len(value) > max_text:
        raise _too_large("an element text", host)
    return value


def _read_properties(host: _Host, el: Any, max_text: int) -> None:
    props = host.props
    for tag in el:
        name = tag.get("name")
        if name in _HOST_PROPS:
            value = _text(tag.text, max_text, host.name)
            if value is not None:
                props[name] = value
    host.props_seen = True
    host.ip = props.get("host-ip")
    flag = props.get("Credentialed_Scan")
    host.signals.credentialed_scan = None if flag is None else _bool(flag)


def _flush(host: _Host, on_finding: OnFinding) -> None:
    for finding in host.pending:
        on_finding(msgspec.structs.replace(finding, ip=host.ip) if host.ip is not None else finding)
    host.pending.clear()


def _finding(el: Any, attrs: dict[str, str], host: _Host, severity: int, max_text: int) -> Finding:
    texts: dict[str, str] = {}
    scores: dict[str, float | None] = {}
    cve: list[str] = []
    exploit = False
    for child in el.iterchildren(*_FINDING_TAGS):
        tag = child.tag
        kind = _KIND[tag]
        if kind is _TEXT:
            text = child.text
            if text is not None and tag not in texts:
                if len(text) > max_text:
                    raise _too_large(f"<{tag}>", host.name)
                texts[tag] = text
        elif kind is _CVE:
            text = child.text
            if text:
                cve.append(text.strip())
        elif kind is _SCORE:
            scores[tag] = _float(child.text)
        else:
            exploit = _bool(child.text) is True
    return Finding(
        host=host.name,
        ip=host.ip,
        port=_int(attrs.get("port")),
        protocol=attrs.get("protocol") or "",
        svc_name=attrs.get("svc_name") or "",
        plugin_id=_int(attrs.get("pluginID")),
        plugin_name=attrs.get("pluginName") or texts.get("plugin_name") or "",
        plugin_family=attrs.get("pluginFamily") or "",
        severity=severity,
        risk_factor=texts.get("risk_factor"),
        cvss_base_score=scores.get("cvss_base_score"),
        cvss3_base_score=scores.get("cvss3_base_score"),
        vpr_score=scores.get("vpr_score"),
        epss_score=scores.get("epss_score"),
        cve=cve,
        exploit_available=exploit,
        synopsis=texts.get("synopsis"),
        description=texts.get("description"),
        solution=texts.get("solution"),
        plugin_output=texts.get("plugin_output"),
        see_also=texts.get("see_also"),
    )


def _host_record(host: _Host) -> HostRecord:
    props = host.props
    auth = host_auth(host.signals)
    return HostRecord(
        name=host.name,
        ip=host.ip,
        fqdn=props.get("host-fqdn"),
        os=props.get("operating-system"),
        start=props.get("HOST_START"),
        end=props.get("HOST_END"),
        credentialed_scan=host.signals.credentialed_scan,
        severity_counts=SeverityCounts(**_severity_dict(host.counts)),
        item_count=host.items,
        auth=auth.verdict,
        auth_evidence=auth.evidence,
        credentialed_checks=auth.credentialed_checks,
        auth_plugins=auth.plugins,
    )


def _severity_dict(counts: list[int]) -> dict[str, int]:
    return {key: counts[i] for i, key in reversed(list(enumerate(SEVERITY_KEYS)))}


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def _float(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    text = value.strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    return None
