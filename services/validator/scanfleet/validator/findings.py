"""The typed record for one ``ReportItem`` of a .nessus export.

The old parser kept severity as a string and invented a ``cvss_score`` field that real exports
never carry, which broke every numeric filter; here numbers are numbers and only real tags appear.
"""

from __future__ import annotations

import msgspec


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One plugin result on one host and port, in the order the export lists it.

    ``host`` is ``ReportHost@name``; ``ip`` is the ``host-ip`` host property, ``None`` when the
    export has none. Scores the export omits (common: VPR and EPSS are recent) are ``None``.
    """

    host: str
    ip: str | None
    port: int
    protocol: str
    svc_name: str
    plugin_id: int
    plugin_name: str
    plugin_family: str
    severity: int
    risk_factor: str | None = None
    cvss_base_score: float | None = None
    cvss3_base_score: float | None = None
    vpr_score: float | None = None
    epss_score: float | None = None
    cve: list[str] = []
    exploit_available: bool = False
    synopsis: str | None = None
    description: str | None = None
    solution: str | None = None
    plugin_output: str | None = None
    see_also: str | None = None
