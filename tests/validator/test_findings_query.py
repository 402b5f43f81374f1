"""Filters, sorting and projection over findings built from the real corpus, checked against lxml.

Each expectation is computed independently, from SOURCES.md counts or a plain lxml pass over the
same file, never from the query code itself.
"""

from __future__ import annotations

import io
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from scanfleet.common.findings import FINDING_FIELDS, MAGIC, encode_frame
from scanfleet.gateway import findings_query as q
from scanfleet.validator.parsing import parse_export

# (file, severity 0..4) copied by hand from SOURCES.md.
SOURCES_SEVERITIES: dict[str, tuple[int, int, int, int, int]] = {
    "defectdojo__nessus_v_unknown.nessus": (266, 7, 23, 0, 0),
    "defectdojo__nessus_with_cvssv3.nessus": (23, 1, 13, 10, 2),
    "python-libnessus__nessus_report_localpci.nessus": (94, 5, 44, 21, 3),
    "python-libnessus__nessus_report_local_3.nessus": (71, 10, 20, 3, 2),
    "ruby-nessus__example_v3.nessus": (118, 8, 16, 5, 8),
    "pytenable__example.nessus": (135, 2, 9, 77, 7),
    "mitre-saf__sample.nessus": (140, 2, 5, 1, 1),
    "mitre-saf__nessus_sample.nessus": (39, 42, 6, 333, 0),
    "sner4__parser-nessus-simple.nessus": (1, 0, 0, 1, 0),
}


def index_of(source: Path | bytes, task_id: str = "t1") -> q.FindingsIndex:
    frames = bytearray(MAGIC)

    def keep(finding: Any) -> None:
        frames.extend(encode_frame(finding))

    parsed = parse_export(io.BytesIO(source) if isinstance(source, bytes) else source, on_finding=keep)
    return q.build_index(task_id, "sha", bytes(frames), parsed.hosts)


def run(index: q.FindingsIndex, filters: dict[str, Any] | None = None, sort: str | None = None) -> list[int]:
    return q.select(index, q.parse_filters(filters), q.parse_sort(sort))


def items(corpus: Path, name: str) -> list[Any]:
    return list(etree.parse(str(corpus / name)).iter("ReportItem"))


@pytest.mark.parametrize("name", sorted(SOURCES_SEVERITIES))
def test_severity_filters_match_sources_counts(corpus: Path, name: str) -> None:
    sev = SOURCES_SEVERITIES[name]
    index = index_of(corpus / name)
    assert len(run(index, {"severity": ">=3"})) == sev[3] + sev[4]
    assert len(run(index, {"severity": "high"})) == sev[3]
    assert len(run(index, {"severity": [3, 4]})) == sev[3] + sev[4]
    assert len(run(index, {"severity": "critical,high"})) == sev[3] + sev[4]
    assert len(run(index, {"severity": 4})) == sev[4]
    assert len(run(index, {"severity": "<2"})) == sev[0] + sev[1]
    assert len(run(index, {"severity": ">info"})) == sum(sev[1:])
    assert q.matched_counts(index, run(index, {"severity": ">=3"})) == [0, 0, 0, sev[3], sev[4]]


def test_cvss_ranges_against_lxml(corpus: Path) -> None:
    name = "defectdojo__nessus_with_cvssv3.nessus"
    index = index_of(corpus / name)
    cvss3 = [float(t) for i in items(corpus, name) if (t := i.findtext("cvss3_base_score"))]
    cvss2 = [float(t) for i in items(corpus, name) if (t := i.findtext("cvss_base_score"))]
    assert cvss3 and cvss2
    assert len(run(index, {"cvss3": ">=7"})) == sum(s >= 7 for s in cvss3) > 0
    assert len(run(index, {"cvss3": "4..6.9"})) == sum(4 <= s <= 6.9 for s in cvss3)
    assert len(run(index, {"cvss3": [9, None]})) == sum(s >= 9 for s in cvss3)
    assert len(run(index, {"cvss": "<5"})) == sum(s < 5 for s in cvss2)
    assert len(run(index, {"cvss": ">5", "cvss3": ">=7"})) == sum(
        1
        for i in items(corpus, name)
        if (a := i.findtext("cvss_base_score"))
        and (b := i.findtext("cvss3_base_score"))
        and float(a) > 5
        and float(b) >= 7
    )


