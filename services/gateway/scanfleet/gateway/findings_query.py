"""Filters, sorting, profiles and cursors over one task's stored findings: pure, no I/O.

The origin system's filters compared severity as a string, looked for a ``cvss_score`` tag that real
exports do not have, matched hosts by substring and ran after projection, so the documented examples
matched nothing. Here every filter is parsed up front into a typed predicate (a bad one is an error
that says what is valid), runs on the typed fields before projection, and hosts match exactly.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import operator
import re
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from scanfleet.common.findings import (
    FINDING_FIELDS,
    Finding,
    FindingHead,
    HostRecord,
    decode_finding,
    decode_head,
    iter_frames,
)
from scanfleet.common.messages import SeverityCounts

SEVERITY_LABELS: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
_SEVERITY_BY_NAME = {name: i for i, name in enumerate(SEVERITY_LABELS)}

PROFILES: dict[str, tuple[str, ...]] = {
    "minimal": ("host", "port", "plugin_id", "plugin_name", "severity"),
}
PROFILES["summary"] = (
    *PROFILES["minimal"],
    "ip",
    "cvss3_base_score",
    "cvss_base_score",
    "exploit_available",
    "cve",
)
PROFILES["brief"] = (
    *PROFILES["summary"],
    "protocol",
    "svc_name",
    "plugin_family",
    "risk_factor",
    "vpr_score",
    "epss_score",
    "synopsis",
    "solution",
)
PROFILES["full"] = FINDING_FIELDS
DEFAULT_PROFILE = "summary"

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 200
CVE_SHOWN = 3
"""Outside the full profile a finding lists this many CVEs and counts the rest (some list hundreds)."""
TEXT_CAPS = {"synopsis": 300, "solution": 500}
FULL_TEXT_CAP = 4000
"""Long texts in a page are cut here; ``get_finding`` returns them whole."""

FILTER_KEYS: tuple[str, ...] = (
    "severity",
    "cvss",
    "cvss3",
    "vpr",
    "epss",
    "cve",
    "exploit_available",
    "host",
    "port",
    "protocol",
    "plugin_id",
    "plugin_family",
    "text",
)
SORT_KEYS: tuple[str, ...] = ("severity", "cvss3", "cvss", "vpr", "epss", "host", "port", "plugin_id", "plugin_name")
DEFAULT_SORT = "-severity,-cvss3,-cvss"


class QueryError(ValueError):
    """A query the caller must fix; ``details`` says what is valid."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


# The loaded index --------------------------------------------------------------------------


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str | None) -> Address | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def host_names(host: HostRecord) -> set[str]:
    """Lower-cased ReportHost name and FQDN: what a hostname must equal to match."""
    return {host.name.lower()} | ({host.fqdn.lower()} if host.fqdn else set())


