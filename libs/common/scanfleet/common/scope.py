"""What a client may scan: pure checks run at submission, before anything reaches NATS.

Address targets (addresses, CIDRs, ranges) are intervals of integers. A target is in scope when
its whole interval lies inside the client's allowed ranges (adjacent ranges merge) and touches
neither the client's exclusions nor the ranges denied to everyone.

Host names are proven in scope by pattern: ``lab.example`` allows that name only,
``*.lab.example`` any name below it. At submission the gateway also resolves the name; every
address it resolves to must stay clear of the denied ranges and the client's exclusions, so a
name that points at loopback or the cloud metadata service is refused. What this leaves open:
the scanner resolves the name again when it scans, with its own DNS, so a record changed in
between (DNS rebinding) is not caught here; clients that need certainty should submit addresses.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from scanfleet.common.messages import PRIORITIES, Priority, ScanType
from scanfleet.common.targets import InvalidTarget, Target, parse_target

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Never scanned by anyone: this host, link-local (cloud metadata included), multicast,
# broadcast and reserved space, "this network", and IPv4 addresses written as IPv6.
ALWAYS_DENIED: tuple[str, ...] = (
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "fe80::/10",
    "ff00::/8",
)
DENIED_NAMES: tuple[str, ...] = ("localhost", "*.localhost", "localhost.localdomain")

ALL = "*"


@dataclass(frozen=True, order=True)
class Interval:
    version: int
    start: int
    end: int
    label: str = ""

    def overlaps(self, other: Interval) -> bool:
        return self.version == other.version and self.start <= other.end and other.start <= self.end


def interval_of(target: Target) -> Interval:
    """The address interval of an address, CIDR or range target."""
    if target.kind == "address":
        address = ipaddress.ip_address(target.text)
        return Interval(address.version, int(address), int(address), target.text)
    if target.kind == "cidr":
        network = ipaddress.ip_network(target.text, strict=False)
        return Interval(network.version, int(network.network_address), int(network.broadcast_address), target.text)
    if target.kind == "range":
        first = ipaddress.ip_address(target.text.partition("-")[0])
        return Interval(first.version, int(first), int(first) + target.addresses - 1, target.text)
    raise ValueError(f"{target.text!r} is a host name, not an address target")


def parse_ranges(entries: Iterable[str], *, what: str) -> list[Interval]:
    """Configured ranges (addresses, CIDRs, ranges); a host name or typo is a config error."""
    out = []
    for entry in entries:
        try:
            target = parse_target(entry.strip())
        except InvalidTarget as exc:
            raise ValueError(f"{what}: {exc}") from None
        if target.kind == "hostname":
            raise ValueError(f"{what}: {entry!r} is a host name; list names under 'hostnames'")
        out.append(interval_of(target))
    return out


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Adjacent and overlapping intervals of one version become one."""
    merged: list[Interval] = []
    for iv in sorted(intervals):
        last = merged[-1] if merged else None
        if last is not None and last.version == iv.version and iv.start <= last.end + 1:
            merged[-1] = Interval(last.version, last.start, max(last.end, iv.end), last.label)
        else:
            merged.append(iv)
    return merged


def contained(iv: Interval, merged: Sequence[Interval]) -> bool:
    return any(m.version == iv.version and m.start <= iv.start and iv.end <= m.end for m in merged)


def first_overlap(iv: Interval, intervals: Iterable[Interval]) -> Interval | None:
    return next((d for d in intervals if d.overlaps(iv)), None)


def normalize_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def name_matches(name: str, pattern: str) -> bool:
    """``*.x`` matches every name below ``x`` (not ``x`` itself); anything else matches exactly."""
    name, pattern = normalize_name(name), normalize_name(pattern)
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return fnmatch.fnmatchcase(name, pattern) if "*" in pattern else name == pattern


