"""Which hosts a stopped or timed-out scan did not reach: pure.

Nessus reports per-host progress of a stopped scan; a host at 100 % was scanned. Every other
host the targets name is left for a rollover: hosts Nessus had started, and hosts it never got
to (an address of a range it had not reached is not listed at all). Ranges and networks are
expanded to their addresses, so the rollover names exactly the hosts left.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from scanfleet.common.scope import interval_of
from scanfleet.common.targets import parse_target

MAX_EXPANDED = 65_536


def target_hosts(targets: Iterable[str]) -> list[str]:
    """Every host the targets name, in order, without repeats (names as given, addresses expanded)."""
    out: dict[str, None] = {}
    for text in targets:
        target = parse_target(text)
        if target.kind == "hostname":
            out[target.text] = None
            continue
        iv = interval_of(target)
        cls = ipaddress.IPv4Address if iv.version == 4 else ipaddress.IPv6Address
        for value in range(iv.start, min(iv.end, iv.start + MAX_EXPANDED - 1) + 1):
            out[str(cls(value))] = None
    return list(out)


def split_hosts(targets: Iterable[str], progress: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """(done, left): ``progress`` maps host names Nessus listed to their percent done."""
    done = {host.lower() for host, pct in progress.items() if pct >= 100}
    hosts = target_hosts(targets)
    return [h for h in hosts if h.lower() in done], [h for h in hosts if h.lower() not in done]
