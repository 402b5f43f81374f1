"""Parsing throughput, peak memory and results-page latency on large generated exports.

    .venv/bin/python -m benchmarks.parsing [--sizes 50,400] [--runs 3] [--skip-peer-above 100]

Exports are made by replicating the hosts of a corpus file with new addresses, under a temporary
folder that is removed afterwards. Every parse runs in a fresh subprocess, so peak RSS
(``ru_maxrss``) is that run's alone. Three parsers over the same file:

- ``scanfleet``: the validator's ``ParsePool.parse`` with its findings spool (validation, auth verdicts,
  every typed finding encoded and written), i.e. everything the validator does per export. Big files
  are split at ReportHost boundaries over the validator's worker processes, which the service starts
  once; their start-up is reported as ``pool_start_s`` and left out of the timing, and peak RSS adds
  every worker (each counted at the largest one's peak) to the parent's;
- ``bare``: an lxml iterparse that only counts severities and clears elements (the floor);
- ``peer``: nessus-file-reader (``pip install .[bench]``), which loads the tree with ElementTree.

Then ``page``: a findings index of at least 100,000 findings built from the generated file, and the
latency of ``get_scan_results`` pages over it (new queries and cursor pages). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "nessus"
SOURCE = "mitre-saf__nessus_sample.nessus"
_NAME = re.compile(rb'<ReportHost name="[^"]*"')
_IP = re.compile(rb'<tag name="host-ip">[^<]*</tag>')


def generate(path: Path, megabytes: int, source: Path = CORPUS / SOURCE) -> int:
    """Write an export of about ``megabytes`` MB; returns the number of hosts."""
    data = source.read_bytes()
    start, end = data.index(b"<ReportHost"), data.rindex(b"</ReportHost>") + len(b"</ReportHost>")
    blocks = [b + b"</ReportHost>" for b in data[start:end].split(b"</ReportHost>") if b.strip()]
    target = megabytes * 1_000_000
    hosts = 0
    with path.open("wb") as out:
        out.write(data[:start])
        written = start
        while written < target:
            block = blocks[hosts % len(blocks)]
            ip = f"10.{hosts >> 16 & 255}.{hosts >> 8 & 255}.{hosts & 255}".encode()
            block = _NAME.sub(b'<ReportHost name="' + ip + b'"', block, count=1)
            block = _IP.sub(b'<tag name="host-ip">' + ip + b"</tag>", block, count=1)
            out.write(block)
            written += len(block)
            hosts += 1
        out.write(data[end:])
    return hosts


# One run, in a child process -------------------------------------------------------------


def run_scanfleet(path: str) -> int:
    """What the validator runs per export: its parse pool (workers already up, as in the service)."""
    assert _POOL is not None
    from scanfleet.validator.store import FindingsSpool

    with tempfile.TemporaryDirectory() as tmp:
        spool = FindingsSpool(Path(tmp) / "findings.bin")
        summary = _POOL.parse(Path(path), spool)
        spool.close()
    _EXTRA.update(mode=_POOL.last_mode, workers=_POOL.workers, worker_peak_rss_mb=_POOL.worker_peak_kib / 1024)
    return int(summary.item_count)


def run_bare(path: str) -> int:
    from lxml import etree

    counts = [0, 0, 0, 0, 0]
    for _, el in etree.iterparse(path, events=("end",), tag="ReportItem", resolve_entities=False, no_network=True):
        counts[int(el.get("severity", "0"))] += 1
        el.clear()
        parent = el.getparent()
        while el.getprevious() is not None:
            del parent[0]
    return sum(counts)


def run_peer(path: str) -> int:
    """nessus-file-reader doing the same work: host properties, auth line, every finding's fields."""
    nfr: Any = importlib.import_module("nessus_file_reader")

    root = nfr.file.nessus_scan_file_root_element(path)
    items = 0
    for host in nfr.scan.report_hosts(root):
        _ = (nfr.host.resolved_ip(host), nfr.host.resolved_fqdn(host), nfr.host.detected_os(host))
        _ = (nfr.host.host_time_start(host), nfr.host.host_time_end(host))
        for item in nfr.host.report_items(host):
            value = nfr.plugin.report_item_value
            _ = [value(item, k) for k in ("severity", "pluginID", "port", "protocol", "svc_name", "pluginName")]
            _ = [value(item, k) for k in ("cvss_base_score", "cvss3_base_score", "synopsis", "description")]
            _ = [value(item, k) for k in ("solution", "plugin_output", "exploit_available", "risk_factor")]
            _ = nfr.plugin.report_item_values(item, "cve")
            items += 1
    return items


RUNNERS = {"scanfleet": run_scanfleet, "bare": run_bare, "peer": run_peer}
_POOL: Any = None
_EXTRA: dict[str, Any] = {}


def child(kind: str, path: str) -> None:
    global _POOL
    # Imports are never timed: each runner's modules are loaded before its clock starts.
    importlib.import_module("lxml.etree")
    if kind == "peer":
        importlib.import_module("nessus_file_reader")
    if kind == "scanfleet":
        # The validator starts its parse workers once, at service start; that cost is reported apart.
        from scanfleet.validator.parallel import ParsePool
        from scanfleet.validator.service import default_parse_workers

        started = time.perf_counter()
        _POOL = ParsePool(default_parse_workers())
        _POOL.start()
        _EXTRA["pool_start_s"] = time.perf_counter() - started
    started = time.perf_counter()
    items = RUNNERS[kind](path)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if _EXTRA.get("worker_peak_rss_mb"):
        # Every worker counted at the largest one's peak: an upper bound on the processes' sum.
        peak_mb += _EXTRA["workers"] * _EXTRA["worker_peak_rss_mb"]
    if _POOL is not None:
        _POOL.close()
    print(json.dumps({"items": items, "seconds": seconds, "peak_rss_mb": peak_mb, **_EXTRA}))


