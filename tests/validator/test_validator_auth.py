"""Authentication rules, per host and per scan."""

from __future__ import annotations

import pytest

from scanfleet.common.findings import HostRecord
from scanfleet.common.messages import AuthVerdict, SeverityCounts
from scanfleet.validator.auth import (
    HostSignals,
    credentialed_checks_value,
    credentialed_token,
    host_auth,
    scan_auth_verdict,
    troubleshooting,
)

SCAN_INFO_19506 = """Information about this scan :

Nessus version : 10.1.1
Plugin feed version : 202203151735
Scanner edition used : Nessus
Port scanner(s) : nessus_syn_scanner
Port range : default
Ping RTT : Unavailable
Thorough tests : no
Experimental tests : no
Paranoia level : 1
Report verbosity : 1
Safe checks : yes
Optimize the test : yes
Credentialed checks : {value}
Patch management checks : None
Display superseded patches : yes (supersedence plugin launched)
CGI scanning : disabled
"""


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("yes", True),
        ("yes (on the localhost)", True),
        ("yes, as 'root' via ssh", True),
        ("yes, as 'CORP\\admin' via SMB", True),
        ("no", False),
        ("No", False),
        ("partial", None),
        ("yesterday", None),
    ],
)
def test_credentialed_checks_leading_token(value: str, token: bool | None) -> None:
    raw = credentialed_checks_value(SCAN_INFO_19506.format(value=value))
    assert raw == value
    assert credentialed_token(raw) is token


def test_credentialed_checks_line_absent() -> None:
    assert credentialed_checks_value("Information about this scan :\nNessus version : 4.2.0\n") is None
    assert credentialed_checks_value(None) is None
    assert credentialed_checks_value("Credentialed checks : yes\r\n") == "yes"


def signals(
    value: str | None = None,
    plugins: set[int] | None = None,
    *,
    scan_info: bool | None = None,
    credentialed_scan: bool | None = None,
    local_checks: int = 0,
    null_session: bool = False,
) -> HostSignals:
    plugins = set(plugins or ())
    seen = scan_info if scan_info is not None else value is not None
    if seen:
        plugins.add(19506)
    return HostSignals(
        scan_info_seen=seen,
        credentialed_checks=value,
        credentialed_scan=credentialed_scan,
        plugins=plugins,
        smb_null_session=null_session,
        local_checks=local_checks,
    )


@pytest.mark.parametrize(
    ("case", "host", "verdict", "cited"),
    [
        ("yes clean", signals("yes"), "success", "19506"),
        ("yes via ssh", signals("yes, as 'root' via ssh", {141118}), "success", "141118"),
        ("yes + insufficient privilege", signals("yes", {110385}), "partial", "110385"),
        ("yes + intermittent failure", signals("yes", {117885}), "partial", "117885"),
        ("yes + patch assessment failed", signals("yes", {21745}), "partial", "21745"),
        ("yes + one credential set failed", signals("yes", {141118, 104410}), "partial", "104410"),
        ("no + failure", signals("no", {104410, 21745}), "failed", "104410"),
        ("no + auth failure 21745", signals("no", {21745}), "failed", "21745"),
        ("no, nothing tried", signals("no"), "not_attempted", "19506"),
        ("no credentials provided", signals("no", {110723}), "not_attempted", "110723"),
        ("paranoid no + 141118", signals("no", {141118, 110095}), "success", "Vulnerator#171"),
        ("paranoid no + local checks", signals("no", local_checks=12), "success", "Local Security Checks"),
        ("null session 10394", signals("no", {10394}, null_session=True), "not_attempted", "10394"),
        ("real smb login 10394", signals(None, {10394}), "success", "10394"),
        ("old 19506 without line", signals(None, scan_info=True), "not_evaluable", "19506"),
        ("nothing at all", signals(None), "not_evaluable", "19506"),
        (
            "Credentialed_Scan true only",
            signals(None, credentialed_scan=True),
            "success",
            "Credentialed_Scan",
        ),
        (
            "Credentialed_Scan false only",
            signals(None, credentialed_scan=False),
            "not_attempted",
            "Credentialed_Scan",
        ),
        ("no line + 104410", signals(None, {104410}), "failed", "104410"),
        ("no line + 110723", signals(None, {110723}), "not_attempted", "110723"),
        ("19506 beats Credentialed_Scan", signals("no", credentialed_scan=True), "not_attempted", "disagree"),
    ],
)
def test_host_rules(case: str, host: HostSignals, verdict: AuthVerdict, cited: str) -> None:
    result = host_auth(host)
    assert result.verdict == verdict, (case, result.evidence)
    assert any(cited in e for e in result.evidence), (case, result.evidence)
    assert result.credentialed_checks == host.credentialed_checks
    assert result.plugins == sorted(host.plugins)


def hosts(*verdicts: AuthVerdict, plugins: list[int] | None = None) -> list[HostRecord]:
    return [
        HostRecord(name=f"h{i}", severity_counts=SeverityCounts(), item_count=0, auth=v, auth_plugins=plugins or [])
        for i, v in enumerate(verdicts)
    ]


@pytest.mark.parametrize(
    ("scan_type", "verdicts", "expected"),
    [
        ("untrusted", ("failed", "failed"), "not_applicable"),
        ("untrusted", ("success",), "not_applicable"),
        ("authenticated", ("success", "success"), "success"),
        ("authenticated_privileged", ("success",), "success"),
        ("authenticated", ("success", "failed"), "partial"),
        ("authenticated", ("partial", "partial"), "partial"),
        ("authenticated", ("success", "not_evaluable"), "partial"),
        ("authenticated", ("failed", "not_attempted"), "failed"),
        ("authenticated_privileged", ("not_evaluable",), "failed"),
        ("authenticated", (), "failed"),
    ],
)
def test_scan_verdict(scan_type: str, verdicts: tuple[AuthVerdict, ...], expected: str) -> None:
    assert scan_auth_verdict(scan_type, hosts(*verdicts)) == expected  # type: ignore[arg-type]


def test_scan_verdict_rejects_old_type_names() -> None:
    with pytest.raises(ValueError):
        scan_auth_verdict("trusted_basic", hosts("success"))  # type: ignore[arg-type]


def test_troubleshooting() -> None:
    assert troubleshooting("success", hosts("success")) == {}
    assert troubleshooting("not_applicable", hosts("failed")) == {}
    failed = troubleshooting("failed", hosts("failed", "not_attempted"))
    assert "could not log in" in str(failed["likely_cause"])
    assert "credentials were not used" in str(failed["likely_cause"])
    assert failed["next_steps"]
    partial = troubleshooting("partial", hosts("success", "partial", plugins=[110385]))
    assert "h1" in str(partial["likely_cause"])
    assert any("110385" in step for step in partial["next_steps"])  # type: ignore[attr-defined]
