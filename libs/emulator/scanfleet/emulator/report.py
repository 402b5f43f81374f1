"""Deterministic scan results and their `.nessus` v2 rendering.

One `ReportModel` is built per scan run; the XML export and the `/_emulator` truth are both derived from it,
so tests can compare a parsed export against the truth without the two ever disagreeing by construction.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import msgspec

from scanfleet.emulator.plugins import (
    ALWAYS,
    CRED_FAILURE,
    CRED_NO_ISSUES,
    CRED_VALID,
    LOCAL,
    OPTIONAL,
    PATCH_FAILED,
    PATCH_NOT_AVAILABLE,
    SCAN_INFO,
    SERVICE_DETECTION,
    SYN_SCANNER,
    Plugin,
)
from scanfleet.emulator.world import HostChange, logins_failing, plugin_changes

PLUGIN_FEED = "202406110523"
_UNSUPPORTED_IDS = {33850, 108797}
PLUGINS_BY_ID = {p.id: p for p in (*ALWAYS, *OPTIONAL, *LOCAL)}
_KEEP_PROBABILITY = (0.8, 0.5, 0.45, 0.35, 0.3)


class OsProfile(msgspec.Struct, frozen=True):
    os: str
    name: str
    cpe: str
    ports: tuple[tuple[int, str], ...]
    unsupported: bool = False


PROFILES = (
    OsProfile(
        "linux",
        "Linux Kernel 5.15.0-100-generic on Ubuntu 22.04",
        "cpe:/o:canonical:ubuntu_linux:22.04",
        ((22, "ssh"), (80, "www"), (443, "www")),
    ),
    OsProfile(
        "linux",
        "Linux Kernel 4.19.0-26-amd64 on Debian 10",
        "cpe:/o:debian:debian_linux:10",
        ((22, "ssh"), (80, "www"), (443, "www"), (5432, "postgresql")),
    ),
    OsProfile(
        "linux",
        "Linux Kernel 2.6.32-754.el6.x86_64 on CentOS release 6.10 (Final)",
        "cpe:/o:centos:centos:6",
        ((22, "ssh"), (80, "www"), (111, "rpc-portmapper")),
        unsupported=True,
    ),
    OsProfile(
        "windows",
        "Microsoft Windows Server 2019 Standard",
        "cpe:/o:microsoft:windows_server_2019",
        ((135, "epmap"), (445, "cifs"), (3389, "msrdp"), (443, "www")),
    ),
    OsProfile(
        "windows",
        "Microsoft Windows Server 2008 R2 Standard Service Pack 1",
        "cpe:/o:microsoft:windows_server_2008:r2:sp1",
        ((135, "epmap"), (445, "cifs"), (3389, "msrdp")),
        unsupported=True,
    ),
)


class ReportItem(msgspec.Struct, frozen=True):
    plugin: Plugin
    port: int
    svc_name: str
    protocol: str
    output: str

    @property
    def severity(self) -> int:
        return self.plugin.severity


class ReportHost(msgspec.Struct, frozen=True):
    name: str
    ip: str
    fqdn: str
    mac: str
    profile: OsProfile
    credentialed: bool
    start: float
    end: float
    items: tuple[ReportItem, ...]

    def severity_counts(self) -> list[int]:
        counts = [0] * 5
        for item in self.items:
            counts[item.severity] += 1
        return counts


class ReportContext(msgspec.Struct, frozen=True, kw_only=True):
    """What the generator needs from a scan run; `ssh_user` is set only when the SSH login succeeded."""

    scan_name: str
    policy_name: str
    hosts: tuple[str, ...]
    seed: int
    start: float
    duration: float
    version: str
    scanner_ip: str
    ssh_user: str | None = None
    rejected_user: str | None = None
    # World changes of this run (``world.py``): hosts whose login fails, findings added or fixed.
    changes: tuple[HostChange, ...] = ()


class ReportModel(msgspec.Struct, frozen=True):
    scan_name: str
    policy_name: str
    hosts: tuple[ReportHost, ...]

    def subset(self, names: set[str]) -> ReportModel:
        return ReportModel(self.scan_name, self.policy_name, tuple(h for h in self.hosts if h.name in names))

    def truth(self) -> dict[str, Any]:
        totals = [0] * 5
        hosts = []
        for host in self.hosts:
            counts = host.severity_counts()
            totals = [a + b for a, b in zip(totals, counts, strict=True)]
            hosts.append(
                {
                    "name": host.name,
                    "ip": host.ip,
                    "severity_counts": counts,
                    "credentialed": host.credentialed,
                    "item_count": len(host.items),
                    "findings": [
                        {"plugin_id": i.plugin.id, "port": i.port, "protocol": i.protocol, "severity": i.severity}
                        for i in host.items
                    ],
                }
            )
        return {
            "host_count": len(self.hosts),
            "hosts": hosts,
            "severity_totals": totals,
            "item_count": sum(totals),
        }


def host_rng(seed: int, host: str) -> random.Random:
    return random.Random(f"{seed}:{host}")


def _address_for(name: str) -> str:
    if name.replace(".", "").isdigit() or ":" in name:
        return name
    digest = hashlib.sha256(name.encode()).digest()
    return f"10.{digest[0]}.{digest[1]}.{max(digest[2], 1)}"


def _scan_info_output(ctx: ReportContext, host_duration: float) -> str:
    credentialed = f"yes, as '{ctx.ssh_user}' via ssh" if ctx.ssh_user else "no"
    t = time.gmtime(ctx.start)
    started = f"{t.tm_year}/{t.tm_mon}/{t.tm_mday} {t.tm_hour:02d}:{t.tm_min:02d} UTC"
    return (
        "Information about this scan : \n\n"
        f"Nessus version : {ctx.version}\nNessus build : 20010\nPlugin feed version : {PLUGIN_FEED}\n"
        "Scanner edition used : Nessus\nScanner OS : LINUX\nScanner distribution : ubuntu1604-x86-64\n"
        f"Scan type : Normal\nScan name : {ctx.scan_name}\nScan policy used : {ctx.policy_name}\n"
        f"Scanner IP : {ctx.scanner_ip}\nPort scanner(s) : nessus_syn_scanner \nPort range : default\n"
        "Ping RTT : 12.417 ms\nThorough tests : no\nExperimental tests : no\n"
        "Scan for Unpatched Vulnerabilities : no\nPlugin debugging enabled : no\nParanoia level : 1\n"
        "Report verbosity : 1\nSafe checks : yes\nOptimize the test : yes\n"
        f"Credentialed checks : {credentialed}\nAttempt Least Privilege : no\n"
        "Patch management checks : None\n"
        "Display superseded patches : yes (supersedence plugin launched)\nCGI scanning : disabled\n"
        "Web application tests : disabled\nMax hosts : 30\nMax checks : 4\nRecv timeout : 5\n"
        "Backports : None\n"
        "Allow post-scan editing : Yes\nNessus Plugin Signature Checking : Enabled\n"
        "Audit File Signature Checking : Disabled\n"
        f"Scan Start Date : {started}\nScan duration : {max(int(host_duration), 1)} sec\n"
        "Scan for malware : no\n"
    )


def _build_host(ctx: ReportContext, index: int, name: str) -> ReportHost:
    rng = host_rng(ctx.seed, name)
    profile = PROFILES[0] if ctx.ssh_user else PROFILES[rng.randrange(len(PROFILES))]
    ip = _address_for(name)
    fqdn = name if ip != name else f"{rng.choice(('web', 'db', 'app', 'srv', 'ws'))}-{index + 1:02d}.corp.example"
    mac = "00:50:56:" + ":".join(f"{rng.randrange(256):02X}" for _ in range(3))
    ports = [profile.ports[0], *(p for p in profile.ports[1:] if rng.random() < 0.7)]
    port_numbers = {p for p, _ in ports}
    failing = name in logins_failing(list(ctx.changes))
    user = None if failing else ctx.ssh_user
    rejected = ctx.rejected_user or (ctx.ssh_user if failing else None)
    fields = {
        "host": name,
        "ip": ip,
        "fqdn": fqdn,
        "scanner_ip": ctx.scanner_ip,
        "cpe": profile.cpe,
        "os_name": profile.name,
        "user": user or rejected or "",
    }

    def item(plugin: Plugin, port: int | None = None, svc: str | None = None) -> ReportItem:
        port_ = plugin.port if port is None else port
        svc_ = svc or plugin.svc_name
        output = plugin.output.format_map({**fields, "port": port_, "svc": svc_})
        return ReportItem(plugin, port_, svc_, plugin.protocol, output)

    items = [item(SYN_SCANNER, p, s) for p, s in ports]
    items += [item(SERVICE_DETECTION, p, s) for p, s in ports]
    items += [item(p) for p in ALWAYS]
    for plugin in OPTIONAL:
        if plugin.os not in ("any", profile.os) or (plugin.port and plugin.port not in port_numbers):
            continue
        if plugin.id in _UNSUPPORTED_IDS:
            keep = profile.unsupported
        else:
            keep = rng.random() < _KEEP_PROBABILITY[plugin.severity]
        if keep:
            items.append(item(plugin))
    if user:
        items += [item(CRED_VALID), item(CRED_NO_ISSUES)]
        items += [item(p) for p in LOCAL if p.severity == 0 or rng.random() < 0.6]
    elif rejected:
        items += [item(CRED_FAILURE), item(PATCH_FAILED)]
    else:
        items.append(item(PATCH_NOT_AVAILABLE))
    added, fixed = plugin_changes(list(ctx.changes), name)
    present = {i.plugin.id for i in items}
    items = [i for i in items if i.plugin.id not in fixed]
    items += [item(PLUGINS_BY_ID[pid]) for pid in sorted(added - present) if pid in PLUGINS_BY_ID]
    host_duration = ctx.duration * (0.6 + 0.4 * rng.random())
    items.append(ReportItem(SCAN_INFO, 0, "general", "tcp", _scan_info_output(ctx, host_duration)))
    return ReportHost(
        name,
        ip,
        fqdn,
        mac,
        profile,
        user is not None,
        ctx.start,
        ctx.start + host_duration,
        tuple(items),
    )


def build_report(ctx: ReportContext) -> ReportModel:
    hosts = tuple(_build_host(ctx, i, name) for i, name in enumerate(ctx.hosts))
    return ReportModel(ctx.scan_name, ctx.policy_name, hosts)


def _el(tag: str, text: str | int | float, indent: str = "") -> str:
    return f"{indent}<{tag}>{escape(str(text))}</{tag}>\n"


def _block(tag: str, children: dict[str, str | int], indent: str) -> str:
    inner = "".join(_el(name, value, indent + "  ") for name, value in children.items())
    return f"{indent}<{tag}>\n{inner}{indent}</{tag}>\n"


def _policy(model: ReportModel) -> str:
    server_prefs = {
        "max_hosts": "30",
        "max_checks": "4",
        "safe_checks": "yes",
        "optimize_test": "yes",
        "checks_read_timeout": "5",
        "port_range": "default",
        "unscanned_closed": "no",
        "plugins_timeout": "320",
        "network_receive_timeout": "5",
        "reduce_connections_on_congestion": "no",
        "stop_scan_on_disconnect": "no",
        "scan.enable_utf8_output": "no",
        "report_crashes": "yes",
        "log_whole_attack": "no",
        "name": model.scan_name,
        "whoami": "scanfleet",
        "plugin_set": ";".join(str(p.id) for p in (*ALWAYS, *OPTIONAL, *LOCAL)),
    }
    plugin_prefs = (
        ("Ping the remote host", 10180, "Do an applicative UDP ping (DNS,RPC...)", "checkbox", "no"),
        ("Ping the remote host", 10180, "Make the dead hosts appear in the report", "checkbox", "no"),
        ("Nessus SYN scanner", 11219, "Firewall detection :", "radio", "Automatic (normal)"),
        ("SSH settings", 14273, "SSH user name :", "entry", "root"),
        ("Global variable settings", 12288, "Report verbosity", "radio", "Normal"),
    )
    families = sorted({p.family for p in (*ALWAYS, *OPTIONAL, *LOCAL, SCAN_INFO, SYN_SCANNER)})
    individual = (
        (11219, "Nessus SYN scanner", "Port scanners"),
        (10180, "Ping the remote host", "Port scanners"),
        (14272, "Netstat Portscanner (SSH)", "Port scanners"),
    )
    parts = ["  <Policy>\n", _el("policyName", model.policy_name, "    "), "    <Preferences>\n"]
    parts.append("      <ServerPreferences>\n")
    parts += [_block("preference", {"name": k, "value": v}, "        ") for k, v in server_prefs.items()]
    parts.append("      </ServerPreferences>\n      <PluginsPreferences>\n")
    for plugin_name, plugin_id, pref, kind, value in plugin_prefs:
        fields: dict[str, str | int] = {
            "pluginName": plugin_name,
            "pluginId": plugin_id,
            "fullName": f"{plugin_name}[{kind}]:{pref}",
            "preferenceName": pref,
            "preferenceType": kind,
            "preferenceValues": value,
            "selectedValue": value,
        }
        parts.append(_block("item", fields, "        "))
    parts.append("      </PluginsPreferences>\n    </Preferences>\n    <FamilySelection>\n")
    parts += [_block("FamilyItem", {"FamilyName": f, "Status": "enabled"}, "      ") for f in families]
    parts.append("    </FamilySelection>\n    <IndividualPluginSelection>\n")
    for plugin_id, name, family in individual:
        fields = {"PluginId": plugin_id, "PluginName": name, "Family": family, "Status": "enabled"}
        parts.append(_block("PluginItem", fields, "      "))
    parts.append("    </IndividualPluginSelection>\n  </Policy>\n")
    return "".join(parts)


def _ctime(ts: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(ts))


def _host_xml(host: ReportHost, policy_name: str) -> str:
    tags = [
        ("HOST_START_TIMESTAMP", str(int(host.start))),
        ("HOST_START", _ctime(host.start)),
        ("policy-used", policy_name),
        ("os", host.profile.os),
        ("cpe", host.profile.cpe),
        ("cpe-0", f"{host.profile.cpe} -> {host.profile.name}"),
        ("system-type", "general-purpose"),
        ("operating-system", host.profile.name),
        ("operating-system-conf", "95"),
        ("mac-address", host.mac),
        ("traceroute-hop-0", host.ip),
        ("host-ip", host.ip),
        ("host-fqdn", host.fqdn),
        ("host-rdns", host.fqdn),
        ("hostname", host.fqdn.split(".")[0]),
        ("Credentialed_Scan", "true" if host.credentialed else "false"),
    ]
    if host.profile.os == "windows":
        tags.append(("netbios-name", host.fqdn.split(".")[0].upper()))
    if host.credentialed:
        tags += [
            ("local-checks-proto", "ssh"),
            ("ssh-login-used", "yes"),
            ("LastAuthenticatedResults", str(int(host.end))),
        ]
    else:
        tags.append(("LastUnauthenticatedResults", str(int(host.end))))
    tags += [("HOST_END_TIMESTAMP", str(int(host.end))), ("HOST_END", _ctime(host.end))]
    parts = [f"    <ReportHost name={quoteattr(host.name)}>\n      <HostProperties>\n"]
    parts += [f"        <tag name={quoteattr(k)}>{escape(v)}</tag>\n" for k, v in tags]
    parts.append("      </HostProperties>\n")
    for item in host.items:
        parts.append(_item_xml(item))
    parts.append("    </ReportHost>\n")
    return "".join(parts)


def _item_xml(item: ReportItem) -> str:
    p = item.plugin
    ind = "        "
    out = [
        f'      <ReportItem port="{item.port}" svc_name={quoteattr(item.svc_name)} '
        f'protocol="{item.protocol}" '
        f'severity="{p.severity}" pluginID="{p.id}" pluginName={quoteattr(p.name)} '
        f"pluginFamily={quoteattr(p.family)}>\n"
    ]
    if p.cvss3:
        out += [_el("cvss3_base_score", p.cvss3[0], ind), _el("cvss3_vector", p.cvss3[1], ind)]
    if p.cvss2:
        out += [_el("cvss_base_score", p.cvss2[0], ind), _el("cvss_vector", p.cvss2[1], ind)]
    out += [_el("cve", cve, ind) for cve in p.cves]
    out.append(_el("description", p.description, ind))
    if p.epss:
        out.append(_el("epss_score", p.epss, ind))
    if p.cves or p.exploit_available:
        out.append(_el("exploit_available", "true" if p.exploit_available else "false", ind))
    out += [
        _el("fname", p.fname, ind),
        _el("plugin_modification_date", p.modified, ind),
        _el("plugin_name", p.name, ind),
        _el("plugin_publication_date", p.published, ind),
        _el("plugin_type", p.plugin_type, ind),
        _el("risk_factor", p.risk_factor, ind),
        _el("script_version", p.script_version, ind),
    ]
    if p.see_also:
        out.append(_el("see_also", "\n".join(p.see_also), ind))
    out += [_el("solution", p.solution, ind), _el("synopsis", p.synopsis, ind)]
    if p.vpr:
        out.append(_el("vpr_score", p.vpr, ind))
    out += [_el("xref", xref, ind) for xref in p.xrefs]
    if item.output:
        out.append(_el("plugin_output", item.output, ind))
    out.append("      </ReportItem>\n")
    return "".join(out)


def iter_nessus(model: ReportModel) -> Iterator[bytes]:
    """Yield the export one host at a time so a large report is never held in memory as a whole."""
    yield ('<?xml version="1.0" ?>\n<NessusClientData_v2>\n' + _policy(model)).encode()
    yield f'  <Report name={quoteattr(model.scan_name)} xmlns:cm="http://www.nessus.org/cm">\n'.encode()
    for host in model.hosts:
        yield _host_xml(host, model.policy_name).encode()
    yield b"  </Report>\n</NessusClientData_v2>\n"
