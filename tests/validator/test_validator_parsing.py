"""The streaming parser against the real-export corpus (counts from SOURCES.md) and hostile inputs."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest
from lxml import etree

from scanfleet.common.findings import Finding
from scanfleet.validator.parsing import ExportRejected, Limits, parse_export
from tests.helpers import MALFORMED


class Expected(NamedTuple):
    hosts: int
    items: int
    sev: tuple[int, int, int, int, int]
    """Severity 0..4."""
    creds: tuple[str | None, ...]
    """The ``Credentialed checks`` value per 19506 item (None: 19506 without that line)."""


# Ground truth copied by hand from ../shared/corpus/nessus/SOURCES.md.
EXPECTED: dict[str, Expected] = {
    "defectdojo__nessus_v_unknown.nessus": Expected(7, 296, (266, 7, 23, 0, 0), ("no",) * 7),
    "defectdojo__nessus_with_cvssv3.nessus": Expected(1, 49, (23, 1, 13, 10, 2), ("no",)),
    "defectdojo__nessus_many_vuln.nessus": Expected(1, 7, (7, 0, 0, 0, 0), ("no",)),
    "defectdojo__issue_6992.nessus": Expected(1, 1, (0, 0, 1, 0, 0), ()),
    "defectdojo__nessus_was_many_vuln.nessus": Expected(1, 5, (1, 3, 0, 1, 0), ()),
    "python-libnessus__nessus_report_test_local.nessus": Expected(2, 147, (119, 8, 19, 0, 1), ("yes", "no")),
    "python-libnessus__nessus_report_localpci.nessus": Expected(1, 167, (94, 5, 44, 21, 3), ("yes",)),
    "python-libnessus__nessus_report_local_3.nessus": Expected(3, 106, (71, 10, 20, 3, 2), ("no",) * 3),
    "ruby-nessus__example_v2.nessus": Expected(2, 69, (19, 47, 3, 0, 0), (None, None)),
    "ruby-nessus__example_v3.nessus": Expected(1, 155, (118, 8, 16, 5, 8), ("no",)),
    "pytenable__example.nessus": Expected(1, 230, (135, 2, 9, 77, 7), ("yes",)),
    "mitre-saf__sample.nessus": Expected(3, 149, (140, 2, 5, 1, 1), ("no", "no", "yes (on the localhost)")),
    "mitre-saf__nessus_sample.nessus": Expected(3, 420, (39, 42, 6, 333, 0), ("yes (on the localhost)",) * 3),
    "sner4__parser-nessus-simple.nessus": Expected(2, 2, (1, 0, 0, 1, 0), ("no",)),
}
SEV_KEYS = ("info", "low", "medium", "high", "critical")


def test_every_corpus_file_has_expectations(corpus: Path) -> None:
    files = {p.name for p in corpus.glob("*.nessus")}
    assert files == set(EXPECTED) | {MALFORMED}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_counts(corpus: Path, name: str) -> None:
    exp = EXPECTED[name]
    path = corpus / name
    findings: list[Finding] = []
    summary = parse_export(path, on_finding=findings.append)
    assert summary.host_count == exp.hosts
    assert summary.item_count == exp.items
    assert summary.severity_counts == {key: exp.sev[i] for i, key in enumerate(SEV_KEYS)}
    assert summary.total_vulnerabilities == sum(exp.sev[1:])
    assert summary.file_size == path.stat().st_size
    assert len(findings) == exp.items
    assert Counter(f.severity for f in findings) == Counter({i: n for i, n in enumerate(exp.sev) if n})
    assert sum(h.item_count for h in summary.hosts) == exp.items
    values = [h.credentialed_checks for h in summary.hosts if 19506 in h.auth_plugins]
    assert Counter(values) == Counter(exp.creds)
    assert summary.warnings == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_stream_source_matches_path_source(corpus: Path, name: str) -> None:
    path = corpus / name
    with path.open("rb") as fh:
        from_stream = parse_export(fh)
    assert from_stream == parse_export(path)


def test_malformed_file_rejected_with_line(corpus: Path) -> None:
    with pytest.raises(ExportRejected) as info:
        parse_export(corpus / MALFORMED)
    assert info.value.reason == "xml_invalid"
    assert "line 1488" in info.value.message


def test_expected_hosts_warning(corpus: Path) -> None:
    summary = parse_export(corpus / "mitre-saf__sample.nessus", expected_hosts=5)
    assert summary.warnings == ["3 host(s) in the export, fewer than the 5 expected"]


def test_host_properties(corpus: Path) -> None:
    summary = parse_export(corpus / "sner4__parser-nessus-simple.nessus")
    first = summary.hosts[0]
    assert summary.report_name == "fabricated test report"
    assert (first.name, first.ip, first.fqdn, first.os) == (
        "127.128.129.130",
        "127.128.129.130",
        "serverx.localdomain",
        "Microsoft Windows Vista",
    )
    assert (first.start, first.end) == ("Mon Mar 11 14:23:16 2019", "Mon Mar 11 14:42:06 2019")
    assert first.credentialed_scan is False


# --- per-host authentication verdicts on real files ---------------------------------------------


def verdicts(corpus: Path, name: str) -> dict[str, str]:
    return {h.name: h.auth for h in parse_export(corpus / name).hosts}


def test_verdicts_one_yes_one_no(corpus: Path) -> None:
    assert verdicts(corpus, "python-libnessus__nessus_report_test_local.nessus") == {
        "192.168.1.3": "success",
        "192.168.1.1": "not_attempted",
    }


def test_verdicts_localhost_yes_and_failed_logins(corpus: Path) -> None:
    summary = parse_export(corpus / "mitre-saf__sample.nessus")
    by_name = {h.name: h for h in summary.hosts}
    assert by_name["10.0.0.3"].auth == "success"
    assert by_name["10.0.0.3"].credentialed_checks == "yes (on the localhost)"
    assert any("141118" in e for e in by_name["10.0.0.3"].auth_evidence)
    for name in ("10.0.0.1", "10.0.0.2"):
        assert by_name[name].auth == "failed"
        assert any("104410" in e for e in by_name[name].auth_evidence)


def test_verdicts_old_19506_without_line(corpus: Path) -> None:
    summary = parse_export(corpus / "ruby-nessus__example_v2.nessus")
    assert [h.auth for h in summary.hosts] == ["not_evaluable", "not_evaluable"]
    assert all(h.credentialed_checks is None for h in summary.hosts)


def test_verdicts_no_19506(corpus: Path) -> None:
    summary = parse_export(corpus / "defectdojo__issue_6992.nessus")
    (host,) = summary.hosts
    assert 19506 not in host.auth_plugins
    assert host.auth == "not_attempted"
    assert any("Credentialed_Scan=false" in e for e in host.auth_evidence)


def test_verdicts_failure_plugin_21745(corpus: Path) -> None:
    assert verdicts(corpus, "python-libnessus__nessus_report_local_3.nessus") == {
        "192.168.2.104": "not_attempted",
        "192.168.2.101": "failed",
        "192.168.2.100": "failed",
    }


def test_null_session_is_not_a_login(corpus: Path) -> None:
    summary = parse_export(corpus / "defectdojo__nessus_v_unknown.nessus")
    assert {h.auth for h in summary.hosts} == {"not_attempted"}


# --- typed findings against an independent lxml pass --------------------------------------------


def test_findings_typed_values(corpus: Path) -> None:
    path = corpus / "defectdojo__nessus_with_cvssv3.nessus"
    findings: list[Finding] = []
    parse_export(path, on_finding=findings.append)
    raw = list(etree.parse(str(path)).iter("ReportItem"))
    assert len(raw) == len(findings)
    assert sum(1 for f in findings if f.cvss3_base_score is not None) > 0
    for item, finding in zip(raw, findings, strict=True):
        assert finding.plugin_id == int(item.get("pluginID"))
        assert finding.severity == int(item.get("severity"))
        assert finding.port == int(item.get("port"))
        assert finding.cve == [c.text for c in item.findall("cve")]
        assert finding.exploit_available is (item.findtext("exploit_available") == "true")
        cvss3 = item.findtext("cvss3_base_score")
        assert finding.cvss3_base_score == (float(cvss3) if cvss3 else None)
        assert isinstance(finding.cvss3_base_score, float | None)
        assert finding.plugin_output == item.findtext("plugin_output")
        assert finding.ip == "44.228.249.3"
        assert finding.host == "testphp.vulnweb.com"


def test_findings_get_ip_when_host_properties_come_last() -> None:
    doc = (
        b"<NessusClientData_v2><Report name='r'><ReportHost name='h'>"
        b"<ReportItem port='443' svc_name='www' protocol='tcp' severity='3' pluginID='1' "
        b"pluginName='p' pluginFamily='f'><cve>CVE-1</cve><cve>CVE-2</cve>"
        b"<exploit_available>true</exploit_available><cvss_base_score>bogus</cvss_base_score>"
        b"</ReportItem><HostProperties><tag name='host-ip'>10.1.1.1</tag></HostProperties>"
        b"</ReportHost></Report></NessusClientData_v2>"
    )
    findings: list[Finding] = []
    summary = parse_export(io.BytesIO(doc), on_finding=findings.append)
    (finding,) = findings
    assert finding.ip == "10.1.1.1"
    assert finding.cve == ["CVE-1", "CVE-2"]
    assert finding.exploit_available is True
    assert finding.cvss_base_score is None
    assert summary.hosts[0].ip == "10.1.1.1"
    assert summary.severity_counts["high"] == 1


# --- hostile and broken inputs ------------------------------------------------------------------

ONE_HOST = (
    b"<Report name='r'><ReportHost name='h'><HostProperties/>"
    b"<ReportItem severity='0' pluginID='1' port='0'/></ReportHost></Report>"
)
BOMB = (
    b'<?xml version="1.0"?>\n<!DOCTYPE NessusClientData_v2 [\n<!ENTITY a "aaaaaaaaaa">\n'
    + b"".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">\n'.encode() for i in range(9))
    + b"]>\n<NessusClientData_v2><Report name='r'><ReportHost name='h'>"
    b"<ReportItem severity='0' pluginID='1'><plugin_output>&j;</plugin_output></ReportItem>"
    b"</ReportHost></Report></NessusClientData_v2>"
)
XXE = (
    b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    b"<NessusClientData_v2><Report name='&x;'><ReportHost name='h'>"
    b"<ReportItem severity='0' pluginID='1'><plugin_output>&x;</plugin_output></ReportItem>"
    b"</ReportHost></Report></NessusClientData_v2>"
)


HOSTILE = (
    "billion_laughs",
    "billion_laughs_after_long_prolog",
    "external_entity",
    "external_entity_after_long_prolog",
    "wrong_root",
    "wrong_root_late",
    "zero_hosts",
    "huge_attribute",
    "huge_text_over_libxml2_cap",
    "truncated",
    "empty",
    "blank",
    "not_xml",
    "undefined_entity",
)


def hostile_case(corpus: Path, label: str) -> tuple[bytes, str]:
    """The input and expected reason for ``label``; ``truncated`` needs the corpus, so cases are built per test."""
    cases = hostile_cases(corpus)
    assert tuple(c[0] for c in cases) == HOSTILE
    return next((data, reason) for name, data, reason in cases if name == label)


def hostile_cases(corpus: Path) -> list[tuple[str, bytes, str]]:
    half = (corpus / "mitre-saf__sample.nessus").read_bytes()
    return [
        ("billion_laughs", BOMB, "xml_forbidden"),
        ("billion_laughs_after_long_prolog", b"<!--" + b" " * 70_000 + b"-->" + BOMB[21:], "xml_forbidden"),
        ("external_entity", XXE, "xml_forbidden"),
        ("external_entity_after_long_prolog", b"<!--" + b" " * 70_000 + b"-->" + XXE[21:], "xml_forbidden"),
        (
            "wrong_root",
            b"<?xml version='1.0'?><NessusClientData>" + ONE_HOST + b"</NessusClientData>",
            "wrong_root",
        ),
        ("wrong_root_late", b"<!--" + b" " * 70_000 + b"--><foo><bar/></foo>", "wrong_root"),
        ("zero_hosts", b"<NessusClientData_v2><Report name='r'/></NessusClientData_v2>", "no_hosts"),
        (
            "huge_attribute",
            b"<NessusClientData_v2><Report name='r'><ReportHost name='h'><ReportItem severity='0' "
            b"pluginID='1' pluginName='" + b"A" * 100_000 + b"'/></ReportHost></Report></NessusClientData_v2>",
            "too_large",
        ),
        (
            "huge_text_over_libxml2_cap",
            b"<NessusClientData_v2><Report name='r'><ReportHost name='h'><ReportItem severity='0' "
            b"pluginID='1'><description>" + b"A" * 11_000_000 + b"</description></ReportItem>"
            b"</ReportHost></Report></NessusClientData_v2>",
            "too_large",
        ),
        ("truncated", half[: len(half) // 2], "xml_invalid"),
        ("empty", b"", "empty"),
        ("blank", b"  \n\t\n", "empty"),
        ("not_xml", bytes(range(256)) * 64, "xml_invalid"),
        ("undefined_entity", b"<NessusClientData_v2>&nope;</NessusClientData_v2>", "xml_invalid"),
    ]


@pytest.mark.parametrize("label", HOSTILE)
def test_hostile_inputs_rejected_quickly(corpus: Path, label: str, tmp_path: Path) -> None:
    data, reason = hostile_case(corpus, label)
    for source in (io.BytesIO(data), tmp_path / f"{label}.nessus"):
        if isinstance(source, Path):
            source.write_bytes(data)
        started = time.perf_counter()
        with pytest.raises(ExportRejected) as info:
            parse_export(source)
        assert info.value.reason == reason, info.value.message
        assert time.perf_counter() - started < 2.0
    if label == "truncated":
        assert "line " in info.value.message


def test_configurable_text_limit(corpus: Path) -> None:
    with pytest.raises(ExportRejected) as info:
        parse_export(
            corpus / "mitre-saf__sample.nessus",
            on_finding=lambda _: None,
            limits=Limits(max_text_chars=1000),
        )
    assert info.value.reason == "too_large"


def test_secrets_never_leak_from_external_entity(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    doc = XXE.replace(b"file:///etc/passwd", secret.as_uri().encode())
    with pytest.raises(ExportRejected) as info:
        parse_export(io.BytesIO(doc), on_finding=lambda f: pytest.fail(f"finding leaked: {f}"))
    assert "TOPSECRET" not in info.value.message


def test_memory_stays_bounded(corpus: Path, tmp_path: Path) -> None:
    """Replicate a real host into a ~60 MB file: peak RSS must not grow with the file size."""
    src = (corpus / "mitre-saf__sample.nessus").read_bytes()
    start, end = src.index(b"<ReportHost"), src.rindex(b"</ReportHost>") + len(b"</ReportHost>")
    peaks = []
    for copies in (1, 100):
        path = tmp_path / f"x{copies}.nessus"
        with path.open("wb") as fh:
            fh.write(src[:start])
            for _ in range(copies):
                fh.write(src[start:end])
            fh.write(src[end:])
        code = (
            "import resource, sys\n"
            "from scanfleet.validator.parsing import parse_export\n"
            "s = parse_export(sys.argv[1], on_finding=lambda _: None)\n"
            "print(s.item_count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        )
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, check=True)
        items, peak_kib = map(int, out.stdout.split())
        assert items == 149 * copies
        peaks.append(peak_kib)
    assert path.stat().st_size > 50_000_000
    assert peaks[1] - peaks[0] < 20_000, peaks
