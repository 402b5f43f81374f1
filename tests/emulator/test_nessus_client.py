"""NessusClient against the in-process emulator, plus transports that misbehave on purpose."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from lxml import etree

from scanfleet.agent.nessus import (
    ExportHandle,
    NessusApiUnavailable,
    NessusAuthError,
    NessusClient,
    NessusConflict,
    NessusNotFound,
    NessusRejected,
    NessusTransientError,
    ServerCapabilities,
    SSHCredential,
)
from scanfleet.emulator.app import create_app
from tests.helpers import ACCESS_KEY, API_KEYS, SECRET_KEY, FakeClock, make_config


def key_client(app: FastAPI) -> NessusClient:
    return NessusClient(
        "http://emulator",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        transport=httpx.ASGITransport(app=app),
    )


def session_client(app: FastAPI, password: str = "operator-pass") -> NessusClient:
    return NessusClient(
        "http://emulator", username="operator", password=password, transport=httpx.ASGITransport(app=app)
    )


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[NessusClient]:
    async with key_client(app) as c:
        yield c


async def test_api_key_auth_reads_capabilities(client: NessusClient) -> None:
    caps = await client.server_properties()
    assert caps == ServerCapabilities(
        version="10.8.3", nessus_type="Nessus Manager", scan_api=True, license_type="manager"
    )
    assert (await client.server_status()).status == "ready"
    assert "advanced" in {t.name for t in await client.templates()}


async def test_session_auth_and_relogin_after_expiry(app: FastAPI, http: httpx.AsyncClient) -> None:
    state = app.state.emulator
    async with session_client(app) as c:
        assert await c.find_scans_by_name("nothing") == []
        (first_token,) = state.sessions
        await http.post("/_emulator/faults", json={"session_expiry": True})
        assert state.sessions == {}
        assert await c.find_scans_by_name("nothing") == []
        (second_token,) = state.sessions
        assert second_token != first_token
    assert state.sessions == {}


async def test_wrong_password_raises_auth_error(app: FastAPI) -> None:
    async with session_client(app, password="wrong") as c:
        with pytest.raises(NessusAuthError) as caught:
            await c.server_properties()
    assert caught.value.status_code == 401


async def test_401_after_relogin_raises_auth_error() -> None:
    logins = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal logins
        if request.url.path == "/session" and request.method == "POST":
            logins += 1
            return httpx.Response(200, json={"token": f"t{logins}"})
        return httpx.Response(401, json={"error": "You need to log in to perform this request"})

    async with NessusClient("http://nessus", username="u", password="p", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(NessusAuthError):
            await c.server_properties()
    assert logins == 2


async def test_api_key_401_is_not_retried(app: FastAPI) -> None:
    async with NessusClient(
        "http://emulator", access_key="x", secret_key="y", transport=httpx.ASGITransport(app=app)
    ) as c:
        with pytest.raises(NessusAuthError):
            await c.templates()


async def test_412_surfaces_as_api_unavailable(clock: FakeClock) -> None:
    app = create_app(make_config(scan_api=False), clock=clock)
    async with key_client(app) as c:
        assert (await c.server_properties()).scan_api is False
        with pytest.raises(NessusApiUnavailable) as caught:
            await c.create_scan("gated", "10.0.0.1")
    assert caught.value.status_code == 412


async def test_full_cycle_stream_matches_truth(client: NessusClient, http: httpx.AsyncClient, clock: FakeClock) -> None:
    creds = SSHCredential(username="root", password="toor", elevate_privileges_with="sudo")
    scan_id = await client.create_scan("cycle", ["10.0.0.0/29", "app.corp.example"], credentials=creds)
    assert [s.id for s in await client.find_scans_by_name("cycle")] == [scan_id]
    assert (await client.scan_details(scan_id)).status == "empty"
    assert await client.launch(scan_id)
    with pytest.raises(NessusConflict):
        await client.launch(scan_id)

    seen: list[tuple[str, float]] = []
    while True:
        details = await client.scan_details(scan_id)
        seen.append((details.status, details.progress))
        if details.status == "completed":
            break
        clock.advance(0.25)
    assert seen[0] == ("pending", 0.0)
    assert any(status == "running" and 0 < progress < 100 for status, progress in seen)
    assert [p for _, p in seen] == sorted(p for _, p in seen)
    assert details.progress == 100.0 and details.hostcount == len(details.hosts) > 1

    handle = await client.export_request(scan_id)
    assert await client.export_status(handle) == "loading"
    clock.advance(1.0)
    assert await client.export_status(handle) == "ready"
    chunks = [chunk async for chunk in client.export_stream(handle, chunk_size=4096)]
    assert len(chunks) > 1 and all(len(c) <= 4096 for c in chunks)

    root = etree.fromstring(b"".join(chunks))
    truth = (await http.get(f"/_emulator/scans/{scan_id}/truth")).json()
    hosts = root.findall("Report/ReportHost")
    assert len(hosts) == truth["host_count"] == details.hostcount
    totals = [0] * 5
    for item in root.iter("ReportItem"):
        totals[int(item.get("severity"))] += 1
    assert totals == truth["severity_totals"]
    for host in hosts:
        info = host.findtext("ReportItem[@pluginID='19506']/plugin_output")
        assert "Credentialed checks : yes, as 'root' via ssh" in info

    await client.delete(scan_id)
    with pytest.raises(NessusNotFound):
        await client.scan_details(scan_id)


async def test_pause_resume_stop(client: NessusClient, clock: FakeClock) -> None:
    scan_id = await client.create_scan("controls", "10.0.0.1")
    await client.launch(scan_id)
    clock.advance(0.5)
    await client.pause(scan_id)
    assert (await client.scan_details(scan_id)).status == "paused"
    with pytest.raises(NessusConflict):
        await client.pause(scan_id)
    await client.resume(scan_id)
    await client.stop(scan_id)
    clock.advance(1.0)
    assert (await client.scan_details(scan_id)).status == "canceled"


async def test_emulator_rejection_maps_to_rejected(client: NessusClient) -> None:
    with pytest.raises(NessusRejected) as caught:
        await client.create_scan("too-big", "10.0.0.0/16")
    assert caught.value.status_code == 400


async def test_client_refuses_garbage_targets_before_sending(client: NessusClient) -> None:
    with pytest.raises(ValueError, match="rm"):
        await client.create_scan("evil", "10.0.0.1;rm -rf /")


async def test_connection_error_is_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with NessusClient(
        "http://nessus", access_key="a", secret_key="b", transport=httpx.MockTransport(handler)
    ) as c:
        with pytest.raises(NessusTransientError) as caught:
            await c.server_properties()
    assert caught.value.status_code is None


async def test_503_is_transient_with_retry_after(client: NessusClient, http: httpx.AsyncClient) -> None:
    await http.post("/_emulator/faults", json={"fail_requests": {"count": 1, "status": 503, "retry_after": 2}})
    with pytest.raises(NessusTransientError) as caught:
        await client.templates()
    assert caught.value.status_code == 503 and caught.value.retry_after == 2.0
    assert await client.templates()


class NoTokenApi(httpx.AsyncBaseTransport):
    """An older scanner without the /tokens API, to exercise the legacy export path."""

    def __init__(self, app: FastAPI) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path.startswith("/tokens/"):
            return httpx.Response(404, json={"error": "The requested file was not found."})
        return await self.inner.handle_async_request(request)


async def test_export_falls_back_to_legacy_paths(app: FastAPI, clock: FakeClock) -> None:
    transport = NoTokenApi(app)
    async with NessusClient("http://e", access_key=ACCESS_KEY, secret_key=SECRET_KEY, transport=transport) as c:
        scan_id = await c.create_scan("legacy", "10.0.0.1")
        await c.launch(scan_id)
        clock.advance(5.0)
        handle = await c.export_request(scan_id)
        clock.advance(1.0)
        assert await c.export_status(handle) == "ready"
        data = b"".join([chunk async for chunk in c.export_stream(handle)])
    assert etree.fromstring(data).find("Report/ReportHost").get("name") == "10.0.0.1"
    assert f"/scans/{scan_id}/export/{handle.file_id}/download" in transport.paths


async def test_from_http_client_does_not_close_callers_client(app: FastAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as http:
        async with NessusClient.from_http_client(http, access_key=ACCESS_KEY, secret_key=SECRET_KEY) as c:
            assert (await c.server_properties()).scan_api
        assert not http.is_closed
        assert (await http.get("/scans", headers=API_KEYS)).status_code == 200


async def test_unknown_export_is_not_found(client: NessusClient) -> None:
    with pytest.raises(NessusNotFound):
        await client.export_status(ExportHandle(scan_id=999, file_id=1, token="missing"))


def test_ssh_credential_payload_and_repr() -> None:
    cred = SSHCredential(
        username="scan", password="s3cret", elevate_privileges_with="sudo", escalation_password="sudo-pass"
    )
    assert cred.to_nessus() == {
        "auth_method": "password",
        "username": "scan",
        "password": "s3cret",
        "elevate_privileges_with": "sudo",
        "escalation_password": "sudo-pass",
        "custom_password_prompt": "",
        "target_priority_list": "",
    }
    assert "s3cret" not in repr(cred) and "sudo-pass" not in repr(cred) and "s3cret" not in f"{cred}"
    plain = SSHCredential(username="scan", password="pw", escalation_account="root").to_nessus()
    assert plain["elevate_privileges_with"] == "Nothing" and "escalation_account" not in plain
    with pytest.raises(ValueError):
        SSHCredential(username="scan")
    with pytest.raises(ValueError):
        SSHCredential(username="scan", password="pw", elevate_privileges_with="doas")


def test_client_requires_some_auth() -> None:
    with pytest.raises(ValueError):
        NessusClient("http://nessus")


async def test_export_of_an_earlier_run_by_history_id_holds_that_run(
    client: NessusClient, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    """pyTenable exports a past run with ``history_id``; it is not a test dependency here, so the
    project's own client asks exactly as it does (a query parameter on the export request)."""
    assert (await http.post("/_emulator/world", json={"reset": True, "seed": 3})).status_code == 200
    scan_id = await client.create_scan("twice", "10.0.0.0/28")

    async def run() -> None:
        await client.launch(scan_id)
        clock.advance(10.0)
        assert (await client.scan_details(scan_id)).status == "completed"

    def findings(data: bytes) -> set[tuple[str, int]]:
        root = etree.fromstring(data)
        return {
            (str(host.get("name")), int(str(item.get("pluginID"))))
            for host in root.iterfind("Report/ReportHost")
            for item in host.iterfind("ReportItem")
        }

    def expected(truth: dict[str, Any]) -> set[tuple[str, int]]:
        return {(h["name"], f["plugin_id"]) for h in truth["hosts"] for f in h["findings"]}

    await run()
    first = (await http.get(f"/_emulator/scans/{scan_id}/truth")).json()
    alive = sorted(h["name"] for h in first["hosts"] if h["findings"])
    assert len(alive) >= 2, first["hosts"]
    patched, down = alive[0], alive[-1]
    fixed = max(f["plugin_id"] for h in first["hosts"] if h["name"] == patched for f in h["findings"])
    changes = [{"host": patched, "kind": "fixed", "plugin_id": fixed}, {"host": down, "kind": "down"}]
    await http.post("/_emulator/world", json={"epoch": 2, "changes": {"2": changes}})
    await run()
    history = (await http.get(f"/scans/{scan_id}")).json()["history"]
    assert len(history) == 2 and history[0]["history_id"] == first["history_id"]

    handle = await client.export_request(scan_id, history_id=first["history_id"])
    clock.advance(1.0)
    assert await client.export_status(handle) == "ready"
    earlier = findings(b"".join([c async for c in client.export_stream(handle)]))
    latest_handle = await client.export_request(scan_id)
    clock.advance(1.0)
    assert await client.export_status(latest_handle) == "ready"
    latest = findings(b"".join([c async for c in client.export_stream(latest_handle)]))

    assert earlier == expected(first)
    assert latest == expected((await http.get(f"/_emulator/scans/{scan_id}/truth")).json())
    assert (patched, fixed) in earlier and (patched, fixed) not in latest
    assert any(host == down for host, _ in earlier) and all(host != down for host, _ in latest)
