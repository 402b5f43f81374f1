"""A validator killed with SIGKILL leaves no process behind: no parse worker, fork server or resource tracker.

The validator runs as ``scanfleet validator`` would run it, with two parse workers, which it starts
as soon as it runs. Its descendants are read from /proc before the kill; afterwards /proc is
polled, because the OS offers no notification when a process that is not one's child exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from scanfleet.common.embedded import NatsServer

PROC = Path("/proc")


def _parents() -> dict[int, int]:
    """pid -> ppid of every live process (zombies count as gone)."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(root: int) -> dict[int, str]:
    """Every live process below ``root``, with its command line."""
    parents = _parents()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return {pid: _cmdline(pid) for pid in sorted(found)}


def _cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
    except OSError:
        return "?"


def alive(pids: dict[int, str]) -> dict[int, str]:
    live = _parents()
    return {pid: cmd for pid, cmd in pids.items() if pid in live}


def until(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_sigkill_of_the_validator_leaves_no_process(nats_server: NatsServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCANFLEET_")}
    env |= {"SCANFLEET_NATS_URL": nats_server.url, "SCANFLEET_VALIDATOR_PARSE_WORKERS": "2"}
    with (tmp_path / "validator.log").open("wb") as log:
        validator = subprocess.Popen(
            [sys.executable, "-m", "scanfleet.cli", "validator"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    survivors: dict[int, str] = {}
    try:

        def workers_started() -> bool:
            assert validator.poll() is None, (tmp_path / "validator.log").read_text()
            below = descendants(validator.pid)
            parents = _parents()
            # Workers are the fork server's children, so two levels below the validator.
            return sum(1 for pid in below if parents.get(pid) in below) >= 2

        until(workers_started, 60.0, "the validator did not start its two parse workers")
        spawned = descendants(validator.pid)
        assert len(spawned) >= 4, spawned  # resource tracker, fork server, two workers
        validator.send_signal(signal.SIGKILL)
        validator.wait()
        deadline = time.monotonic() + 10.0
        while (survivors := alive(spawned)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not survivors, f"processes left running after the validator was killed: {survivors}"
    finally:
        if validator.poll() is None:
            validator.kill()
            validator.wait()
        for pid in alive(survivors):
            os.kill(pid, signal.SIGKILL)
