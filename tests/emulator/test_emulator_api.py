"""The emulator against the Nessus REST contract: auth, licence gate, lifecycle, exports, ground truth."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from lxml import etree

from scanfleet.emulator.app import create_app
from tests.helpers import API_KEYS, FakeClock, make_config, scan_body


async def create(http: httpx.AsyncClient, name: str, targets: str, ssh: list[dict[str, str]] | None = None) -> int:
    response = await http.post("/scans", json=scan_body(name, targets, ssh))
    assert response.status_code == 200, response.text
    scan_id: int = response.json()["scan"]["id"]
    return scan_id


async def status_of(http: httpx.AsyncClient, scan_id: int) -> str:
    response = await http.get(f"/scans/{scan_id}")
    assert response.status_code == 200
    status: str = response.json()["info"]["status"]
    return status


async def run_to_completion(http: httpx.AsyncClient, clock: FakeClock, scan_id: int) -> None:
    assert (await http.post(f"/scans/{scan_id}/launch")).status_code == 200
    clock.advance(5.0)
    assert await status_of(http, scan_id) == "completed"


async def export_via_tokens(http: httpx.AsyncClient, clock: FakeClock, scan_id: int) -> bytes:
    created = (await http.post(f"/scans/{scan_id}/export", json={"format": "nessus"})).json()
    assert isinstance(created["file"], int) and created["token"]
    assert (await http.get(f"/tokens/{created['token']}/status")).json()["status"] == "loading"
    assert (await http.get(f"/tokens/{created['token']}/download")).status_code == 409
    clock.advance(1.0)
    assert (await http.get(f"/tokens/{created['token']}/status")).json()["status"] == "ready"
    chunks = []
    async with http.stream("GET", f"/tokens/{created['token']}/download") as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
    return b"".join(chunks)


def severity_counts(host: etree._Element) -> list[int]:
    counts = [0] * 5
    for item in host.findall("ReportItem"):
        counts[int(item.get("severity"))] += 1
    return counts


def scan_info(host: etree._Element) -> str:
    item = host.find("ReportItem[@pluginID='19506']")
    assert item is not None
    text: str = item.findtext("plugin_output")
    return text


def plugin_ids(host: etree._Element) -> set[str]:
    return {item.get("pluginID") for item in host.findall("ReportItem")}


def host_tag(host: etree._Element, name: str) -> str | None:
    tag = host.find(f"HostProperties/tag[@name='{name}']")
    return None if tag is None else tag.text


async def test_api_keys_and_401s(http: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    assert (await http.get("/server/properties")).status_code == 200
    missing = await anon.get("/server/properties")
    assert missing.status_code == 401
    assert missing.json() == {"error": "Invalid Credentials"}
    wrong = await anon.get("/scans", headers={"X-ApiKeys": "accessKey=test-access-key; secretKey=nope;"})
    assert wrong.status_code == 401
    assert (await anon.get("/server/status")).json() == {"code": 200, "status": "ready", "progress": None}


async def test_session_login_logout_and_expiry(http: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    bad = await anon.post("/session", json={"username": "operator", "password": "wrong"})
    assert bad.status_code == 401
    token = (await anon.post("/session", json={"username": "operator", "password": "operator-pass"})).json()["token"]
    cookie = {"X-Cookie": f"token={token}"}
    assert (await anon.get("/scans", headers=cookie)).status_code == 200
    assert (await http.post("/_emulator/faults", json={"session_expiry": True})).status_code == 200
    assert (await anon.get("/scans", headers=cookie)).status_code == 401

    token = (await anon.post("/session", json={"username": "operator", "password": "operator-pass"})).json()["token"]
    cookie = {"X-Cookie": f"token={token}"}
    assert (await anon.delete("/session", headers=cookie)).status_code == 200
    assert (await anon.get("/scans", headers=cookie)).status_code == 401


async def test_properties_and_templates(http: httpx.AsyncClient) -> None:
    props = (await http.get("/server/properties")).json()
    assert props["nessus_type"] == "Nessus Manager"
    assert props["server_version"] == "10.8.3"
    assert props["license"]["features"]["scan_api"] is True
    templates = (await http.get("/editor/scan/templates")).json()["templates"]
    by_name = {t["name"]: t["uuid"] for t in templates}
    assert by_name["advanced"] == "ad629e16-03b6-8c1d-cef6-ef8c9dd3c658d24bd260ef5f9e66"
    assert by_name["basic"] == "731a8e52-3ea6-a291-ec0a-d2ff0619c19d7bd788d6be818b65"


async def test_scan_api_false_gates_create_and_launch(clock: FakeClock) -> None:
    app = create_app(make_config(scan_api=False), clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://e", headers=API_KEYS) as http:
        props = (await http.get("/server/properties")).json()
        assert props["nessus_type"] == "Nessus Professional"
        assert props["license"]["features"]["scan_api"] is False
        refused = await http.post("/scans", json=scan_body("s", "10.0.0.1"))
        assert refused.status_code == 412
        assert refused.json() == {"error": "API is not available"}
        assert (await http.get("/scans")).status_code == 200
        assert (await http.post("/scans/5/launch")).status_code == 412


async def test_scan_api_fault_toggle(http: httpx.AsyncClient) -> None:
    scan_id = await create(http, "toggle", "10.0.0.1")
    await http.post("/_emulator/faults", json={"scan_api": False})
    assert (await http.post(f"/scans/{scan_id}/launch")).status_code == 412
    await http.post("/_emulator/faults", json={"scan_api": True})
    assert (await http.post(f"/scans/{scan_id}/launch")).status_code == 200


@pytest.mark.parametrize(
    "targets",
    ["", "   ", "10.0.0.1;rm -rf /", "http://example.com", "300.1.1.1", "10.0.0.9-3", "10.0.0.0/16", "a..b", "-x.com"],
)
async def test_invalid_targets_rejected(http: httpx.AsyncClient, targets: str) -> None:
    response = await http.post("/scans", json=scan_body("bad", targets))
    assert response.status_code == 400
    assert response.json() == {"error": "Invalid targets"}


async def test_valid_target_forms_accepted(http: httpx.AsyncClient) -> None:
    targets = "10.0.0.1, 10.0.1.1-5 10.0.2.1-10.0.2.3\nfe80::1,192.168.1.0/30 db01.corp.example"
    scan_id = await create(http, "forms", targets)
    assert (await http.get(f"/scans/{scan_id}")).json()["info"]["targets"] == targets


async def test_status_lifecycle_with_pause_and_resume(http: httpx.AsyncClient, clock: FakeClock) -> None:
    scan_id = await create(http, "life", "10.0.0.0/29")
    assert await status_of(http, scan_id) == "empty"
    assert (await http.post(f"/scans/{scan_id}/pause")).status_code == 409
    launched = await http.post(f"/scans/{scan_id}/launch")
    assert launched.json()["scan_uuid"]
    assert await status_of(http, scan_id) == "pending"
    assert (await http.post(f"/scans/{scan_id}/launch")).status_code == 409

    clock.advance(0.5)
    details = (await http.get(f"/scans/{scan_id}")).json()
    assert details["info"]["status"] == "running"
    first = [h["scanprogresscurrent"] for h in details["hosts"]]
    assert first and all(0 < p < 100 for p in first)
    assert all(h["progress"].count("/") == 1 for h in details["hosts"])

    assert (await http.post(f"/scans/{scan_id}/pause")).status_code == 200
    assert await status_of(http, scan_id) == "paused"
    assert (await http.post(f"/scans/{scan_id}/pause")).status_code == 409
    clock.advance(100.0)
    frozen = [h["scanprogresscurrent"] for h in (await http.get(f"/scans/{scan_id}")).json()["hosts"]]
    assert frozen == first

    assert (await http.post(f"/scans/{scan_id}/resume")).status_code == 200
    assert (await http.post(f"/scans/{scan_id}/resume")).status_code == 409
    clock.advance(0.3)
    later = [h["scanprogresscurrent"] for h in (await http.get(f"/scans/{scan_id}")).json()["hosts"]]
    assert all(b >= a for a, b in zip(first, later, strict=True)) and later != first
    clock.advance(1.0)
    details = (await http.get(f"/scans/{scan_id}")).json()
    assert details["info"]["status"] == "completed"
    assert details["info"]["scan_end"] >= details["info"]["scan_start"]
    assert all(h["scanprogresscurrent"] == 100 for h in details["hosts"])
    assert (await http.post(f"/scans/{scan_id}/stop")).status_code == 409

    assert (await http.post(f"/scans/{scan_id}/launch")).status_code == 200
    history = (await http.get(f"/scans/{scan_id}")).json()["history"]
    assert [h["status"] for h in history] == ["completed", "pending"]


async def test_stop_then_canceled_and_delete(http: httpx.AsyncClient, clock: FakeClock) -> None:
    scan_id = await create(http, "stopme", "10.0.0.1")
    await http.post(f"/scans/{scan_id}/launch")
    clock.advance(0.4)
    assert (await http.delete(f"/scans/{scan_id}")).status_code == 409
    assert (await http.post(f"/scans/{scan_id}/stop")).status_code == 200
    assert await status_of(http, scan_id) == "stopping"
    clock.advance(1.0)
    assert await status_of(http, scan_id) == "canceled"
    assert (await http.delete(f"/scans/{scan_id}")).status_code == 200
    assert (await http.get(f"/scans/{scan_id}")).status_code == 404


async def test_list_scans_shape(http: httpx.AsyncClient) -> None:
    scan_id = await create(http, "listed", "10.0.0.1")
    listing = (await http.get("/scans")).json()
    assert {f["type"] for f in listing["folders"]} == {"main", "trash"}
    (scan,) = [s for s in listing["scans"] if s["id"] == scan_id]
    assert scan["name"] == "listed" and scan["status"] == "empty" and scan["folder_id"] == 3
    assert isinstance(listing["timestamp"], int)


async def test_token_export_matches_truth(http: httpx.AsyncClient, clock: FakeClock) -> None:
    scan_id = await create(http, "truthful", "10.0.0.0/28, web.corp.example")
    await run_to_completion(http, clock, scan_id)
    data = await export_via_tokens(http, clock, scan_id)
    root = etree.fromstring(data)
    assert root.tag == "NessusClientData_v2"
    assert root.findtext("Policy/policyName") == "Advanced Scan"
    assert root.find("Policy/Preferences/ServerPreferences/preference") is not None
    assert root.find("Policy/FamilySelection/FamilyItem") is not None
    hosts = root.findall("Report/ReportHost")
    truth = (await http.get(f"/_emulator/scans/{scan_id}/truth")).json()

    assert truth["host_count"] == len(hosts)
    assert 1 < len(hosts) <= 15
    assert "web.corp.example" in {h.get("name") for h in hosts}
    by_name = {h["name"]: h for h in truth["hosts"]}
    totals = [0] * 5
    for host in hosts:
        counts = severity_counts(host)
        assert counts == by_name[host.get("name")]["severity_counts"]
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
        assert host_tag(host, "host-ip") and host_tag(host, "HOST_START") and host_tag(host, "HOST_END")
        assert host_tag(host, "Credentialed_Scan") == "false"
    assert totals == truth["severity_totals"]
    assert all(n > 0 for n in totals)
    assert truth["item_count"] == len(root.findall(".//ReportItem"))

    item = root.find(".//ReportItem[@severity='4']")
    assert item is not None and item.findtext("risk_factor") == "Critical"
    assert item.findtext("cvss3_base_score") and item.findtext("synopsis") and item.findtext("solution")


async def test_legacy_export_flow_gives_same_file(http: httpx.AsyncClient, clock: FakeClock) -> None:
    scan_id = await create(http, "legacy", "10.0.0.1-4")
    await run_to_completion(http, clock, scan_id)
    via_tokens = await export_via_tokens(http, clock, scan_id)
    file_id = (await http.post(f"/scans/{scan_id}/export", json={"format": "nessus"})).json()["file"]
    assert (await http.get(f"/scans/{scan_id}/export/{file_id}/status")).json() == {"status": "loading"}
    clock.advance(1.0)
    assert (await http.get(f"/scans/{scan_id}/export/{file_id}/status")).json() == {"status": "ready"}
    legacy = await http.get(f"/scans/{scan_id}/export/{file_id}/download")
    assert legacy.status_code == 200
    assert legacy.content == via_tokens
    assert (await http.get(f"/scans/{scan_id}/export/99999/status")).status_code == 404


async def test_export_before_launch_and_bad_format(http: httpx.AsyncClient) -> None:
    scan_id = await create(http, "early", "10.0.0.1")
    assert (await http.post(f"/scans/{scan_id}/export", json={"format": "nessus"})).status_code == 409
    assert (await http.post(f"/scans/{scan_id}/export", json={"format": "pdf"})).status_code == 400


async def test_export_error_fault(http: httpx.AsyncClient, clock: FakeClock) -> None:
    scan_id = await create(http, "broken-export", "10.0.0.1")
    await run_to_completion(http, clock, scan_id)
    await http.post("/_emulator/faults", json={"export_error": True})
    token = (await http.post(f"/scans/{scan_id}/export", json={"format": "nessus"})).json()["token"]
    clock.advance(1.0)
    assert (await http.get(f"/tokens/{token}/status")).json()["status"] == "error"


@pytest.mark.parametrize(
    ("ssh", "expected_line", "present", "absent", "credentialed"),
    [
        (
            [{"auth_method": "password", "username": "root", "password": "toor", "elevate_privileges_with": "Nothing"}],
            "Credentialed checks : yes, as 'root' via ssh",
            {"141118", "110095"},
            {"104410", "21745"},
            True,
        ),
        (
            [{"auth_method": "password", "username": "root", "password": "wrong"}],
            "Credentialed checks : no",
            {"104410", "21745"},
            {"141118", "110095"},
            False,
        ),
        (None, "Credentialed checks : no", {"117886"}, {"141118", "104410"}, False),
    ],
    ids=["accepted", "rejected", "none"],
)
async def test_credentials_drive_scan_information(
    http: httpx.AsyncClient,
    clock: FakeClock,
    ssh: list[dict[str, str]] | None,
    expected_line: str,
    present: set[str],
    absent: set[str],
    credentialed: bool,
) -> None:
    scan_id = await create(http, "creds", "10.0.0.1-3", ssh)
    await run_to_completion(http, clock, scan_id)
    root = etree.fromstring(await export_via_tokens(http, clock, scan_id))
    hosts = root.findall("Report/ReportHost")
    assert hosts
    for host in hosts:
        info = scan_info(host)
        assert expected_line + "\n" in info
        assert "Nessus version : 10.8.3" in info and "Scan name : creds" in info
        ids = plugin_ids(host)
        assert present <= ids and not (absent & ids)
        assert host_tag(host, "Credentialed_Scan") == ("true" if credentialed else "false")
    if credentialed:
        families = {i.get("pluginFamily") for i in root.findall(".//ReportItem")}
        assert "Ubuntu Local Security Checks" in families
    truth = (await http.get(f"/_emulator/scans/{scan_id}/truth")).json()
    assert {h["credentialed"] for h in truth["hosts"]} == {credentialed}


async def test_stats_track_concurrency(http: httpx.AsyncClient, clock: FakeClock) -> None:
    first = await create(http, "a", "10.0.0.1")
    second = await create(http, "b", "10.0.0.2")
    third = await create(http, "c", "10.0.0.3")
    await http.post(f"/scans/{first}/launch")
    clock.advance(0.5)
    await http.post(f"/scans/{second}/launch")
    stats = (await http.get("/_emulator/stats")).json()
    launches = {s["name"]: s["launches"] for s in stats.pop("scans")}
    assert stats == {"running": 2, "max_running_seen": 2, "scans_created": 3, "launches": 2}
    assert launches == {"a": 1, "b": 1, "c": 0}
    clock.advance(10.0)
    await http.post(f"/scans/{third}/launch")
    clock.advance(10.0)
    stats = (await http.get("/_emulator/stats")).json()
    stats.pop("scans")
    assert stats == {"running": 0, "max_running_seen": 2, "scans_created": 3, "launches": 3}


async def test_emulator_endpoints_require_auth(anon: httpx.AsyncClient) -> None:
    assert (await anon.get("/_emulator/stats")).status_code == 401
    assert (await anon.post("/_emulator/faults", json={"scan_api": False})).status_code == 401


async def test_injected_failures_carry_retry_after(http: httpx.AsyncClient) -> None:
    await http.post("/_emulator/faults", json={"fail_requests": {"count": 1, "status": 503, "retry_after": 7}})
    failed = await http.get("/scans")
    assert failed.status_code == 503 and failed.headers["retry-after"] == "7"
    assert (await http.get("/scans")).status_code == 200


async def test_same_seed_same_report(clock: FakeClock) -> None:
    async def export_once(app: FastAPI) -> bytes:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://e", headers=API_KEYS
        ) as http:
            scan_id = await create(http, "det", "10.1.0.0/29")
            await run_to_completion(http, clock, scan_id)
            truth = (await http.get(f"/_emulator/scans/{scan_id}/truth")).json()
            return repr(truth).encode()

    start = clock.now
    one = await export_once(create_app(make_config(seed=7), clock=clock))
    clock.now = start
    two = await export_once(create_app(make_config(seed=7), clock=clock))
    clock.now = start
    other = await export_once(create_app(make_config(seed=8), clock=clock))
    assert one == two
    assert one != other


async def test_a_duration_hint_in_the_description_sets_that_scans_duration() -> None:
    """Benchmarks give each scan its own duration through the description."""
    from scanfleet.emulator.config import EmulatorConfig
    from scanfleet.emulator.state import EmulatorState, Run, Scan

    state = EmulatorState(
        EmulatorConfig(name="e", access_key="a", secret_key="s", username="u", password="p", scan_duration=5.0),
        clock=lambda: 0.0,
    )
    hinted = Scan(1, "u1", "n", "bench emulator-duration=0.75", "10.0.0.1", [], [], "t", "p", 3, "o", 0, 0, [])
    plain = Scan(2, "u2", "n", "no hint", "10.0.0.1", [], [], "t", "p", 3, "o", 0, 0, [])
    assert state.scan_duration(hinted) == 0.75
    assert state.scan_duration(plain) == 5.0
    run = state.launch(hinted, 100.0)
    assert isinstance(run, Run) and run.duration == 0.75
    pending = state.config.pending_duration
    assert state.status(hinted, 100.0 + pending + 0.7) == "running"
    assert state.status(hinted, 100.0 + pending + 0.8) == "completed"
