"""The split parse over worker processes gives exactly what one sequential pass gives, or falls back to it.

Every comparison is against ``parse_export`` over the whole file: the summary (hosts, counts, auth
verdicts, warnings) and the findings spool byte for byte, and for broken files the same rejection.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanfleet.validator.parallel import ParsePool, plan
from scanfleet.validator.parsing import ExportRejected, ExportSummary, parse_export
from scanfleet.validator.store import FindingsSpool
from tests.helpers import MALFORMED


@pytest.fixture
def sample(corpus: Path) -> Path:
    """Three hosts, 106 items, every severity, 19506 on each host."""
    return corpus / "python-libnessus__nessus_report_local_3.nessus"


@pytest.fixture(scope="module")
def pool() -> Iterator[ParsePool]:
    """Two workers, every file big enough, tiny pieces: each host boundary is a likely cut."""
    parse_pool = ParsePool(2, min_bytes=0, piece_bytes=2048)
    assert parse_pool.start()
    yield parse_pool
    parse_pool.close()


def run(parser: ParsePool, path: Path, tmp: Path, **kwargs: object) -> tuple[ExportSummary, bytes, int]:
    tmp.mkdir(exist_ok=True)
    spool = FindingsSpool(tmp / "findings.bin")
    try:
        summary = parser.parse(path, spool, **kwargs)  # type: ignore[arg-type]
    finally:
        spool.close()
    return summary, b"".join(part.read_bytes() for part in spool.parts), spool.count


def sequential(path: Path, tmp: Path, **kwargs: object) -> tuple[ExportSummary, bytes, int]:
    return run(ParsePool(0), path, tmp, **kwargs)


def replicate(source: Path, copies: int) -> bytes:
    """The source's hosts repeated with new names and addresses: many hosts, same structure."""
    data = source.read_bytes()
    start, end = data.index(b"<ReportHost"), data.rindex(b"</ReportHost>") + len(b"</ReportHost>")
    hosts = data[start:end]
    body = b"".join(
        re.sub(rb'(<ReportHost name=")[^"]*"', rb'\g<1>10.9.%d.%d"' % (n // 250, n % 250 + 1), hosts) + b"\n"
        for n in range(copies)
    )
    return data[:start] + body + data[end:]


def test_corpus_files_parse_the_same_in_parallel(
    corpus: Path, corpus_name: str, pool: ParsePool, tmp_path: Path
) -> None:
    got = run(pool, corpus / corpus_name, tmp_path / "p", expected_hosts=50)
    assert pool.last_mode == "parallel"
    assert got == sequential(corpus / corpus_name, tmp_path / "s", expected_hosts=50)


def test_many_hosts_split_into_many_pieces(sample: Path, tmp_path: Path) -> None:
    path = tmp_path / "many.nessus"
    path.write_bytes(replicate(sample, 40))
    parse_pool = ParsePool(2, min_bytes=0, piece_bytes=256 * 1024)
    try:
        summary, findings, count = run(parse_pool, path, tmp_path / "p", expected_hosts=200)
        assert parse_pool.last_mode == "parallel"
    finally:
        parse_pool.close()
    assert summary.host_count == 120 and count == summary.item_count == 40 * 106
    assert summary.warnings == ["120 host(s) in the export, fewer than the 200 expected"]
    assert (summary, findings, count) == sequential(path, tmp_path / "s", expected_hosts=200)


def test_parts_are_streamed_in_document_order(sample: Path, pool: ParsePool, tmp_path: Path) -> None:
    path = tmp_path / "many.nessus"
    path.write_bytes(replicate(sample, 6))
    spool = FindingsSpool(tmp_path / "findings.bin")
    pool.parse(path, spool)
    spool.close()
    assert len(spool.parts) > 3
    assert spool.parts[0].read_bytes() == b"SFF1"


def ghost_host(name: str) -> bytes:
    return (
        f'<ReportHost name="{name}"><HostProperties><tag name="host-ip">10.66.6.6</tag></HostProperties>'
        f'<ReportItem port="0" svc_name="general" protocol="tcp" severity="4" pluginID="1" '
        f'pluginName="ghost" pluginFamily="General"/></ReportHost>'
    ).encode()


PAD = b"x" * 50_000
BEFORE = PAD * 2


def hidden(label: str, ghost: bytes) -> bytes:
    """``ghost`` inside markup, two thirds of the way through a long stretch: the mid-span cut lands on it."""
    if label == "comment":
        return b"<!-- " + BEFORE + ghost + PAD + b" -->"
    if label == "processing_instruction":
        return b"<?note " + BEFORE + ghost + PAD + b" ?>"
    return (
        b"<ReportHost name='real-cdata'><ReportItem severity='1' pluginID='2'><plugin_output><![CDATA["
        + BEFORE
        + ghost
        + PAD
        + b"]]></plugin_output></ReportItem></ReportHost>"
    )


@pytest.mark.parametrize("label", ["comment", "processing_instruction", "cdata"])
def test_a_cut_inside_markup_falls_back_to_one_pass(label: str, tmp_path: Path) -> None:
    doc = (
        b"<?xml version='1.0'?>\n<NessusClientData_v2><Report name='r' xmlns:cm='http://www.nessus.org/cm'>"
        + ghost_host("first")
        + hidden(label, ghost_host("ghost"))
        + ghost_host("last")
        + b"</Report></NessusClientData_v2>"
    )
    path = tmp_path / f"{label}.nessus"
    path.write_bytes(doc)
    parse_pool = ParsePool(2, min_bytes=0)
    try:
        got = run(parse_pool, path, tmp_path / "p")
        assert parse_pool.last_mode == "sequential"
    finally:
        parse_pool.close()
    assert got == sequential(path, tmp_path / "s")
    assert "ghost" not in {h.name for h in got[0].hosts}


def test_hosts_all_inside_markup_fall_back(sample: Path, pool: ParsePool, tmp_path: Path) -> None:
    """When every cut is between hidden hosts, the pieces parse; the frame check notices instead."""
    data = replicate(sample, 2)
    start, end = data.index(b"<ReportHost"), data.rindex(b"</ReportHost>") + len(b"</ReportHost>")
    path = tmp_path / "hidden.nessus"
    path.write_bytes(data[:start] + b"<?hidden " + data[start:end] + b" ?>" + ghost_host("real") + data[end:])
    got = run(pool, path, tmp_path / "p")
    assert pool.last_mode == "sequential"
    assert got == sequential(path, tmp_path / "s")
    assert [h.name for h in got[0].hosts] == ["real"]


BROKEN = (
    "malformed_corpus_file",
    "truncated",
    "huge_attribute_mid_file",
    "stray_close_tag",
    "doctype",
    "undefined_entity_mid_file",
    "no_hosts",
    "empty",
)


def broken_exports(corpus: Path, sample: Path) -> dict[str, bytes]:
    many = replicate(sample, 3)
    third = many.index(b"<ReportItem", len(many) // 2)
    cases = [
        ("malformed_corpus_file", (corpus / MALFORMED).read_bytes()),
        ("truncated", many[: len(many) * 2 // 3]),
        (
            "huge_attribute_mid_file",
            many[:third] + b"<ReportItem pluginName='" + b"A" * 100_000 + b"'/>" + many[third:],
        ),
        ("stray_close_tag", many[:third] + b"</Report>" + many[third:]),
        ("doctype", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]>' + many[many.index(b"<Nessus") :]),
        ("undefined_entity_mid_file", many[:third] + b"&boom;" + many[third:]),
        ("no_hosts", b"<NessusClientData_v2><Report name='r'></Report></NessusClientData_v2>"),
        ("empty", b""),
    ]
    assert tuple(label for label, _ in cases) == BROKEN
    return dict(cases)


@pytest.mark.parametrize("label", BROKEN)
def test_broken_exports_get_the_sequential_rejection(
    label: str, corpus: Path, sample: Path, pool: ParsePool, tmp_path: Path
) -> None:
    data = broken_exports(corpus, sample)[label]
    path = tmp_path / f"{label}.nessus"
    path.write_bytes(data)
    with pytest.raises(ExportRejected) as expected:
        parse_export(path)
    with pytest.raises(ExportRejected) as got:
        run(pool, path, tmp_path / "p")
    assert (got.value.reason, got.value.message) == (expected.value.reason, expected.value.message)


def test_a_worker_killed_mid_pool_means_one_pass_then_fresh_workers(sample: Path, tmp_path: Path) -> None:
    path = tmp_path / "many.nessus"
    path.write_bytes(replicate(sample, 4))
    parse_pool = ParsePool(2, min_bytes=0, piece_bytes=4096)
    try:
        assert parse_pool.start()
        executor = parse_pool._executor
        assert executor is not None
        for pid in list(executor._processes):
            os.kill(pid, signal.SIGKILL)
        got = run(parse_pool, path, tmp_path / "a")
        assert parse_pool.last_mode == "sequential"
        assert got == sequential(path, tmp_path / "s")
        assert run(parse_pool, path, tmp_path / "b") == got
        assert parse_pool.last_mode == "parallel"
    finally:
        parse_pool.close()


def test_small_exports_stay_in_process(sample: Path, tmp_path: Path) -> None:
    parse_pool = ParsePool(2)
    run(parse_pool, sample, tmp_path / "p")
    assert parse_pool.last_mode == "sequential"
    assert parse_pool._executor is None


def test_plan_cuts_only_at_host_start_tags() -> None:
    doc = (
        b"<NessusClientData_v2><Report name='r'>"
        + b"".join(b"<ReportHost name='h%d'><ReportHostile/></ReportHost>\n" % i for i in range(10))
        + b"</Report></NessusClientData_v2>"
    )
    layout = plan(doc, 4)
    assert layout is not None
    assert layout.cuts == sorted(set(layout.cuts)) and len(layout.cuts) == 5
    assert layout.cuts[0] == doc.index(b"<ReportHost ")
    assert layout.cuts[-1] == doc.rindex(b"</ReportHost>") + len(b"</ReportHost>")
    for cut in layout.cuts[:-1]:
        assert doc[cut : cut + 12] == b"<ReportHost "
    assert plan(b"<NessusClientData_v2><Report/></NessusClientData_v2>", 4) is None
