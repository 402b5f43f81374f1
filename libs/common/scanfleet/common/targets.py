"""Scan targets as scanfleet accepts them: addresses, CIDRs, ranges and host names.

Anything else (URLs, shell metacharacters, empty entries, absurd sizes) is refused at the
gateway with a message that names the bad entry, before it can reach a scanner.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_SPLIT = re.compile(r"[\s,]+")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_RANGE_TAIL = re.compile(r"^\d{1,3}$")

MAX_ADDRESSES = 65_536


class InvalidTarget(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    text: str
    addresses: int
    kind: str


def _hostname(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return len(text) <= 253 and all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _range(entry: str, start_text: str, end_text: str) -> Target:
    """``a.b.c.d-e`` (same /24) or ``a.b.c.d-a.b.c.e``."""
    start = ipaddress.ip_address(start_text)
    try:
        if start.version == 4 and _RANGE_TAIL.match(end_text):
            end = ipaddress.ip_address(".".join([*start_text.split(".")[:3], end_text]))
        else:
            end = ipaddress.ip_address(end_text)
    except ValueError:
        raise InvalidTarget(f"{entry!r} is not a valid address range") from None
    if start.version != end.version or int(end) < int(start):
        raise InvalidTarget(f"{entry!r}: the range ends before it starts or mixes IPv4 and IPv6")
    return Target(entry, int(end) - int(start) + 1, "range")


def parse_target(entry: str) -> Target:
    try:
        ipaddress.ip_address(entry)
        return Target(entry, 1, "address")
    except ValueError:
        pass
    if "/" in entry:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise InvalidTarget(f"{entry!r} is not a valid CIDR network") from None
        return Target(str(network), network.num_addresses, "cidr")
    start_text, dash, end_text = entry.partition("-")
    if dash and _is_address(start_text):
        return _range(entry, start_text, end_text)
    if _hostname(entry):
        return Target(entry.lower(), 1, "hostname")
    raise InvalidTarget(f"{entry!r} is not an IP address, CIDR, range or host name")


def parse_targets(text: str | list[str], *, max_addresses: int = MAX_ADDRESSES) -> list[Target]:
    """Split on commas and white space, validate each entry, and bound the total size."""
    raw = text if isinstance(text, list) else [text]
    entries = [e for chunk in raw for e in _SPLIT.split(chunk.strip()) if e]
    if not entries:
        raise InvalidTarget("no targets given")
    unique: dict[str, Target] = {}
    for entry in entries:
        target = parse_target(entry)
        unique.setdefault(target.text, target)
    total = sum(t.addresses for t in unique.values())
    if total > max_addresses:
        raise InvalidTarget(f"targets cover {total} addresses; the limit is {max_addresses}")
    return list(unique.values())
