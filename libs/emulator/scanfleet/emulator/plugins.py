"""A small catalogue of real Nessus plugins, enough to make emulated reports look like real ones."""

from __future__ import annotations

import msgspec


class Plugin(msgspec.Struct, frozen=True, kw_only=True):
    """Static plugin metadata; `output` is a `str.format` template filled per host."""

    id: int
    name: str
    family: str
    severity: int
    fname: str
    synopsis: str
    description: str
    solution: str = "n/a"
    port: int = 0
    svc_name: str = "general"
    protocol: str = "tcp"
    plugin_type: str = "remote"
    published: str = "2010/01/01"
    modified: str = "2024/06/11"
    script_version: str = "1.10"
    cvss2: tuple[str, str] | None = None
    cvss3: tuple[str, str] | None = None
    cves: tuple[str, ...] = ()
    see_also: tuple[str, ...] = ()
    xrefs: tuple[str, ...] = ()
    vpr: str | None = None
    epss: str | None = None
    exploit_available: bool = False
    os: str = "any"
    output: str = ""

    @property
    def risk_factor(self) -> str:
        return ("None", "Low", "Medium", "High", "Critical")[self.severity]


def _p(**kw: object) -> Plugin:
    return msgspec.convert(kw, Plugin)


SCAN_INFO = _p(
    id=19506,
    name="Nessus Scan Information",
    family="Settings",
    severity=0,
    fname="scan_info.nasl",
    plugin_type="summary",
    published="2005/08/26",
    modified="2024/05/22",
    script_version="1.129",
    synopsis="This plugin displays information about the Nessus scan.",
    description="This plugin displays, for each tested host, information about the scan itself :\n\n"
    "  - The version of the plugin set.\n  - The type of scanner (Nessus or Nessus Home).\n"
    "  - The version of the Nessus Engine.\n  - The port scanner(s) used.\n  - The port range scanned.\n"
    "  - The ping round trip time \n  - Whether credentialed or third-party patch management     checks are "
    "possible.\n"
    "  - Whether the display of superseded patches is enabled\n  - The date of the scan.\n"
    "  - The duration of the scan.\n  - The number of hosts scanned in parallel.\n"
    "  - The number of checks done in parallel.",
)
SYN_SCANNER = _p(
    id=11219,
    name="Nessus SYN scanner",
    family="Port scanners",
    severity=0,
    fname="nessus_syn_scanner.nbin",
    published="2009/02/04",
    modified="2024/05/20",
    script_version="1.59",
    synopsis="It is possible to determine which TCP ports are open.",
    description="This plugin is a SYN 'half-open' port scanner.  It shall be reasonably quick even against a "
    "firewalled target. \n\nNote that SYN scans are less intrusive than TCP (full connect) scans against "
    "broken "
    "services, but they might cause problems for less robust firewalls and also leave unclosed connections "
    "on the "
    "remote target, if the network is loaded.",
    solution="Protect your target with an IP filter.",
    output="Port {port}/tcp was found to be open",
)
SERVICE_DETECTION = _p(
    id=22964,
    name="Service Detection",
    family="Service detection",
    severity=0,
    fname="find_service.nasl",
    published="2007/08/19",
    modified="2024/03/26",
    script_version="1.187",
    synopsis="The remote service could be identified.",
    description="Nessus was able to identify the remote service by its banner or by looking at the error "
    "message "
    "it sends when it receives an HTTP request.",
    output="A {svc} server is running on this port.",
)
CRED_VALID = _p(
    id=141118,
    name="Target Credential Status by Authentication Protocol - Valid Credentials Provided",
    family="Settings",
    severity=0,
    fname="valid_credentials.nasl",
    plugin_type="summary",
    port=22,
    svc_name="ssh",
    published="2020/10/15",
    modified="2024/03/25",
    script_version="1.9",
    synopsis="Valid credentials were provided for an available authentication protocol.",
    description="Nessus was able to determine that valid credentials were provided for an authentication "
    "protocol "
    "available on the remote target because it was able to successfully authenticate directly to the remote "
    "target using that authentication protocol at least once.",
    output="\nNessus was able to log in to the remote host via the following :\n\n  User:     '{user}'\n"
    "  Port:     22\n  Proto:    SSH\n  Method:   password\n",
)
CRED_NO_ISSUES = _p(
    id=110095,
    name="Target Credential Issues by Authentication Protocol - No Issues Found",
    family="Settings",
    severity=0,
    fname="authentication_success_no_issues.nasl",
    plugin_type="summary",
    port=22,
    svc_name="ssh",
    published="2018/05/24",
    modified="2024/03/25",
    script_version="1.8",
    synopsis="Nessus was able to log in to the remote host using the provided credentials. No issues were "
    "reported "
    "with access, privilege, or intermittent failure.",
    description="Valid credentials were provided for an authentication protocol on the remote target and "
    "Nessus "
    "did not log any subsequent errors or failures for the authentication protocol.",
    output="\nNessus was able to execute commands on the remote host via SSH as '{user}' with sufficient "
    "privileges\nfor all planned checks.\n",
)
CRED_FAILURE = _p(
    id=104410,
    name="Target Credential Status by Authentication Protocol - Failure for Provided Credentials",
    family="Settings",
    severity=0,
    fname="authentication_failure.nasl",
    plugin_type="summary",
    port=22,
    svc_name="ssh",
    published="2017/11/06",
    modified="2024/03/25",
    script_version="1.13",
    synopsis="Nessus was unable to log in to the detected authentication protocol, using the provided credentials.",
    description="Nessus failed to successfully authenticate directly to the remote target on an available "
    "authentication protocol. Nessus was able to connect to the remote port and identify that the service "
    "running on the port supports an authentication protocol, but Nessus failed to authenticate to the "
    "remote "
    "service using the provided credentials.",
    output="\nNessus was unable to log into the following host for which\ncredentials have been provided "
    ":\n\n"
    "  Protocol        : SSH\n  Port            : 22\n  Failure details :\n\n  - User : {user}\n\n"
    "    - Plugin      : ssh_get_info2.nasl\n      Plugin ID   : 97993\n"
    "      Plugin Name : OS Identification and Installed Software Enumeration over SSH v2 (Using New SSH "
    "Library)\n"
    "      Message     : \nFailed to authenticate using the supplied credentials.\n",
)
PATCH_FAILED = _p(
    id=21745,
    name="OS Security Patch Assessment Failed",
    family="Settings",
    severity=0,
    fname="local_checks_failed.nasl",
    plugin_type="summary",
    published="2006/06/23",
    modified="2024/03/25",
    script_version="1.23",
    synopsis="Errors prevented OS Security Patch Assessment.",
    description="OS Security Patch Assessment is not available for this host because either the credentials "
    "supplied in the scan policy did not allow Nessus to log into it or some other problem occurred.",
    solution="Fix the problem(s) so that OS Security Patch Assessment is possible.",
    output="\nThe following service errors were logged :\n\n  - Plugin      : ssh_get_info2.nasl\n"
    "    Plugin ID   : 97993\n    Protocol    : SSH\n    Message     : \n"
    "Unable to login to remote host with supplied credential sets.\nErrors:\n"
    "  - No supplied credential sets succeeded on any of the ssh ports\n",
)
PATCH_NOT_AVAILABLE = _p(
    id=117886,
    name="OS Security Patch Assessment Not Available",
    family="Settings",
    severity=0,
    fname="local_checks_not_enabled.nasl",
    plugin_type="summary",
    published="2018/10/02",
    modified="2024/03/25",
    script_version="1.16",
    synopsis="OS Security Patch Assessment is not available.",
    description="OS Security Patch Assessment is not available on the remote host. This does not necessarily "
    "indicate a problem with the scan. Credentials may not have been provided.",
    output="\nOS Security Patch Assessment is not available because of the following\nissues :\n\n"
    "- Credentials were not provided for detected SSH service.\n",
)
ALWAYS = (
    _p(
        id=10287,
        name="Traceroute Information",
        family="General",
        severity=0,
        fname="traceroute.nasl",
        protocol="udp",
        published="1999/11/27",
        modified="2023/12/04",
        script_version="1.90",
        synopsis="It was possible to obtain traceroute information.",
        description="Makes a traceroute to the remote host.",
        output="For your information, here is the traceroute from {scanner_ip} to {ip} : "
        "\n{scanner_ip}\n{ip}\n\n"
        "Hop Count: 1\n",
    ),
    _p(
        id=45590,
        name="Common Platform Enumeration (CPE)",
        family="General",
        severity=0,
        fname="cpe.nbin",
        plugin_type="combined",
        published="2010/04/21",
        modified="2024/05/14",
        script_version="1.197",
        see_also=("http://cpe.mitre.org/", "https://nvd.nist.gov/products/cpe"),
        synopsis="It was possible to enumerate CPE names that matched on the remote system.",
        description="By using information obtained from a Nessus scan, this plugin reports CPE (Common "
        "Platform "
        "Enumeration) matches for various hardware and software products found on a host.",
        output="\nThe remote operating system matched the following CPE : \n\n  {cpe}\n",
    ),
    _p(
        id=11936,
        name="OS Identification",
        family="General",
        severity=0,
        fname="os_fingerprint.nasl",
        plugin_type="combined",
        published="2003/12/09",
        modified="2024/04/04",
        script_version="2.68",
        synopsis="It is possible to guess the remote operating system.",
        description="Using a combination of remote probes (e.g., TCP/IP, SMB, HTTP, NTP, SNMP, etc.), it is "
        "possible to guess the name of the remote operating system in use.",
        output="\nRemote operating system : {os_name}\nConfidence level : 95\nMethod : SSH\n",
    ),
    _p(
        id=54615,
        name="Device Type",
        family="General",
        severity=0,
        fname="device_type.nasl",
        plugin_type="combined",
        published="2011/05/23",
        modified="2022/09/09",
        script_version="1.13",
        synopsis="It is possible to guess the remote device type.",
        description="Based on the remote operating system, it is possible to determine what the remote "
        "system "
        "type is (eg: a printer, router, general-purpose computer, etc).",
        output="Remote device type : general-purpose\nConfidence level : 95\n",
    ),
)
OPTIONAL = (
    _p(
        id=10863,
        name="SSL Certificate Information",
        family="General",
        severity=0,
        fname="ssl_cert_info.nasl",
        port=443,
        svc_name="www",
        published="2008/05/19",
        modified="2021/02/03",
        script_version="1.22",
        synopsis="This plugin displays the SSL certificate.",
        description="This plugin connects to every SSL-related port and attempts to extract and dump the "
        "X.509 "
        "certificate.",
        output="\nSubject Name: \n\nCommon Name: {fqdn}\n\nIssuer Name: \n\nCommon Name: {fqdn}\n",
    ),
    _p(
        id=56984,
        name="SSL / TLS Versions Supported",
        family="General",
        severity=0,
        fname="ssl_supported_versions.nasl",
        port=443,
        svc_name="www",
        published="2011/12/01",
        modified="2023/07/10",
        script_version="1.18",
        synopsis="The remote service encrypts communications.",
        description="This plugin detects which SSL and TLS versions are supported by the remote service for "
        "encrypting communications.",
        output="\nThis port supports TLSv1.2/TLSv1.3.\n",
    ),
    _p(
        id=10267,
        name="SSH Server Type and Version Information",
        family="Service detection",
        severity=0,
        fname="ssh_detect.nasl",
        port=22,
        svc_name="ssh",
        published="1999/10/12",
        modified="2024/03/20",
        script_version="1.104",
        synopsis="An SSH server is listening on this port.",
        description="It is possible to obtain information about the remote SSH server by sending an empty "
        "authentication request.",
        output="\n  SSH version : SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6\n"
        "  SSH supported authentication : publickey,password\n",
    ),
    _p(
        id=70657,
        name="SSH Algorithms and Languages Supported",
        family="Misc.",
        severity=0,
        fname="ssh_supported_algorithms.nasl",
        port=22,
        svc_name="ssh",
        published="2013/10/28",
        modified="2017/08/28",
        script_version="1.3",
        synopsis="An SSH server is listening on this port.",
        description="This script detects which algorithms and languages are supported by the remote service "
        "for "
        "encrypting communications.",
        output="\nNessus negotiated the following encryption algorithm(s) with the "
        "server : \n\n  Client to Server: aes256-ctr\n  Server to Client: aes256-ctr\n",
    ),
    _p(
        id=10107,
        name="HTTP Server Type and Version",
        family="Web Servers",
        severity=0,
        fname="http_version.nasl",
        port=80,
        svc_name="www",
        published="2000/01/04",
        modified="2020/10/30",
        script_version="1.137",
        synopsis="A web server is running on the remote host.",
        description="This plugin attempts to determine the type and the version of the   remote web server.",
        output="The remote web server type is :\n\nnginx/1.18.0 (Ubuntu)",
    ),
    _p(
        id=24260,
        name="HyperText Transfer Protocol (HTTP) Information",
        family="Web Servers",
        severity=0,
        fname="http_info.nasl",
        port=80,
        svc_name="www",
        published="2007/01/30",
        modified="2019/11/22",
        script_version="1.13",
        synopsis="Some information about the remote HTTP configuration can be extracted.",
        description="This test gives some information about the remote HTTP protocol - the version used, "
        "whether "
        "HTTP Keep-Alive and HTTP pipelining are enabled, etc... ",
        output="\nResponse Code : HTTP/1.1 200 OK\n\nProtocol version : HTTP/1.1\nSSL : no\nKeep-Alive : no\n",
    ),
    _p(
        id=25220,
        name="TCP/IP Timestamps Supported",
        family="General",
        severity=0,
        fname="tcp_timestamps.nasl",
        published="2007/05/16",
        modified="2019/03/06",
        script_version="1.21",
        synopsis="The remote service implements TCP timestamps.",
        description="The remote host implements TCP timestamps, as defined by RFC1323.  A side effect of "
        "this "
        "feature is that the uptime of the remote host can sometimes be computed.",
        see_also=("http://www.ietf.org/rfc/rfc1323.txt",),
    ),
    _p(
        id=149334,
        name="SSH Password Authentication Accepted",
        family="Misc.",
        severity=0,
        fname="ssh_password_authentication.nasl",
        port=22,
        svc_name="ssh",
        published="2021/05/07",
        modified="2021/05/07",
        script_version="1.2",
        synopsis="The SSH server on the remote host accepts password authentication.",
        description="The SSH server on the remote host accepts password authentication.",
        see_also=("https://tools.ietf.org/html/rfc4252#section-8",),
    ),
    _p(
        id=10114,
        name="ICMP Timestamp Request Remote Date Disclosure",
        family="General",
        severity=0,
        fname="icmp_timestamp.nasl",
        protocol="icmp",
        published="1999/08/01",
        modified="2024/05/03",
        script_version="1.53",
        cves=("CVE-1999-0524",),
        xrefs=("CWE:200",),
        cvss2=("0.0", "CVSS2#AV:L/AC:L/Au:N/C:N/I:N/A:N"),
        synopsis="It is possible to determine the exact time set on the remote host.",
        description="The remote host answers to an ICMP timestamp request.  This allows an attacker to know "
        "the "
        "date that is set on the targeted machine, which may assist an unauthenticated, remote attacker in "
        "defeating time-based authentication protocols.",
        solution="Filter out the ICMP timestamp requests (13), and the outgoing ICMP timestamp replies (14).",
        output="The difference between the local and remote clocks is 1 second.\n",
    ),
    _p(
        id=11011,
        name="Microsoft Windows SMB Service Detection",
        family="Windows",
        severity=0,
        fname="cifs445.nasl",
        port=445,
        svc_name="cifs",
        os="windows",
        published="2002/06/05",
        modified="2021/02/11",
        script_version="1.43",
        synopsis="A file / print sharing service is listening on the remote host.",
        description="The remote service understands the CIFS (Common Internet File System) or "
        "Server Message Block (SMB) protocol, used to provide shared access to files, printers, etc between "
        "nodes "
        "on a network.",
        output="\nA CIFS server is running on this port.\n",
    ),
    _p(
        id=70658,
        name="SSH Server CBC Mode Ciphers Enabled",
        family="Misc.",
        severity=1,
        fname="ssh_cbc_supported_ciphers.nasl",
        port=22,
        svc_name="ssh",
        published="2013/10/28",
        modified="2023/10/27",
        script_version="1.9",
        cves=("CVE-2008-5161",),
        xrefs=("CERT:958563", "CWE:200"),
        cvss2=("2.6", "CVSS2#AV:N/AC:H/Au:N/C:P/I:N/A:N"),
        cvss3=("3.7", "CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:N/A:N"),
        vpr="2.5",
        epss="0.0276",
        synopsis="The SSH server is configured to use Cipher Block Chaining.",
        description="The SSH server is configured to support Cipher Block Chaining (CBC) encryption.  This "
        "may "
        "allow an attacker to recover the plaintext message from the ciphertext. ",
        solution="Contact the vendor or consult product documentation to disable CBC mode cipher encryption, "
        "and "
        "enable CTR or GCM cipher mode encryption.",
        output="\nThe following client-to-server Cipher Block Chaining (CBC) algorithms\nare supported : \n\n"
        "  aes128-cbc\n  aes256-cbc\n",
    ),
    _p(
        id=153953,
        name="SSH Weak Key Exchange Algorithms Enabled",
        family="Misc.",
        severity=1,
        fname="ssh_weak_kex_algorithms.nasl",
        port=22,
        svc_name="ssh",
        published="2021/10/13",
        modified="2024/03/22",
        script_version="1.4",
        cvss2=("2.6", "CVSS2#AV:N/AC:H/Au:N/C:P/I:N/A:N"),
        cvss3=("3.7", "CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:N/A:N"),
        see_also=("https://datatracker.ietf.org/doc/html/rfc9142",),
        synopsis="The remote SSH server is configured to allow weak key exchange algorithms.",
        description="The remote SSH server is configured to allow key exchange algorithms which are considered weak.",
        solution="Contact the vendor or consult product documentation to disable the weak algorithms.",
        output="\nThe following weak key exchange algorithms are enabled : \n\n  diffie-hellman-group-exchange-sha1\n",
    ),
    _p(
        id=71049,
        name="SSH Weak MAC Algorithms Enabled",
        family="Misc.",
        severity=1,
        fname="ssh_weak_hmac_enabled.nasl",
        port=22,
        svc_name="ssh",
        published="2013/11/22",
        modified="2016/12/14",
        script_version="1.3",
        cvss2=("2.6", "CVSS2#AV:N/AC:H/Au:N/C:P/I:N/A:N"),
        synopsis="The remote SSH server is configured to allow MD5 and 96-bit MAC algorithms.",
        description="The remote SSH server is configured to allow either MD5 or 96-bit MAC algorithms, both "
        "of "
        "which are considered weak.",
        solution="Contact the vendor or consult product documentation to disable MD5 and 96-bit MAC algorithms.",
        output="\nThe following client-to-server Message Authentication Code "
        "(MAC) algorithms\nare supported : \n\n  hmac-md5\n  hmac-sha1-96\n",
    ),
    _p(
        id=57582,
        name="SSL Self-Signed Certificate",
        family="General",
        severity=2,
        fname="ssl_self_signed.nasl",
        port=443,
        svc_name="www",
        published="2012/01/17",
        modified="2022/06/14",
        script_version="1.6",
        cvss2=("6.4", "CVSS2#AV:N/AC:L/Au:N/C:P/I:P/A:N"),
        cvss3=("6.5", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:N"),
        synopsis="The SSL certificate chain for this service ends in an unrecognized self-signed certificate.",
        description="The X.509 certificate chain for this service is not signed by a recognized certificate "
        "authority.  If the remote host is a public host in production, this nullifies the use of SSL as "
        "anyone "
        "could establish a man-in-the-middle attack against the remote host.",
        solution="Purchase or generate a proper SSL certificate for this service.",
        output="\nThe following certificate was found at the top of the certificate\nchain sent by the "
        "remote host, "
        "but is self-signed and was not\nfound in the list of known certificate authorities :\n\n"
        "|-Subject : CN={fqdn}\n",
    ),
    _p(
        id=51192,
        name="SSL Certificate Cannot Be Trusted",
        family="General",
        severity=2,
        fname="ssl_certificate_chain.nasl",
        port=443,
        svc_name="www",
        published="2010/12/15",
        modified="2020/04/27",
        script_version="1.20",
        cvss2=("6.4", "CVSS2#AV:N/AC:L/Au:N/C:P/I:P/A:N"),
        cvss3=("6.5", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:N"),
        see_also=("https://www.itu.int/rec/T-REC-X.509/en", "https://en.wikipedia.org/wiki/X.509"),
        synopsis="The SSL certificate for this service cannot be trusted.",
        description="The server's X.509 certificate cannot be trusted.",
        solution="Purchase or generate a proper SSL certificate for this service.",
        output="\nThe following certificate was at the top of the certificate\nchain sent by the remote "
        "host, but it "
        "is signed by an unknown\ncertificate authority :\n\n|-Subject : CN={fqdn}\n",
    ),
    _p(
        id=104743,
        name="TLS Version 1.0 Protocol Detection",
        family="Service detection",
        severity=2,
        fname="tls10_detection.nasl",
        port=443,
        svc_name="www",
        published="2017/11/22",
        modified="2023/04/19",
        script_version="1.18",
        cvss2=("6.1", "CVSS2#AV:N/AC:H/Au:N/C:C/I:P/A:N"),
        cvss3=("6.5", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:N"),
        xrefs=("CWE:327",),
        see_also=("https://tools.ietf.org/html/draft-ietf-tls-oldversions-deprecate-00",),
        synopsis="The remote service encrypts traffic using an older version of TLS.",
        description="The remote service accepts connections encrypted using TLS 1.0. TLS 1.0 has a number of "
        "cryptographic design flaws.",
        solution="Enable support for TLS 1.2 and 1.3, and disable support for TLS 1.0.",
        output="\nTLSv1 is enabled and the server supports at least one cipher.\n",
    ),
    _p(
        id=157288,
        name="TLS Version 1.1 Deprecated Protocol",
        family="Service detection",
        severity=2,
        fname="tls11_detection.nasl",
        port=443,
        svc_name="www",
        published="2022/04/04",
        modified="2024/05/14",
        script_version="1.9",
        cvss2=("6.1", "CVSS2#AV:N/AC:H/Au:N/C:C/I:P/A:N"),
        cvss3=("6.5", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:N"),
        xrefs=("CWE:327",),
        see_also=("https://datatracker.ietf.org/doc/html/rfc8996",),
        synopsis="The remote service encrypts traffic using an older version of TLS.",
        description="The remote service accepts connections encrypted using TLS 1.1. TLS 1.1 lacks support "
        "for "
        "current and recommended cipher suites.",
        solution="Enable support for TLS 1.2 and/or 1.3, and disable support for TLS 1.1.",
        output="\nTLSv1.1 is enabled and the server supports at least one cipher.\n",
    ),
    _p(
        id=187315,
        name="SSH Terrapin Prefix Truncation Weakness (CVE-2023-48795)",
        family="Misc.",
        severity=2,
        fname="ssh_terrapin.nbin",
        port=22,
        svc_name="ssh",
        published="2023/12/27",
        modified="2024/04/15",
        script_version="1.4",
        cves=("CVE-2023-48795",),
        cvss2=("5.4", "CVSS2#AV:N/AC:H/Au:N/C:N/I:C/A:N"),
        cvss3=("5.9", "CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:H/A:N"),
        vpr="6.1",
        epss="0.9613",
        exploit_available=True,
        xrefs=("IAVA:2024-A-0004",),
        see_also=("https://terrapin-attack.com/",),
        synopsis="The remote SSH server is vulnerable to a mitm prefix truncation attack.",
        description="The remote SSH server is vulnerable to a man-in-the-middle prefix truncation weakness "
        "known "
        "as Terrapin. This can allow a remote, man-in-the-middle attacker to bypass integrity checks and "
        "downgrade "
        "the connection's security.",
        solution="Contact the vendor for an update with the strict key exchange "
        "countermeasures or disable the affected algorithms.",
        output="\nSupports following vulnerable cipher suites : \n\n  ChaCha20-Poly1305 algorithms: \n"
        "    chacha20-poly1305@openssh.com\n",
    ),
    _p(
        id=90317,
        name="SSH Weak Algorithms Supported",
        family="Misc.",
        severity=2,
        fname="ssh_weak_algorithms.nasl",
        port=22,
        svc_name="ssh",
        published="2016/04/04",
        modified="2016/12/14",
        script_version="1.3",
        cvss2=("4.3", "CVSS2#AV:N/AC:M/Au:N/C:P/I:N/A:N"),
        see_also=("https://tools.ietf.org/html/rfc4253#section-6.3",),
        synopsis="The remote SSH server is configured to allow weak encryption algorithms or no algorithm at all.",
        description="Nessus has detected that the remote SSH server is configured to use the Arcfour stream "
        "cipher or no cipher at all.",
        solution="Contact the vendor or consult product documentation to remove the weak ciphers.",
        output="\nThe following weak server-to-client encryption algorithms are supported : \n\n  arcfour256\n",
    ),
    _p(
        id=11213,
        name="HTTP TRACE / TRACK Methods Allowed",
        family="Web Servers",
        severity=2,
        fname="xst.nasl",
        port=80,
        svc_name="www",
        published="2003/01/23",
        modified="2024/04/09",
        script_version="1.84",
        cves=("CVE-2003-1567", "CVE-2004-2320", "CVE-2010-0386"),
        xrefs=("CERT:288308", "CERT:867593", "CWE:16", "CWE:200"),
        cvss2=("5.0", "CVSS2#AV:N/AC:L/Au:N/C:P/I:N/A:N"),
        cvss3=("5.3", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N"),
        vpr="4.0",
        epss="0.7011",
        exploit_available=True,
        see_also=("http://www.apacheweek.com/issues/03-01-24",),
        synopsis="Debugging functions are enabled on the remote web server.",
        description="The remote web server supports the TRACE and/or TRACK methods. TRACE and TRACK are HTTP "
        "methods that are used to debug web server connections.",
        solution="Disable these HTTP methods. Refer to the plugin output for more information.",
        output="\nTo disable these methods, add the following lines for each virtual\nhost in your "
        "configuration "
        "file :\n\n    RewriteEngine on\n    RewriteCond %{{REQUEST_METHOD}} ^(TRACE|TRACK)\n    RewriteRule "
        ".* - [F]\n",
    ),
    _p(
        id=57608,
        name="SMB Signing not required",
        family="Misc.",
        severity=2,
        fname="smb_signing_disabled.nasl",
        port=445,
        svc_name="cifs",
        os="windows",
        published="2012/01/19",
        modified="2022/10/05",
        script_version="1.19",
        cvss2=("5.0", "CVSS2#AV:N/AC:L/Au:N/C:N/I:P/A:N"),
        cvss3=("5.3", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:L/A:N"),
        see_also=("https://support.microsoft.com/en-us/help/887429/overview-of-server-message-block-signing",),
        synopsis="Signing is not required on the remote SMB server.",
        description="Signing is not required on the remote SMB server. An unauthenticated, remote attacker "
        "can "
        "exploit this to conduct man-in-the-middle attacks against the SMB server.",
        solution="Enforce message signing in the host's configuration.",
    ),
    _p(
        id=42873,
        name="SSL Medium Strength Cipher Suites Supported (SWEET32)",
        family="General",
        severity=3,
        fname="ssl_medium_supported_ciphers.nasl",
        port=443,
        svc_name="www",
        published="2009/11/23",
        modified="2021/02/03",
        script_version="1.23",
        cves=("CVE-2016-2183",),
        cvss2=("5.0", "CVSS2#AV:N/AC:L/Au:N/C:P/I:N/A:N"),
        cvss3=("7.5", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"),
        vpr="6.1",
        epss="0.0167",
        see_also=("https://www.openssl.org/blog/blog/2016/08/24/sweet32/", "https://sweet32.info"),
        synopsis="The remote service supports the use of medium strength SSL ciphers.",
        description="The remote host supports the use of SSL ciphers that offer medium strength encryption. "
        "Nessus regards medium strength as any encryption that uses key lengths at least 64 bits and less "
        "than "
        "112 bits, or else that uses the 3DES encryption suite.",
        solution="Reconfigure the affected application if possible to avoid use of medium strength ciphers.",
        output="\n  Medium Strength Ciphers (> 64-bit and < 112-bit key, or 3DES)\n\n"
        "    Name                          Code             KEX           Auth     Encryption             "
        "MAC\n"
        "    DES-CBC3-SHA                  0x00, 0x0A       RSA           RSA      3DES-CBC(168)          "
        "SHA1\n",
    ),
    _p(
        id=201194,
        name="OpenSSH < 9.8 RCE",
        family="Misc.",
        severity=3,
        fname="openssh_9_8.nasl",
        port=22,
        svc_name="ssh",
        os="linux",
        published="2024/07/02",
        modified="2024/07/22",
        script_version="1.7",
        cves=("CVE-2024-6387",),
        xrefs=("IAVA:2024-A-0375",),
        cvss2=("9.3", "CVSS2#AV:N/AC:M/Au:N/C:C/I:C/A:C"),
        cvss3=("8.1", "CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H"),
        vpr="9.2",
        epss="0.4401",
        exploit_available=True,
        see_also=("https://www.openssh.com/txt/release-9.8",),
        synopsis="The SSH server running on the remote host is affected by a remote code execution vulnerability.",
        description="The version of OpenSSH installed on the remote host is prior to 9.8. It is, therefore, "
        "affected by a signal handler race condition (regreSSHion).",
        solution="Upgrade to OpenSSH version 9.8 or later.",
        output="\n  Version source    : SSH-2.0-OpenSSH_8.9p1\n  Installed version : 8.9p1\n  Fixed version  "
        "   : 9.8p1 / 9.8\n",
    ),
    _p(
        id=192923,
        name="Apache 2.4.x < 2.4.59 Multiple Vulnerabilities",
        family="Web Servers",
        severity=3,
        fname="apache_2_4_59.nasl",
        port=80,
        svc_name="www",
        os="linux",
        published="2024/04/04",
        modified="2024/05/03",
        script_version="1.5",
        cves=("CVE-2023-38709", "CVE-2024-24795", "CVE-2024-27316"),
        xrefs=("IAVA:2024-A-0202-S",),
        cvss2=("7.8", "CVSS2#AV:N/AC:L/Au:N/C:N/I:N/A:C"),
        cvss3=("7.5", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"),
        vpr="5.2",
        epss="0.0043",
        see_also=("https://httpd.apache.org/security/vulnerabilities_24.html",),
        synopsis="The remote web server is affected by multiple vulnerabilities.",
        description="The version of Apache httpd installed on the remote host is prior to 2.4.59. It is, "
        "therefore, affected by multiple vulnerabilities.",
        solution="Upgrade to Apache version 2.4.59 or later.",
        output="\n  URL               : http://{ip}/\n  Installed version : 2.4.52\n  Fixed version     : 2.4.59\n",
    ),
    _p(
        id=97833,
        name="MS17-010: Security Update for Microsoft Windows SMB Server (4013389) (ETERNALBLUE) "
        "(ETERNALCHAMPION) (ETERNALROMANCE) (ETERNALSYNERGY) (WannaCry) (EternalRocks) (Petya) "
        "(uncredentialed check)",
        family="Windows",
        severity=4,
        fname="smb_ms17-010.nasl",
        port=445,
        svc_name="cifs",
        os="windows",
        published="2017/03/20",
        modified="2023/04/25",
        script_version="1.22",
        cves=("CVE-2017-0143", "CVE-2017-0144", "CVE-2017-0145", "CVE-2017-0146", "CVE-2017-0148"),
        xrefs=("MSFT:MS17-010", "CISA-KNOWN-EXPLOITED:2022/05/03", "IAVA:2017-A-0065"),
        cvss2=("9.3", "CVSS2#AV:N/AC:M/Au:N/C:C/I:C/A:C"),
        cvss3=("8.1", "CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H"),
        vpr="9.7",
        epss="0.9745",
        exploit_available=True,
        see_also=("https://docs.microsoft.com/en-us/security-updates/SecurityBulletins/2017/ms17-010",),
        synopsis="The remote Windows host is affected by multiple vulnerabilities.",
        description="The remote Windows host is affected by the following vulnerabilities : multiple remote "
        "code "
        "execution vulnerabilities exist in Microsoft Server Message Block 1.0 (SMBv1).",
        solution="Microsoft has released a set of patches for Windows Vista, 2008, 7, 2008 R2, 2012, 8.1, RT "
        "8.1, "
        "2012 R2, 10, and 2016. Consider disabling SMBv1.",
    ),
    _p(
        id=108797,
        name="Unsupported Windows OS (remote)",
        family="Windows",
        severity=4,
        fname="unsupported_windows_os.nasl",
        os="windows",
        plugin_type="combined",
        published="2018/04/03",
        modified="2024/04/05",
        script_version="1.28",
        cvss2=("10.0", "CVSS2#AV:N/AC:L/Au:N/C:C/I:C/A:C"),
        cvss3=("10.0", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"),
        xrefs=("IAVA:0001-A-0501",),
        synopsis="The remote OS or service pack is no longer supported.",
        description="The remote version of Microsoft Windows is either missing a service pack or is no "
        "longer "
        "supported. As a result, it is likely to contain security vulnerabilities.",
        solution="Upgrade to a supported service pack or operating system.",
        output="\nThe following Windows version is installed and not supported:\n\n  {os_name}\n",
    ),
    _p(
        id=33850,
        name="Unix Operating System Unsupported Version Detection",
        family="General",
        severity=4,
        fname="unsupported_operating_system.nasl",
        os="linux",
        plugin_type="combined",
        published="2008/08/08",
        modified="2024/05/29",
        script_version="1.398",
        cvss2=("10.0", "CVSS2#AV:N/AC:L/Au:N/C:C/I:C/A:C"),
        cvss3=("10.0", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"),
        xrefs=("IAVA:0001-A-0502", "IAVA:0001-A-0648"),
        synopsis="The operating system running on the remote host is no longer supported.",
        description="According to its self-reported version number, the Unix operating system running on the "
        "remote host is no longer supported.",
        solution="Upgrade to a version of the Unix operating system that is currently supported.",
        output="\n{os_name} support ended.\n",
    ),
)
LOCAL = (
    _p(
        id=97993,
        name="OS Identification and Installed Software Enumeration over SSH v2 (Using New SSH Library)",
        family="General",
        severity=0,
        fname="ssh_get_info2.nasl",
        plugin_type="combined",
        published="2017/05/30",
        modified="2024/05/13",
        script_version="1.169",
        synopsis="Information about the remote host can be disclosed via an authenticated session.",
        description="Nessus was able to login to the remote host using SSH or "
        "local commands and extract the list of installed packages.",
        output="\nNessus can run commands on localhost to check if patches are applied.\n\n"
        "The remote Debian system is :\n{os_name}\n\nLocal checks have been enabled for this host.\n",
    ),
    _p(
        id=22869,
        name="Software Enumeration (SSH)",
        family="General",
        severity=0,
        fname="ssh_enum_software.nasl",
        plugin_type="local",
        published="2006/10/15",
        modified="2024/03/26",
        script_version="1.20",
        synopsis="It was possible to enumerate installed software on the remote host via SSH.",
        description="Nessus was able to list the software installed on the remote host by calling the "
        "appropriate command.",
        output="\nHere is the list of packages installed on the remote Linux system : \n\n"
        "ii  openssh-server 1:8.9p1-3ubuntu0.6\nii  openssl 3.0.2-0ubuntu1.15\nii  sudo 1.9.9-1ubuntu2.4\n",
    ),
    _p(
        id=66334,
        name="Patch Report",
        family="General",
        severity=0,
        fname="patches_summary.nbin",
        plugin_type="local",
        published="2013/07/08",
        modified="2024/06/04",
        script_version="1.216",
        synopsis="The remote host is missing several patches.",
        description="The remote host is missing one or more security patches. This plugin lists the newest "
        "version of each patch to install to make sure the remote host is up-to-date.",
        solution="Install the patches listed below.",
        output="\n\n. You need to take the following 2 actions :\n\n[ Ubuntu 22.04 LTS : OpenSSL "
        "vulnerabilities "
        "(USN-6709-1) (192867) ]\n\n+ Action to take : Update the affected packages.\n",
    ),
    _p(
        id=192867,
        name="Ubuntu 22.04 LTS : OpenSSL vulnerabilities (USN-6709-1)",
        family="Ubuntu Local Security Checks",
        severity=2,
        fname="ubuntu_USN-6709-1.nasl",
        plugin_type="local",
        published="2024/04/03",
        modified="2024/04/03",
        script_version="1.1",
        cves=("CVE-2023-5678", "CVE-2024-0727"),
        xrefs=("USN:6709-1",),
        cvss2=("4.3", "CVSS2#AV:N/AC:M/Au:N/C:N/I:N/A:P"),
        cvss3=("5.5", "CVSS:3.0/AV:L/AC:L/PR:N/UI:R/S:U/C:N/I:N/A:H"),
        vpr="4.4",
        epss="0.0012",
        see_also=("https://ubuntu.com/security/notices/USN-6709-1",),
        synopsis="The remote Ubuntu host is missing one or more security updates.",
        description="The remote Ubuntu 22.04 LTS host has packages installed that are affected by multiple "
        "vulnerabilities as referenced in the USN-6709-1 advisory.",
        solution="Update the affected packages.",
        output="\n  - Installed package : openssl_3.0.2-0ubuntu1.14\n  - Fixed package     : "
        "openssl_3.0.2-0ubuntu1.15\n",
    ),
    _p(
        id=197011,
        name="Ubuntu 22.04 LTS : Linux kernel vulnerabilities (USN-6766-1)",
        family="Ubuntu Local Security Checks",
        severity=3,
        fname="ubuntu_USN-6766-1.nasl",
        plugin_type="local",
        published="2024/05/15",
        modified="2024/08/28",
        script_version="1.3",
        cves=("CVE-2023-52447", "CVE-2024-26643", "CVE-2024-26925", "CVE-2024-1086"),
        xrefs=("USN:6766-1",),
        cvss2=("7.2", "CVSS2#AV:L/AC:L/Au:N/C:C/I:C/A:C"),
        cvss3=("7.8", "CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H"),
        vpr="8.4",
        epss="0.0022",
        exploit_available=True,
        see_also=("https://ubuntu.com/security/notices/USN-6766-1",),
        synopsis="The remote Ubuntu host is missing one or more security updates.",
        description="The remote Ubuntu 22.04 LTS host has a package installed that is affected by multiple "
        "vulnerabilities as referenced in the USN-6766-1 advisory.",
        solution="Update the affected kernel package.",
        output="\nRunning Kernel level of 5.15.0-100-generic does not meet the minimum fixed level of "
        "5.15.0-107-generic for this advisory.\n",
    ),
    _p(
        id=170008,
        name="Ubuntu 22.04 LTS : Sudo vulnerabilities (USN-5811-1)",
        family="Ubuntu Local Security Checks",
        severity=3,
        fname="ubuntu_USN-5811-1.nasl",
        plugin_type="local",
        published="2023/01/18",
        modified="2024/08/27",
        script_version="1.6",
        cves=("CVE-2022-43995", "CVE-2023-22809"),
        xrefs=("USN:5811-1", "IAVA:2023-A-0054-S"),
        cvss2=("7.2", "CVSS2#AV:L/AC:L/Au:N/C:C/I:C/A:C"),
        cvss3=("7.8", "CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H"),
        vpr="6.7",
        epss="0.0009",
        exploit_available=True,
        see_also=("https://ubuntu.com/security/notices/USN-5811-1",),
        synopsis="The remote Ubuntu host is missing one or more security updates.",
        description="The remote Ubuntu 22.04 LTS host has packages installed that are affected by multiple "
        "vulnerabilities as referenced in the USN-5811-1 advisory.",
        solution="Update the affected sudo packages.",
        output="\n  - Installed package : sudo_1.9.9-1ubuntu2.1\n  - Fixed package     : sudo_1.9.9-1ubuntu2.2\n",
    ),
    _p(
        id=193909,
        name="Ubuntu 22.04 LTS : less vulnerability (USN-6756-1)",
        family="Ubuntu Local Security Checks",
        severity=1,
        fname="ubuntu_USN-6756-1.nasl",
        plugin_type="local",
        published="2024/04/25",
        modified="2024/08/27",
        script_version="1.2",
        cves=("CVE-2024-32487",),
        xrefs=("USN:6756-1",),
        cvss3=("3.9", "CVSS:3.0/AV:L/AC:H/PR:L/UI:R/S:U/C:L/I:L/A:L"),
        vpr="3.4",
        epss="0.0004",
        synopsis="The remote Ubuntu host is missing a security update.",
        description="The remote Ubuntu 22.04 LTS host has a package installed that is affected by a "
        "vulnerability "
        "as referenced in the USN-6756-1 advisory.",
        solution="Update the affected less package.",
        output="\n  - Installed package : less_590-1ubuntu0.22.04.1\n  - Fixed package     : "
        "less_590-1ubuntu0.22.04.2\n",
    ),
    _p(
        id=201016,
        name="Ubuntu 22.04 LTS : GLib vulnerability (USN-6768-1)",
        family="Ubuntu Local Security Checks",
        severity=4,
        fname="ubuntu_USN-6768-1.nasl",
        plugin_type="local",
        published="2024/06/26",
        modified="2024/08/27",
        script_version="1.2",
        cves=("CVE-2024-34397",),
        xrefs=("USN:6768-1",),
        cvss2=("10.0", "CVSS2#AV:N/AC:L/Au:N/C:C/I:C/A:C"),
        cvss3=("9.8", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
        vpr="5.9",
        epss="0.0015",
        synopsis="The remote Ubuntu host is missing a security update.",
        description="The remote Ubuntu 22.04 LTS host has packages installed that are affected by a "
        "vulnerability "
        "as referenced in the USN-6768-1 advisory.",
        solution="Update the affected packages.",
        output="\n  - Installed package : libglib2.0-0_2.72.4-0ubuntu2.2\n  - Fixed package     : "
        "libglib2.0-0_2.72.4-0ubuntu2.3\n",
    ),
)
