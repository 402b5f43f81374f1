"""The emulated network across runs: stable findings per host, and what changes from one run to the next.

Real networks change between two scans of the same targets: a patch fixes a finding, a new
service adds one, a host is down, a password rotates so the login fails. A run takes the world's
``epoch`` when it is launched; the changes listed for that epoch apply to it, and only to it
(every other run sees the baseline). With ``seed`` set, every emulated scanner generates the
same findings for the same host, so a rescan on another scanner finds the same things.
"""

from __future__ import annotations

from typing import Literal

import msgspec

ChangeKind = Literal["added", "fixed", "down", "login_fails"]


class HostChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One difference from the baseline: ``plugin_id`` names the finding ``added`` or ``fixed``."""

    host: str
    kind: ChangeKind
    plugin_id: int | None = None


class World(msgspec.Struct, kw_only=True):
    epoch: int = 1
    seed: int | None = None
    changes: dict[int, list[HostChange]] = msgspec.field(default_factory=dict)

    def at(self, epoch: int) -> list[HostChange]:
        return list(self.changes.get(epoch, []))


class WorldBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /_emulator/world``: fields left out keep their value; ``changes`` replaces all epochs given."""

    epoch: int | None = None
    seed: int | None = None
    changes: dict[int, list[HostChange]] | None = None
    reset: bool = False


def apply_world(world: World, body: WorldBody) -> None:
    if body.reset:
        world.epoch, world.seed, world.changes = 1, None, {}
    if body.epoch is not None:
        world.epoch = body.epoch
    if body.seed is not None:
        world.seed = body.seed
    if body.changes is not None:
        world.changes.update(body.changes)


def hosts_down(changes: list[HostChange]) -> frozenset[str]:
    return frozenset(c.host for c in changes if c.kind == "down")


def logins_failing(changes: list[HostChange]) -> frozenset[str]:
    return frozenset(c.host for c in changes if c.kind == "login_fails")


def plugin_changes(changes: list[HostChange], host: str) -> tuple[frozenset[int], frozenset[int]]:
    """(added, fixed) plugin ids on ``host``."""
    added = frozenset(c.plugin_id for c in changes if c.host == host and c.kind == "added" and c.plugin_id)
    fixed = frozenset(c.plugin_id for c in changes if c.host == host and c.kind == "fixed" and c.plugin_id)
    return added, fixed
