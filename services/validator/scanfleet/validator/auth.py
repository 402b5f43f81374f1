"""Authentication verdicts for each host and for a whole scan, from what a .nessus export shows.

The old validator read plugin 19506 on the first host only, ignored 141118/110385 and used scan
type names the tool never sent, so failed logins never surfaced. Here every host is judged on its
own from all the signals it carries, and the scan verdict is computed across hosts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import msgspec

from scanfleet.common.findings import HostRecord
from scanfleet.common.messages import AuthVerdict, ScanAuth, ScanType

SCAN_INFO_PLUGIN = 19506
NO_CREDENTIALS_PLUGIN = 110723
SMB_LOGIN_PLUGIN = 10394

SUCCESS_PLUGINS: Mapping[int, str] = {
    141118: "Valid Credentials Provided",
    110095: "No Credential Issues Found",
    10394: "Microsoft Windows SMB Log In Possible",
    10400: "Microsoft Windows SMB Registry Remotely Accessible",
    20811: "Windows Installed Software Enumeration (credentialed check)",
    97993: "OS Identification and Installed Software Enumeration over SSH v2",
}
FAILURE_PLUGINS: Mapping[int, str] = {
    104410: "Failure for Provided Credentials",
}
TROUBLE_PLUGINS: Mapping[int, str] = {
    21745: "OS Security Patch Assessment Failed",
    110385: "Insufficient Privilege",
    117885: "Intermittent Authentication Failure",
}
AUTH_PLUGINS: frozenset[int] = frozenset(
    {SCAN_INFO_PLUGIN, NO_CREDENTIALS_PLUGIN, *SUCCESS_PLUGINS, *FAILURE_PLUGINS, *TROUBLE_PLUGINS}
)
"""Plugins whose presence the parser records for each host."""

LOCAL_CHECKS_SUFFIX = "Local Security Checks"

_CREDENTIALED_LINE = re.compile(r"^[ \t]*Credentialed checks[ \t]*:[ \t]*(.*?)[ \t]*\r?$", re.M | re.I)
_LEADING_TOKEN = re.compile(r"(yes|no)\b", re.I)
_NULL_SESSION = re.compile(r"null session|as a guest|guest account", re.I)


class HostSignals(msgspec.Struct, kw_only=True):
    """What the parser saw on one host that bears on authentication."""

    scan_info_seen: bool = False
    credentialed_checks: str | None = None
    credentialed_scan: bool | None = None
    plugins: set[int] = msgspec.field(default_factory=set)
    smb_null_session: bool = False
    local_checks: int = 0


class HostAuth(msgspec.Struct, kw_only=True):
    """A host's verdict, with evidence strings that cite the plugins behind it; the parser copies it
    into the host's ``HostRecord``."""

    verdict: AuthVerdict
    evidence: list[str] = []
    credentialed_checks: str | None = None
    plugins: list[int] = []


def credentialed_checks_value(plugin_output: str | None) -> str | None:
    """The raw value after ``Credentialed checks :`` in a 19506 output, ``None`` if no such line."""
    if not plugin_output:
        return None
    match = _CREDENTIALED_LINE.search(plugin_output)
    return match.group(1) if match else None


def credentialed_token(value: str | None) -> bool | None:
    """Match the leading yes/no only: real values include ``yes, as 'DOMAIN\\user' via SMB``."""
    if value is None:
        return None
    match = _LEADING_TOKEN.match(value.strip())
    if match is None:
        return None
    return match.group(1).lower() == "yes"


def is_smb_null_session(plugin_output: str | None) -> bool:
    """Plugin 10394 also fires for NULL/guest sessions, which prove nothing about credentials."""
    return bool(plugin_output) and _NULL_SESSION.search(plugin_output or "") is not None


def _cite(plugin_ids: Sequence[int], names: Mapping[int, str]) -> list[str]:
    return [f"plugin {pid} ({names[pid]}) reported" for pid in plugin_ids]