class Scope(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A client's grant. Empty target lists allow nothing: no scope, no scan."""

    targets: list[str] = msgspec.field(default_factory=list)
    hostnames: list[str] = msgspec.field(default_factory=list)
    exclude: list[str] = msgspec.field(default_factory=list)
    pools: list[str] = msgspec.field(default_factory=lambda: [ALL])
    scan_types: list[ScanType] = msgspec.field(default_factory=lambda: ["untrusted"])
    credential_refs: list[str] = msgspec.field(default_factory=list)
    max_targets: int = 256
    max_active: int = 20
    submissions_per_minute: int = 30
    # Scans a human must confirm (MCP elicitation) before they are queued: more addresses than
    # this, or of these types. A client that cannot ask a human is refused such scans.
    confirm_over_targets: int | None = None
    confirm_scan_types: list[ScanType] = msgspec.field(default_factory=list)
    # Scheduling: the client's fair-share weight within a pool, and the highest priority it may ask for.
    weight: float = 1.0
    max_priority: Priority = "normal"

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ValueError(f"weight must be positive, got {self.weight}")

    def allows_priority(self, priority: Priority) -> bool:
        return PRIORITIES.index(priority) >= PRIORITIES.index(self.max_priority)

    def capped_priority(self, priority: Priority) -> Priority:
        """``priority``, lowered to what the scope allows: work carried on for a client (a
        rollover, a rescan, a schedule firing) after its scope shrank still runs, just lower."""
        return priority if self.allows_priority(priority) else self.max_priority

    def allows_pool(self, pool: str) -> bool:
        return ALL in self.pools or pool in self.pools

    def summary(self) -> dict[str, object]:
        """What this client may scan, for refusals an agent can correct itself from."""
        return {
            "targets": self.targets,
            "hostnames": self.hostnames,
            "exclude": self.exclude,
            "pools": self.pools,
            "scan_types": self.scan_types,
            "credential_refs": self.credential_refs,
            "max_targets": self.max_targets,
            "max_priority": self.max_priority,
        }


@dataclass(frozen=True)
class CompiledScope:
    """A scope with its ranges parsed once (config load), so each check is arithmetic only."""

    scope: Scope
    allowed: list[Interval]
    excluded: list[Interval]

    @classmethod
    def of(cls, scope: Scope) -> CompiledScope:
        return cls(
            scope=scope,
            allowed=merge(parse_ranges(scope.targets, what="scope.targets")),
            excluded=parse_ranges(scope.exclude, what="scope.exclude"),
        )


@dataclass(frozen=True)
class DenyList:
    """Denied to every client: the built-in ranges plus the deployment's own infrastructure."""

    ranges: tuple[Interval, ...]
    names: tuple[str, ...] = DENIED_NAMES

    @classmethod
    def build(cls, extra: Iterable[str] = (), infrastructure: Iterable[IPAddress] = ()) -> DenyList:
        ranges = [*parse_ranges(ALWAYS_DENIED, what="always denied")]
        ranges += parse_ranges(extra, what="deny")
        ranges += [Interval(a.version, int(a), int(a), f"{a} (scanfleet infrastructure)") for a in infrastructure]
        return cls(tuple(ranges))


RefusalCode = Literal[
    "target_denied",
    "target_out_of_scope",
    "pool_not_allowed",
    "scan_type_not_allowed",
    "credential_ref_not_allowed",
    "scan_too_large",
    "no_scope",
    "priority_not_allowed",
]


class ScopeRefusal(Exception):
    """Why a submission is refused; ``code`` is stable, ``target`` names the offending entry."""

    def __init__(self, code: RefusalCode, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.target = target


@dataclass(frozen=True)
class Submission:
    targets: Sequence[Target]
    scan_type: ScanType
    pool: str
    credential_ref: str | None = None
    priority: Priority = "normal"


def check_submission(
    submission: Submission,
    scope: CompiledScope,
    deny: DenyList,
    resolved: Mapping[str, Sequence[IPAddress]] | None = None,
) -> None:
    """Raise ``ScopeRefusal`` for the first thing out of scope; ``resolved`` maps host names to
    the addresses they resolved to at submission (absent or empty: did not resolve)."""
    grant = scope.scope
    if not grant.targets and not grant.hostnames:
        raise ScopeRefusal("no_scope", "this client has no scan scope configured; an admin must grant one")
    if submission.scan_type not in grant.scan_types:
        raise ScopeRefusal("scan_type_not_allowed", f"scan type {submission.scan_type!r} is not allowed")
    if not grant.allows_priority(submission.priority):
        raise ScopeRefusal(
            "priority_not_allowed",
            f"priority {submission.priority!r} is not allowed; this client may ask for {grant.max_priority!r} at most",
        )
    if not grant.allows_pool(submission.pool):
        raise ScopeRefusal("pool_not_allowed", f"pool {submission.pool!r} is not allowed")
    ref = submission.credential_ref
    if ref is not None and ALL not in grant.credential_refs and ref not in grant.credential_refs:
        raise ScopeRefusal("credential_ref_not_allowed", f"credential_ref {ref!r} is not allowed")
    size = sum(t.addresses for t in submission.targets)
    if size > grant.max_targets:
        raise ScopeRefusal(
            "scan_too_large", f"the targets cover {size} addresses; this client may scan {grant.max_targets} at once"
        )
    for target in submission.targets:
        if target.kind == "hostname":
            _check_name(target.text, scope, deny, (resolved or {}).get(target.text, ()))
        else:
            _check_interval(interval_of(target), scope, deny)


def _check_interval(iv: Interval, scope: CompiledScope, deny: DenyList) -> None:
    denied = first_overlap(iv, deny.ranges)
    if denied is not None:
        raise ScopeRefusal(
            "target_denied", f"{iv.label} overlaps {denied.label}, which is never scanned", target=iv.label
        )
    excluded = first_overlap(iv, scope.excluded)
    if excluded is not None:
        raise ScopeRefusal(
            "target_out_of_scope", f"{iv.label} overlaps {excluded.label}, excluded for this client", target=iv.label
        )
    if not contained(iv, scope.allowed):
        raise ScopeRefusal("target_out_of_scope", f"{iv.label} is outside this client's scope", target=iv.label)


def _check_name(name: str, scope: CompiledScope, deny: DenyList, addresses: Sequence[IPAddress]) -> None:
    if any(name_matches(name, p) for p in deny.names):
        raise ScopeRefusal("target_denied", f"{name} names this host, which is never scanned", target=name)
    if not any(name_matches(name, p) for p in scope.scope.hostnames):
        raise ScopeRefusal("target_out_of_scope", f"{name} matches none of this client's host names", target=name)
    for address in addresses:
        iv = Interval(address.version, int(address), int(address), str(address))
        hit = first_overlap(iv, deny.ranges) or first_overlap(iv, scope.excluded)
        if hit is not None:
            raise ScopeRefusal(
                "target_denied", f"{name} resolves to {address}, inside {hit.label}, which it may not scan", target=name
            )
