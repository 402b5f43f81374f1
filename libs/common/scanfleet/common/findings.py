"""The findings store: typed findings and per-host summaries, written once per task by the validator.

Object ``<task_id>.findings`` in ``scan_findings`` is ``MAGIC`` then one frame per finding: a
little-endian u32 length and the msgpack of a ``Finding``. Findings encode as arrays (field order is
the schema: new fields are only ever appended, with defaults), so a reader that needs only the
leading fields decodes a prefix struct such as ``FindingHead`` and never touches the long texts.
Object ``<task_id>.hosts`` is the msgpack of a ``HostsDoc``. The gateway answers every query from
these two objects; nobody re-parses the XML.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import msgspec

from scanfleet.common.messages import AuthVerdict, SeverityCounts

MAGIC = b"SFF1"
_LEN = struct.Struct("<I")


class Finding(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
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


FINDING_FIELDS: tuple[str, ...] = Finding.__struct_fields__


class FindingHead(msgspec.Struct, kw_only=True, array_like=True):
    """The leading fields of a stored ``Finding``: everything filters and sorting read."""

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


assert FINDING_FIELDS[: len(FindingHead.__struct_fields__)] == FindingHead.__struct_fields__


class HostRecord(msgspec.Struct, kw_only=True):
    """One scanned host: its properties, counts and authentication verdict with evidence."""

    name: str
    ip: str | None = None
    fqdn: str | None = None
    os: str | None = None
    start: str | None = None
    end: str | None = None
    credentialed_scan: bool | None = None
    severity_counts: SeverityCounts
    item_count: int
    auth: AuthVerdict
    auth_evidence: list[str] = []
    credentialed_checks: str | None = None
    auth_plugins: list[int] = []


class HostsDoc(msgspec.Struct, kw_only=True):
    v: int = 1
    task_id: str
    finding_count: int
    hosts: list[HostRecord]


_encoder = msgspec.msgpack.Encoder()


def encode_frame(finding: Finding) -> bytes:
    body = _encoder.encode(finding)
    return _LEN.pack(len(body)) + body


def encode_hosts(doc: HostsDoc) -> bytes:
    return _encoder.encode(doc)


def decode_hosts(data: bytes) -> HostsDoc:
    return msgspec.msgpack.decode(data, type=HostsDoc)


class CorruptFindings(ValueError):
    pass


def iter_frames(buf: bytes | memoryview) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of each finding's msgpack body in a findings object."""
    view = memoryview(buf)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise CorruptFindings("not a scanfleet findings object (bad magic)")
    pos, end = len(MAGIC), len(view)
    while pos < end:
        if pos + _LEN.size > end:
            raise CorruptFindings(f"truncated frame header at byte {pos}")
        (length,) = _LEN.unpack_from(view, pos)
        pos += _LEN.size
        if pos + length > end:
            raise CorruptFindings(f"truncated frame at byte {pos}")
        yield pos, length
        pos += length


_finding_decoder = msgspec.msgpack.Decoder(Finding)
_head_decoder = msgspec.msgpack.Decoder(FindingHead)


def decode_finding(body: bytes | memoryview) -> Finding:
    return _finding_decoder.decode(body)


def decode_head(body: bytes | memoryview) -> FindingHead:
    return _head_decoder.decode(body)