def test_cve_exploit_port_plugin_family_text_against_lxml(corpus: Path) -> None:
    name = "pytenable__example.nessus"
    index = index_of(corpus / name)
    raw = items(corpus, name)
    cve = next(c.text for i in raw for c in i.findall("cve"))
    assert len(run(index, {"cve": cve.lower()})) == sum(any(c.text == cve for c in i.findall("cve")) for i in raw)
    exploitable = sum(i.findtext("exploit_available") == "true" for i in raw)
    assert len(run(index, {"exploit_available": True})) == exploitable > 0
    assert len(run(index, {"exploit_available": "false"})) == len(raw) - exploitable
    port = int(raw[-1].get("port"))
    assert len(run(index, {"port": port})) == sum(int(i.get("port")) == port for i in raw)
    family = raw[-1].get("pluginFamily")
    assert len(run(index, {"plugin_family": family.upper()})) == sum(i.get("pluginFamily") == family for i in raw)
    assert len(run(index, {"plugin_id": "19506,10287"})) == sum(i.get("pluginID") in ("19506", "10287") for i in raw)
    hits = sum("windows" in (i.get("pluginName") + "\n" + (i.findtext("synopsis") or "")).lower() for i in raw)
    assert len(run(index, {"text": "Windows"})) == hits > 0


HOSTS_DOC = (
    b"<NessusClientData_v2><Report name='r'>"
    + b"".join(
        f"<ReportHost name='{name}'><HostProperties><tag name='host-ip'>{ip}</tag>"
        f"<tag name='host-fqdn'>{fqdn}</tag></HostProperties>"
        f"<ReportItem port='{port}' protocol='tcp' svc_name='x' severity='{sev}' pluginID='{pid}' "
        f"pluginName='p{pid}' pluginFamily='f'><cvss3_base_score>{score}</cvss3_base_score></ReportItem>"
        "</ReportHost>".encode()
        for name, ip, fqdn, port, sev, pid, score in (
            ("10.0.0.1", "10.0.0.1", "a.example.org", 22, 2, 1, 5.0),
            ("10.0.0.10", "10.0.0.10", "aa.example.org", 80, 4, 2, 9.8),
            ("web", "192.168.5.7", "web.example.org", 443, 4, 3, 10.0),
            ("10.0.1.3", "10.0.1.3", "b.example.org", 443, 3, 4, 7.5),
        )
    )
    + b"</Report></NessusClientData_v2>"
)


def hosts_of(index: q.FindingsIndex, rows: list[int]) -> list[str]:
    return [index.heads[i].host for i in rows]


def test_host_filter_is_exact_never_a_substring() -> None:
    index = index_of(HOSTS_DOC)
    assert hosts_of(index, run(index, {"host": "10.0.0.1"})) == ["10.0.0.1"]
    assert sorted(hosts_of(index, run(index, {"host": "10.0.0.0/24"}))) == ["10.0.0.1", "10.0.0.10"]
    assert hosts_of(index, run(index, {"host": "WEB.example.org"})) == ["web"]
    assert hosts_of(index, run(index, {"host": "192.168.5.7"})) == ["web"]
    assert hosts_of(index, run(index, {"host": "example"})) == []
    assert sorted(hosts_of(index, run(index, {"host": ["web", "10.0.1.0/24"]}))) == ["10.0.1.3", "web"]


def test_default_sort_is_severity_then_cvss_descending() -> None:
    index = index_of(HOSTS_DOC)
    assert hosts_of(index, run(index)) == ["web", "10.0.0.10", "10.0.1.3", "10.0.0.1"]
    assert hosts_of(index, run(index, sort="host")) == ["10.0.0.1", "10.0.0.10", "10.0.1.3", "web"]
    assert hosts_of(index, run(index, sort="port,-cvss3")) == ["10.0.0.1", "10.0.0.10", "web", "10.0.1.3"]