def measure(kind: str, path: Path, runs: int) -> dict[str, Any]:
    size_mb = path.stat().st_size / 1e6
    results = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.parsing", "--child", kind, str(path)],
            capture_output=True,
            check=True,
            text=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    seconds = [r["seconds"] for r in results]
    report: dict[str, Any] = {
        "items": results[0]["items"],
        "seconds": [round(s, 3) for s in seconds],
        "mb_per_s": round(size_mb / statistics.median(seconds), 1),
        "mb_per_s_best": round(size_mb / min(seconds), 1),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results), 1),
    }
    if "mode" in results[0]:
        report["mode"] = sorted({r["mode"] for r in results})
        report["workers"] = results[0]["workers"]
        report["pool_start_s"] = round(max(r["pool_start_s"] for r in results), 3)
    return report


# Results pages ---------------------------------------------------------------------------


def page_latency(path: Path, want: int = 100_000, samples: int = 60) -> dict[str, Any]:
    import msgspec

    from scanfleet.common.findings import MAGIC, encode_frame
    from scanfleet.gateway import findings_query as q
    from scanfleet.validator.parsing import parse_export

    seen: list[Any] = []
    parsed = parse_export(path, on_finding=seen.append)
    hosts = parsed.hosts
    frames = bytearray(MAGIC)
    for n in range(want):
        finding = seen[n % len(seen)]
        copy = n // len(seen)
        if copy:
            ip = f"172.{16 + (copy >> 8 & 15)}.{copy & 255}.{n % 250 + 1}"
            finding = msgspec.structs.replace(finding, host=ip, ip=ip)
        frames.extend(encode_frame(finding))
    started = time.perf_counter()
    index = q.build_index("bench", "sha", bytes(frames), hosts)
    load_s = time.perf_counter() - started
    queries: list[tuple[dict[str, Any], str | None]] = [
        ({"severity": ">=3"}, None),
        ({}, None),
        ({"cvss3": ">=7", "exploit_available": False}, None),
        ({"host": "10.0.0.0/24"}, None),
        ({"text": "ssh"}, "-cvss,host"),
        ({"severity": [2, 3], "port": [22, 443]}, "host,port"),
    ]
    cached: dict[str, list[int]] = {}

    def one_page(filters: dict[str, Any], sort: str | None, offset: int) -> float:
        t0 = time.perf_counter()
        parsed_filters, spec = q.parse_filters(filters), q.parse_sort(sort)
        digest = q.query_hash(index, parsed_filters, spec)
        rows = cached.get(digest)
        if rows is None:
            rows = cached[digest] = q.select(index, parsed_filters, spec)
        page = rows[offset : offset + q.DEFAULT_PAGE_SIZE]
        _ = [q.project(index.finding(i), q.PROFILES["summary"]) for i in page]
        _ = q.matched_counts(index, rows)
        _ = q.encode_cursor(digest, offset + len(page))
        return (time.perf_counter() - t0) * 1000

    first = []
    for filters, sort in queries:
        cached.clear()
        first.append(one_page(filters, sort, 0))
    following = [one_page(*queries[i % len(queries)], 20 * (1 + i)) for i in range(samples)]
    every = first + following
    return {
        "findings": len(index),
        "index_build_s": round(load_s, 3),
        "new_query_page_ms_p50": round(statistics.median(first), 2),
        "new_query_page_ms_max": round(max(first), 2),
        "cursor_page_ms_p50": round(statistics.median(following), 2),
        "page_ms_p50": round(statistics.median(every), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50,400", help="export sizes in MB, comma separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-peer-above", type=int, default=1000, help="no peer run on bigger files (MB)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    report: dict[str, Any] = {"source": SOURCE, "runs": args.runs, "files": {}}
    with tempfile.TemporaryDirectory(prefix="scanfleet-bench-") as tmp:
        sizes = [int(s) for s in args.sizes.split(",")]
        for size in sizes:
            path = Path(tmp) / f"export-{size}mb.nessus"
            hosts = generate(path, size)
            entry: dict[str, Any] = {"bytes": path.stat().st_size, "hosts": hosts}
            for kind in ("scanfleet", "bare", "peer"):
                if kind == "peer" and size > args.skip_peer_above:
                    entry[kind] = "skipped (--skip-peer-above)"
                    continue
                entry[kind] = measure(kind, path, args.runs)
            fleet, bare = entry["scanfleet"]["mb_per_s"], entry["bare"]["mb_per_s"]
            entry["scanfleet_vs_bare"] = round(fleet / bare, 2)
            best = entry["scanfleet"]["mb_per_s_best"] / entry["bare"]["mb_per_s_best"]
            entry["scanfleet_vs_bare_best_runs"] = round(best, 2)
            if isinstance(entry["peer"], dict):
                entry["scanfleet_vs_peer"] = round(fleet / entry["peer"]["mb_per_s"], 2)
            report["files"][f"{size}MB"] = entry
        report["page"] = page_latency(Path(tmp) / f"export-{sizes[-1]}mb.nessus")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