@dataclass
class FindingsIndex:
    """A task's findings as loaded once: decoded heads for filtering, bodies decoded per page."""

    task_id: str
    sha256: str
    buf: Any
    """bytes or an mmap of the findings object."""
    heads: list[FindingHead]
    offsets: array[int]
    lengths: array[int]
    hosts: dict[str, HostRecord]
    addresses: dict[str, Address | None]
    """Each host's address (``host-ip``, else its name if that is an IP), parsed once for filters and sorting."""
    texts: list[str]
    default_order: list[int]
    severity_counts: list[int]
    ranks: dict[tuple[str, bool], tuple[list[int], int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.heads)

    def host_sort_key(self, name: str) -> tuple[int, int, str]:
        """Addresses numerically (IPv4 before IPv6), then hosts without one by name."""
        address = self.addresses[name]
        return (address.version, int(address), "") if address else (9, 0, name.lower())

    def finding(self, i: int) -> Finding:
        start = self.offsets[i]
        return decode_finding(self.buf[start : start + self.lengths[i]])

    @property
    def approx_bytes(self) -> int:
        """Heap held by the index (the bodies stay in the mapped file); a bound, not an exact figure."""
        return 400 * len(self.heads) + 2000 * len(self.hosts)


def build_index(task_id: str, sha256: str, buf: Any, hosts: Sequence[HostRecord]) -> FindingsIndex:
    """Decode every finding's head once; repeated strings are shared so 100k rows stay small."""
    shared: dict[Any, Any] = {}

    def one(value: Any) -> Any:
        return shared.setdefault(value, value)

    heads: list[FindingHead] = []
    offsets: array[int] = array("q")
    lengths: array[int] = array("q")
    texts: list[str] = []
    counts = [0, 0, 0, 0, 0]
    for offset, length in iter_frames(buf):
        head = decode_head(buf[offset : offset + length])
        head.host = one(head.host)
        head.ip = one(head.ip)
        head.protocol = one(head.protocol)
        head.svc_name = one(head.svc_name)
        head.plugin_name = one(head.plugin_name)
        head.plugin_family = one(head.plugin_family)
        head.risk_factor = one(head.risk_factor)
        head.synopsis = one(head.synopsis)
        texts.append(one(f"{head.plugin_name}\n{head.synopsis or ''}".lower()))
        counts[head.severity if 0 <= head.severity <= 4 else 0] += 1
        heads.append(head)
        offsets.append(offset)
        lengths.append(length)
    by_name = {h.name: h for h in hosts}
    for head in heads:
        if head.host not in by_name:
            by_name[head.host] = HostRecord(
                name=head.host, ip=head.ip, severity_counts=SeverityCounts(), item_count=0, auth="not_evaluable"
            )
    index = FindingsIndex(
        task_id=task_id,
        sha256=sha256,
        buf=buf,
        heads=heads,
        offsets=offsets,
        lengths=lengths,
        hosts=by_name,
        addresses={name: parse_address(h.ip) or parse_address(name) for name, h in by_name.items()},
        texts=texts,
        default_order=[],
        severity_counts=counts,
    )
    index.default_order = order(index, range(len(heads)), parse_sort(None))
    return index


# Filters -----------------------------------------------------------------------------------

Predicate = Callable[[int], bool]


@dataclass
class Filters:
    canonical: dict[str, Any] = field(default_factory=dict)
    """The filters as understood, echoed to the caller and hashed into cursors."""
    build: list[Callable[[FindingsIndex], Predicate]] = field(default_factory=list)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


_OP = re.compile(r"^\s*(>=|<=|==|=|>|<)?\s*([^\s].*?)\s*$")
_RANGE = re.compile(r"^\s*(-?[\d.]+)\s*(?:\.\.|-|to)\s*(-?[\d.]+)\s*$")


def _bad(key: str, value: Any, expected: str) -> QueryError:
    return QueryError("invalid_filter", f"filter {key}={value!r}: expected {expected}", filter=key)


_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "=": operator.eq,
    "==": operator.eq,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


def _severity(value: Any) -> set[int]:
    expected = "0-4 or a name (info, low, medium, high, critical), a list of them, or a comparison like '>=3'"
    allowed: set[int] = set()
    for item in _as_list(value):
        if isinstance(item, bool):
            raise _bad("severity", value, expected)
        if isinstance(item, int):
            op, level = "=", item
        else:
            match = _OP.match(str(item))
            if match is None:
                raise _bad("severity", value, expected)
            op, text = match.group(1) or "=", match.group(2).lower()
            if text in _SEVERITY_BY_NAME:
                level = _SEVERITY_BY_NAME[text]
            elif text.isdigit():
                level = int(text)
            else:
                raise _bad("severity", value, expected)
        if not 0 <= level <= 4:
            raise _bad("severity", value, expected)
        compare = _COMPARE[op]
        allowed.update(s for s in range(5) if compare(s, level))
    if not allowed:
        raise _bad("severity", value, expected)
    return allowed


def _score_range(key: str, value: Any) -> tuple[float, float, bool, bool]:
    """``(low, high, low_inclusive, high_inclusive)`` from ``7.5``, ``'>=7'``, ``'7..10'`` or ``[7, 10]``."""
    expected = "a number, a comparison like '>=7.0', a range like '7..10', or [min, max]"
    inf = float("inf")
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            return float(value), float(value), True, True
        if isinstance(value, (list, tuple)) and len(value) == 2:
            low = -inf if value[0] is None else float(value[0])
            high = inf if value[1] is None else float(value[1])
            return low, high, True, True
        text = str(value)
        ranged = _RANGE.match(text)
        if ranged:
            return float(ranged.group(1)), float(ranged.group(2)), True, True
        match = _OP.match(text)
        if match is None:
            raise ValueError
        op, number = match.group(1) or "=", float(match.group(2))
    except (TypeError, ValueError):
        raise _bad(key, value, expected) from None
    return {
        "=": (number, number, True, True),
        "==": (number, number, True, True),
        ">=": (number, inf, True, True),
        ">": (number, inf, False, True),
        "<=": (-inf, number, True, True),
        "<": (-inf, number, True, False),
    }[op]


_SCORE_ATTR = {"cvss": "cvss_base_score", "cvss3": "cvss3_base_score", "vpr": "vpr_score", "epss": "epss_score"}
_FILTER_ALIASES = {
    "cvss_base_score": "cvss",
    "cvss3_base_score": "cvss3",
    "vpr_score": "vpr",
    "epss_score": "epss",
    "search": "text",
    "hosts": "host",
    "ports": "port",
    "risk": "severity",
}


def _ints(key: str, value: Any) -> list[int]:
    out = []
    for item in _as_list(value):
        try:
            if isinstance(item, bool):
                raise ValueError
            out.append(int(item))
        except (TypeError, ValueError):
            raise _bad(key, value, "an integer or a list of integers") from None
    if not out:
        raise _bad(key, value, "an integer or a list of integers")
    return sorted(set(out))


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise _bad(key, value, "true or false")


HostSpec = ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network | str


def _host_specs(value: Any) -> list[HostSpec]:
    specs: list[HostSpec] = []
    for item in _as_list(value):
        text = str(item).strip()
        if not text:
            continue
        try:
            specs.append(ipaddress.ip_network(text, strict=False) if "/" in text else ipaddress.ip_address(text))
        except ValueError:
            if "/" in text or not re.fullmatch(r"[A-Za-z0-9_.-]+", text):
                raise _bad("host", value, "an IP address, a CIDR such as 10.0.0.0/24, or an exact host name") from None
            specs.append(text.lower())
    if not specs:
        raise _bad("host", value, "an IP address, a CIDR such as 10.0.0.0/24, or an exact host name")
    return specs


def _host_matches(host: HostRecord, address: Address | None, specs: Sequence[HostSpec]) -> bool:
    for spec in specs:
        if isinstance(spec, str):
            if spec in host_names(host):
                return True
        elif isinstance(spec, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            if address is not None and address.version == spec.version and address in spec:
                return True
        elif address == spec:
            return True
    return False


def parse_filters(raw: Mapping[str, Any] | None) -> Filters:
    """Validate and compile filters; an unknown key or bad value raises ``QueryError``."""
    filters = Filters()
    for given, value in (raw or {}).items():
        key = _FILTER_ALIASES.get(given, given)
        if key not in FILTER_KEYS:
            raise QueryError("invalid_filter", f"unknown filter {given!r}", valid_filters=list(FILTER_KEYS))
        if value is None:
            continue
        if key in filters.canonical:
            raise QueryError("invalid_filter", f"filter {key!r} given twice (directly and through an alias)")
        filters.canonical[key], builder = _compile(key, value)
        filters.build.append(builder)
    return filters


def _compile(key: str, value: Any) -> tuple[Any, Callable[[FindingsIndex], Predicate]]:
    if key == "severity":
        allowed = _severity(value)

        def severity(ix: FindingsIndex) -> Predicate:
            heads = ix.heads
            return lambda i: heads[i].severity in allowed

        return sorted(allowed), severity
    if key in _SCORE_ATTR:
        attr = _SCORE_ATTR[key]
        low, high, low_in, high_in = _score_range(key, value)

        def score(ix: FindingsIndex) -> Predicate:
            def check(i: int) -> bool:
                s: float | None = getattr(ix.heads[i], attr)
                if s is None:
                    return False
                return (s >= low if low_in else s > low) and (s <= high if high_in else s < high)

            return check

        return [low, high, low_in, high_in], score
    if key == "cve":
        wanted = {str(c).strip().upper() for c in _as_list(value)}
        if not wanted or not all(re.fullmatch(r"CVE-\d{4}-\d{4,}", c) for c in wanted):
            raise _bad("cve", value, "CVE ids like CVE-2021-44228, one or a list")
        return sorted(wanted), lambda ix: lambda i: not wanted.isdisjoint(ix.heads[i].cve)
    if key == "exploit_available":
        flag = _bool(key, value)
        return flag, lambda ix: lambda i: ix.heads[i].exploit_available is flag
    if key == "host":
        specs = _host_specs(value)

        def hosts(ix: FindingsIndex) -> Predicate:
            names = {name for name, h in ix.hosts.items() if _host_matches(h, ix.addresses[name], specs)}
            return lambda i: ix.heads[i].host in names

        return sorted(str(s) for s in specs), hosts
    if key in ("port", "plugin_id"):
        numbers = set(_ints(key, value))
        return sorted(numbers), lambda ix: lambda i: getattr(ix.heads[i], key) in numbers
    if key in ("plugin_family", "protocol"):
        names = {str(v).strip().lower() for v in _as_list(value)}
        if not names:
            raise _bad(key, value, "a name or a list of names")
        return sorted(names), lambda ix: lambda i: getattr(ix.heads[i], key).lower() in names
    needle = str(value).strip().lower()
    if not needle:
        raise _bad("text", value, "a non-empty string searched in plugin_name and synopsis")
    return needle, lambda ix: lambda i: needle in ix.texts[i]


# Sorting -----------------------------------------------------------------------------------

SortSpec = list[tuple[str, bool]]
"""(key, descending) from most to least significant."""


def parse_sort(raw: str | Sequence[str] | None) -> SortSpec:
    parts = _as_list(raw) if raw else _as_list(DEFAULT_SORT)
    spec: SortSpec = []
    for part in parts:
        text = str(part).strip()
        desc = text.startswith("-")
        name = text.lstrip("+-").lower()
        if ":" in name:
            name, _, direction = name.partition(":")
            desc = direction == "desc"
        name = _FILTER_ALIASES.get(name, name)
        if name not in SORT_KEYS:
            raise QueryError(
                "invalid_sort",
                f"cannot sort by {text!r}: use keys prefixed with '-' for descending, e.g. '-severity,-cvss3'",
                valid_sort_keys=list(SORT_KEYS),
            )
        spec.append((name, desc))
    return spec


def _sort_value(index: FindingsIndex, key: str) -> Callable[[int], Any]:
    heads = index.heads
    if key == "host":
        keys = {name: index.host_sort_key(name) for name in index.hosts}
        return lambda i: keys[heads[i].host]
    attr = _SCORE_ATTR.get(key, key)
    return lambda i: getattr(heads[i], attr)


def ranks(index: FindingsIndex, key: str, desc: bool) -> tuple[list[int], int]:
    """Per-row rank for one sort key (missing values last either way) and the number of ranks.

    Computed once per key and direction, then cached on the index, so a new sort over 100k rows
    is a few list passes and one C-level sort instead of a Python comparison per pair.
    """
    cached = index.ranks.get((key, desc))
    if cached is not None:
        return cached
    value = _sort_value(index, key)
    values = [value(i) for i in range(len(index))]
    distinct = sorted({v for v in values if v is not None}, reverse=desc)
    position = {v: r for r, v in enumerate(distinct)}
    missing = len(distinct)
    result = ([missing if v is None else position[v] for v in values], missing + 1)
    index.ranks[(key, desc)] = result
    return result


def order(index: FindingsIndex, rows: Iterable[int], spec: SortSpec) -> list[int]:
    """Stable multi-key sort; missing scores sort last in either direction; ties by host, port, plugin."""
    rows = list(rows)
    tiebreak: SortSpec = [("host", False), ("port", False), ("plugin_id", False)]
    full = spec + [t for t in tiebreak if t[0] not in {k for k, _ in spec}]
    combined = [0] * len(rows)
    for key, desc in full:
        rank, size = ranks(index, key, desc)
        combined = [c * size + rank[i] for c, i in zip(combined, rows, strict=True)]
    positions = sorted(range(len(rows)), key=combined.__getitem__)
    return [rows[p] for p in positions]


def select(index: FindingsIndex, filters: Filters, spec: SortSpec) -> list[int]:
    """Matching rows in ``spec`` order; each filter narrows the previous one's survivors."""
    default = spec == parse_sort(None)
    rows: Sequence[int] = index.default_order if default else range(len(index))
    for build in filters.build:
        predicate = build(index)
        rows = [i for i in rows if predicate(i)]
    return list(rows) if default else order(index, rows, spec)


# Projection --------------------------------------------------------------------------------


def resolve_fields(profile: str | None, custom_fields: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
    if custom_fields:
        unknown = [f for f in custom_fields if f not in FINDING_FIELDS]
        if unknown:
            raise QueryError("invalid_fields", f"unknown field(s) {unknown}", valid_fields=list(FINDING_FIELDS))
        return "custom", tuple(dict.fromkeys(custom_fields))
    name = profile or DEFAULT_PROFILE
    if name not in PROFILES:
        raise QueryError("invalid_profile", f"unknown profile {name!r}", valid_profiles=list(PROFILES))
    return name, PROFILES[name]


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters; get_finding returns the whole text]"


def project(finding: Finding, fields: Sequence[str], *, full_text: bool = False) -> dict[str, Any]:
    """The finding's requested fields; ``None``, empty values and an ``ip`` equal to ``host`` are left out."""
    out: dict[str, Any] = {}
    for name in fields:
        value = getattr(finding, name)
        if value is None or value == [] or value == "":
            continue
        if name == "ip" and value == finding.host and "host" in fields:
            continue
        if name == "cve" and not full_text and len(value) > CVE_SHOWN and fields is not FINDING_FIELDS:
            out["cve"] = value[:CVE_SHOWN]
            out["cve_more"] = len(value) - CVE_SHOWN
            continue
        if isinstance(value, str) and not full_text:
            value = _cut(value, TEXT_CAPS.get(name, FULL_TEXT_CAP))
        out[name] = value
    return out


# Cursors -----------------------------------------------------------------------------------


def query_hash(index: FindingsIndex, filters: Filters, spec: SortSpec) -> str:
    canonical = msgspec.json.encode([index.task_id, index.sha256, filters.canonical, spec], order="sorted")
    return hashlib.sha256(canonical).hexdigest()[:16]


def encode_cursor(digest: str, offset: int) -> str:
    return base64.urlsafe_b64encode(msgspec.msgpack.encode([1, digest, offset])).decode().rstrip("=")


def decode_cursor(cursor: str, digest: str) -> int:
    """The offset a cursor points at; a cursor from another query or task is refused."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, their_digest, offset = msgspec.msgpack.decode(raw, type=tuple[int, str, int])
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise QueryError("invalid_cursor", "the cursor is not one this server issued") from None
    if version != 1 or offset < 0:
        raise QueryError("invalid_cursor", "the cursor is not one this server issued")
    if their_digest != digest:
        raise QueryError(
            "cursor_mismatch",
            "this cursor belongs to a different query (filters, sort or task changed); "
            "repeat the query without a cursor to start from the first page",
        )
    return offset


def clamp_page_size(page_size: int | None) -> int:
    if page_size is None:
        return DEFAULT_PAGE_SIZE
    return max(1, min(MAX_PAGE_SIZE, int(page_size)))


def severity_dict(counts: Sequence[int]) -> dict[str, int]:
    return {SEVERITY_LABELS[i]: counts[i] for i in range(4, -1, -1)}


def matched_counts(index: FindingsIndex, rows: Sequence[int]) -> list[int]:
    counts = [0, 0, 0, 0, 0]
    heads = index.heads
    for i in rows:
        sev = heads[i].severity
        counts[sev if 0 <= sev <= 4 else 0] += 1
    return counts