def host_auth(signals: HostSignals) -> HostAuth:
    """Combine 19506, ``Credentialed_Scan``, success/failure plugins and local checks into a verdict.

    19506 wins over ``Credentialed_Scan`` when both speak; a 19506 ``no`` is overridden by plugins
    that prove a login worked, because Nessus reports ``no`` in some paranoid-reporting setups
    (Vulnerator#171).
    """
    evidence: list[str] = []
    raw = signals.credentialed_checks
    token = credentialed_token(raw)
    if raw is not None:
        evidence.append(f"plugin 19506 (Nessus Scan Information): Credentialed checks : {raw}")
        if token is None:
            evidence.append("plugin 19506: credentialed checks value starts with neither yes nor no")
    elif signals.scan_info_seen:
        evidence.append("plugin 19506 (Nessus Scan Information) has no 'Credentialed checks' line")
    else:
        evidence.append("plugin 19506 (Nessus Scan Information) not reported")
    if signals.credentialed_scan is not None:
        evidence.append(f"host property Credentialed_Scan={str(signals.credentialed_scan).lower()}")
        if token is not None and token != signals.credentialed_scan:
            evidence.append("plugin 19506 and Credentialed_Scan disagree; 19506 taken")
    claimed = token if token is not None else signals.credentialed_scan

    plugins = signals.plugins
    success = sorted(p for p in plugins if p in SUCCESS_PLUGINS)
    if SMB_LOGIN_PLUGIN in success and signals.smb_null_session:
        success.remove(SMB_LOGIN_PLUGIN)
        evidence.append("plugin 10394 reports a NULL/guest SMB session, not a credentialed login: ignored")
    failure = sorted(p for p in plugins if p in FAILURE_PLUGINS)
    trouble = sorted(p for p in plugins if p in TROUBLE_PLUGINS)
    evidence += _cite(success, SUCCESS_PLUGINS) + _cite(failure, FAILURE_PLUGINS)
    evidence += _cite(trouble, TROUBLE_PLUGINS)
    if signals.local_checks:
        evidence.append(f"{signals.local_checks} plugin(s) from '{LOCAL_CHECKS_SUFFIX}' families reported")
    none_provided = NO_CREDENTIALS_PLUGIN in plugins
    if none_provided:
        evidence.append(f"plugin {NO_CREDENTIALS_PLUGIN} (No Credentials Provided) reported")

    logged_in = bool(success) or signals.local_checks > 0
    problems = bool(failure or trouble)
    verdict: AuthVerdict
    if claimed is True:
        verdict = "partial" if problems else "success"
    elif logged_in:
        verdict = "partial" if problems else "success"
        if claimed is False:
            evidence.append(
                "credentialed checks reported as no, but plugins above show a working login "
                "(paranoid reporting, Vulnerator#171)"
            )
    elif problems:
        verdict = "failed"
    elif none_provided or claimed is False:
        verdict = "not_attempted"
        if not none_provided:
            evidence.append("no plugin shows that credentials were tried")
    else:
        verdict = "not_evaluable"
    return HostAuth(
        verdict=verdict,
        evidence=evidence,
        credentialed_checks=raw,
        plugins=sorted(plugins),
    )


def scan_auth_verdict(scan_type: ScanType, hosts: Sequence[HostRecord]) -> ScanAuth:
    """``success`` if every host logged in, ``partial`` if some did, ``failed`` if none did.

    A host with a ``partial`` verdict logged in, so it makes the scan at least ``partial``.
    """
    if scan_type == "untrusted":
        return "not_applicable"
    if scan_type not in ("authenticated", "authenticated_privileged"):
        raise ValueError(f"unknown scan type {scan_type!r}")
    verdicts = [host.auth for host in hosts]
    if verdicts and all(v == "success" for v in verdicts):
        return "success"
    if any(v in ("success", "partial") for v in verdicts):
        return "partial"
    return "failed"


def troubleshooting(verdict: ScanAuth, hosts: Sequence[HostRecord]) -> dict[str, object]:
    """A likely cause and next steps for a ``failed`` or ``partial`` scan; empty otherwise."""
    if verdict not in ("failed", "partial"):
        return {}
    by_verdict: dict[str, list[str]] = {}
    trouble: set[int] = set()
    for host in hosts:
        by_verdict.setdefault(host.auth, []).append(host.name)
        trouble.update(p for p in host.auth_plugins if p in TROUBLE_PLUGINS or p in FAILURE_PLUGINS)
    failed = by_verdict.get("failed", [])
    partial = by_verdict.get("partial", [])
    not_attempted = by_verdict.get("not_attempted", [])
    not_evaluable = by_verdict.get("not_evaluable", [])
    causes: list[str] = []
    steps: list[str] = []
    if failed:
        causes.append(f"the scanner could not log in with the supplied credentials on {_names(failed)}")
        steps += [
            "check the username, password or key of the credential set and that the account is not locked or expired",
            "check that SSH (22) or SMB (445) is reachable from the scanner and allows this account",
            "read the plugin_output of plugins 104410 and 21745 on those hosts for the exact error",
        ]
    if partial:
        causes.append(f"login worked but checks were incomplete on {_names(partial)}")
        if 110385 in trouble:
            steps.append("grant the account privileges (sudo/su escalation or local admin): plugin 110385")
        if 117885 in trouble:
            steps.append("logins failed intermittently (plugin 117885): check rate limits and retry")
        if 21745 in trouble:
            steps.append("patch assessment failed on some hosts: read plugin 21745 output")
        if 104410 in trouble:
            steps.append("one of several credential sets failed: read plugin 104410 output")
    if not_attempted:
        causes.append(f"credentials were not used on {_names(not_attempted)}")
        steps += [
            "check that the task carried a credential reference and the scan policy has credentials",
            "check that the credential type matches the host (SSH for Unix, Windows/SMB for Windows)",
        ]
    if not_evaluable:
        causes.append(f"the export has no authentication evidence for {_names(not_evaluable)}")
        steps.append("make sure plugin 19506 (Nessus Scan Information) is enabled in the policy")
    return {"likely_cause": "; ".join(causes), "next_steps": steps}


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    more = len(names) - limit
    return f"{len(names)} host(s): {shown}" + (f" and {more} more" if more > 0 else "")
