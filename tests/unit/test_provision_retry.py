"""``scanfleet provision`` waits out a cluster that is still electing leaders (compose and Nomad
run it as a one-shot right after the servers start), and gives up on anything else at once."""

from __future__ import annotations

from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import ServiceUnavailableError

from scanfleet.cli import provision as cli
from scanfleet.common.config import Settings
from scanfleet.common.registry import SyncReport


def _flaky(failures: list[BaseException]) -> Any:
    calls: list[int] = []

    async def fake(settings: Settings) -> tuple[list[str], SyncReport]:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return ["created stream SCAN_REQUESTS"], SyncReport()

    fake.calls = calls  # type: ignore[attr-defined]
    return fake


async def test_retries_while_the_cluster_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _flaky([ServiceUnavailableError(), NatsTimeoutError()])
    monkeypatch.setattr(cli, "provision", fake)
    changes, _ = await cli.provision_retrying(Settings(), within=30)
    assert changes == ["created stream SCAN_REQUESTS"]
    assert len(fake.calls) == 3


async def test_gives_up_after_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "provision", _flaky([ServiceUnavailableError() for _ in range(10)]))
    with pytest.raises(ServiceUnavailableError):
        await cli.provision_retrying(Settings(), within=0.1)


async def test_other_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _flaky([ValueError("scanners.yaml: bad")])
    monkeypatch.setattr(cli, "provision", fake)
    with pytest.raises(ValueError):
        await cli.provision_retrying(Settings(), within=30)
    assert len(fake.calls) == 1
