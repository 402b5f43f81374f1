"""pyTenable, Tenable's own Nessus client, against the emulator over real HTTP: the emulator is
faithful where Tenable's client can tell, including a scanner that is still loading plugins."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from lxml import etree
from tenable.errors import ServiceUnavailableError
from tenable.nessus import Nessus

from scanfleet.common.embedded import free_port
from scanfleet.emulator.app import create_app
from tests.helpers import ACCESS_KEY, ADVANCED, SECRET_KEY, make_config


class Served:
    """The emulator on a loopback port, in a thread, on the real clock."""

    def __init__(self, **overrides: object) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            create_app(make_config(**overrides)), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the emulator did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def nessus(url: str) -> Nessus:
    return Nessus(url=url, access_key=ACCESS_KEY, secret_key=SECRET_KEY, ssl_verify=False, retries=0)


def until(check: Any, what: str, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def emulator() -> Iterator[Served]:
    with Served(scan_duration=0.5, pending_duration=0.1, export_delay=0.1) as served:
        yield served


def test_pytenable_runs_a_scan_and_exports_it_as_nessus_v2(emulator: Served) -> None:
    client = nessus(emulator.url)
    assert client.server.status()["status"] == "ready"
    assert client.server.properties()["server_version"]
    created = client.scans.create(
        uuid=ADVANCED, settings={"name": "pytenable", "text_targets": "10.0.0.1,10.0.0.2", "enabled": False}
    )
    scan_id = created["scan"]["id"]
    assert client.scans.launch(scan_id)

    until(lambda: client.scans.details(scan_id)["info"]["status"] == "completed", "the scan to complete")
    details = client.scans.details(scan_id)
    assert sorted(h["hostname"] for h in details["hosts"]) == ["10.0.0.1", "10.0.0.2"]
    assert any(s["id"] == scan_id for s in client.scans.list()["scans"])

    report = client.scans.export_scan(scan_id, fobj=io.BytesIO(), format="nessus")
    root = etree.fromstring(report.getvalue())
    assert root.tag == "NessusClientData_v2"
    assert sorted(h.get("name") for h in root.iter("ReportHost")) == ["10.0.0.1", "10.0.0.2"]


def test_pytenable_sees_a_loading_scanner_as_unavailable_then_works_when_it_is_ready() -> None:
    with Served(startup_duration=1.5) as emulator:
        client = nessus(emulator.url)
        with pytest.raises(ServiceUnavailableError) as refused:
            client.server.status()
        assert refused.value.response.json()["status"] == "loading"
        with pytest.raises(ServiceUnavailableError):
            client.scans.list()
        until(lambda: httpx.get(f"{emulator.url}/server/status").status_code == 200, "plugins loaded")
        assert client.server.status()["status"] == "ready"
        assert client.scans.list()["scans"] is not None
