"""Target parsing the way Nessus does it: validate, count, then expand to host addresses."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_SPLIT = re.compile(r"[\s,]+")


class InvalidTargets(ValueError):
    """A target entry Nessus would refuse."""


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One entry of `text_targets`; `single` entries are always treated as alive."""

    text: str
    first: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    last: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    hostname: str | None = None

    @property
    def single(self) -> bool:
        return self.hostname is not None or self.first == self.last

    @property
    def count(self) -> int:
        if self.first is None or self.last is None:
            return 1
        return int(self.last) - int(self.first) + 1

    def addresses(self) -> Iterator[str]:
        if self.hostname is not None:
            yield self.hostname
            return
        assert self.first is not None and self.last is not None
        cls = type(self.first)
        for value in range(int(self.first), int(self.last) + 1):
            yield str(cls(value))


def _looks_like_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_hostname(text: str) -> bool:
    """RFC 1123 host name; an all-numeric last label is refused so bad IPs are not taken for names."""
    if len(text) > 253:
        return False
    labels = text.rstrip(".").split(".")
    return all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def parse_entry(entry: str) -> TargetSpec:
    """Parse one address, CIDR, range (`a.b.c.d-e` or `a.b.c.d-a.b.c.e`) or host name."""
    try:
        address = ipaddress.ip_address(entry)
        return TargetSpec(entry, address, address)
    except ValueError:
        pass
    if "/" in entry:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise InvalidTargets(f"invalid CIDR {entry!r}") from exc
        first, last = network.network_address, network.broadcast_address
        if network.version == 4 and network.prefixlen <= 30:
            first, last = first + 1, last - 1
        return TargetSpec(entry, first, last)
    if "-" in entry and entry.count("-") == 1 and _looks_like_ip(entry.split("-")[0]):
        start_text, end_text = entry.split("-")
        try:
            start = ipaddress.ip_address(start_text)
            if start.version == 4 and end_text.isdigit():
                end = ipaddress.ip_address(".".join([*start_text.split(".")[:3], end_text]))
            else:
                end = ipaddress.ip_address(end_text)
        except ValueError as exc:
            raise InvalidTargets(f"invalid range {entry!r}") from exc
        if start.version != end.version or int(end) < int(start):
            raise InvalidTargets(f"invalid range {entry!r}")
        return TargetSpec(entry, start, end)
    if is_hostname(entry):
        return TargetSpec(entry, None, None, hostname=entry.lower().rstrip("."))
    raise InvalidTargets(f"invalid target {entry!r}")


def parse_targets(text: str, max_hosts: int) -> list[TargetSpec]:
    """Split on commas and whitespace and validate every entry before anything is expanded."""
    entries = [e for e in _SPLIT.split(text.strip()) if e]
    if not entries:
        raise InvalidTargets("no targets")
    specs = [parse_entry(e) for e in entries]
    total = sum(s.count for s in specs)
    if total > max_hosts:
        raise InvalidTargets(f"{total} targets exceed the limit of {max_hosts}")
    return specs