def test_default_order_on_real_file_is_monotonic(corpus: Path) -> None:
    index = index_of(corpus / "defectdojo__nessus_with_cvssv3.nessus")
    keys = [(index.heads[i].severity, index.heads[i].cvss3_base_score or -1.0) for i in run(index)]
    assert keys == sorted(keys, reverse=True)
    assert sorted(run(index)) == list(range(len(index)))


@pytest.mark.parametrize(
    ("filters", "code", "hint"),
    [
        ({"severity": ">=7"}, "invalid_filter", "severity"),
        ({"severity": "bad"}, "invalid_filter", "severity"),
        ({"cvss3": "high"}, "invalid_filter", "cvss3"),
        ({"cve": "log4j"}, "invalid_filter", "CVE"),
        ({"host": "10.0.0.0/33"}, "invalid_filter", "CIDR"),
        ({"port": "https"}, "invalid_filter", "integer"),
        ({"exploit_available": "maybe"}, "invalid_filter", "true or false"),
        ({"cvss_score": ">7"}, "invalid_filter", "unknown filter"),
    ],
)
def test_invalid_filters_are_clear_errors(filters: dict[str, Any], code: str, hint: str) -> None:
    with pytest.raises(q.QueryError) as info:
        q.parse_filters(filters)
    assert info.value.code == code
    assert hint in info.value.message
    if "unknown" in hint:
        assert "severity" in info.value.details["valid_filters"]


def test_profiles_and_custom_fields() -> None:
    assert q.resolve_fields(None, None) == ("summary", q.PROFILES["summary"])
    assert q.resolve_fields("full", None)[1] == FINDING_FIELDS
    assert q.resolve_fields("brief", ["host", "cve", "host"]) == ("custom", ("host", "cve"))
    with pytest.raises(q.QueryError) as info:
        q.resolve_fields(None, ["host", "cvss_score"])
    assert "cvss_score" in info.value.message and "cvss3_base_score" in info.value.details["valid_fields"]
    with pytest.raises(q.QueryError) as info:
        q.resolve_fields("verbose", None)
    assert info.value.details["valid_profiles"] == ["minimal", "summary", "brief", "full"]


def test_projection_caps_cves_and_long_texts_outside_full(corpus: Path) -> None:
    index = index_of(corpus / "pytenable__example.nessus")
    many = max(range(len(index)), key=lambda i: len(index.heads[i].cve))
    finding = index.finding(many)
    assert len(finding.cve) > q.CVE_SHOWN
    short = q.project(finding, q.PROFILES["summary"])
    assert short["cve"] == finding.cve[: q.CVE_SHOWN]
    assert short["cve_more"] == len(finding.cve) - q.CVE_SHOWN
    assert q.project(finding, q.PROFILES["full"])["cve"] == finding.cve
    assert set(q.project(finding, q.PROFILES["minimal"])) == set(q.PROFILES["minimal"])


def test_cursor_is_bound_to_its_query() -> None:
    index = index_of(HOSTS_DOC)
    a = q.query_hash(index, q.parse_filters({"severity": ">=3"}), q.parse_sort(None))
    b = q.query_hash(index, q.parse_filters({"severity": ">=2"}), q.parse_sort(None))
    assert a != b
    assert a == q.query_hash(index, q.parse_filters({"severity": [3, 4]}), q.parse_sort(None))
    cursor = q.encode_cursor(a, 7)
    assert q.decode_cursor(cursor, a) == 7
    with pytest.raises(q.QueryError) as info:
        q.decode_cursor(cursor, b)
    assert info.value.code == "cursor_mismatch"
    with pytest.raises(q.QueryError) as info:
        q.decode_cursor("not-a-cursor!", a)
    assert info.value.code == "invalid_cursor"


def test_host_keys_sort_numerically() -> None:
    index = index_of(HOSTS_DOC)
    ordered = sorted(index.hosts, key=index.host_sort_key)
    assert ordered == ["10.0.0.1", "10.0.0.10", "10.0.1.3", "web"]
    assert index.addresses[ordered[0]] == ipaddress.ip_address("10.0.0.1")
