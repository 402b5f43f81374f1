"""``/scans``: create, list, inspect, configure and delete scans, and move their runs (launch, pause, ...)."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from scanfleet.emulator.state import BUSY, MY_SCANS, TEMPLATES, TRASH, ConflictError, EmulatorState, SshCredential
from scanfleet.emulator.targets import InvalidTargets, parse_targets
from scanfleet.emulator.views import scan_details, scan_summary
from scanfleet.emulator.web import ApiError, Guards, find_scan, json_response, read_body, transition


class SshEntry(msgspec.Struct):
    username: str = ""
    auth_method: str = "password"
    password: str | None = None
    private_key: str | None = None


class HostCredentials(msgspec.Struct):
    SSH: list[SshEntry] = msgspec.field(default_factory=list)


class CredentialsAdd(msgspec.Struct):
    Host: HostCredentials = msgspec.field(default_factory=HostCredentials)


class Credentials(msgspec.Struct):
    add: CredentialsAdd = msgspec.field(default_factory=CredentialsAdd)


class Settings(msgspec.Struct):
    name: str = ""
    text_targets: str = ""
    description: str = ""
    folder_id: int = MY_SCANS
    scanner_id: int | str = 1
    enabled: bool = False


class CreateScanBody(msgspec.Struct):
    uuid: str = ""
    settings: Settings = msgspec.field(default_factory=Settings)
    credentials: Credentials | None = None


class ConfigureBody(msgspec.Struct):
    folder_id: int | None = None
    settings: Settings | None = None


_FOLDERS = (
    {"id": MY_SCANS, "name": "My Scans", "type": "main", "default_tag": 1, "custom": 0, "unread_count": 0},
    {"id": TRASH, "name": "Trash", "type": "trash", "default_tag": 0, "custom": 0, "unread_count": 0},
)


def _ssh_credentials(body: CreateScanBody) -> list[SshCredential]:
    if body.credentials is None:
        return []
    return [
        SshCredential(e.username, e.password if e.auth_method == "password" else None, e.auth_method)
        for e in body.credentials.add.Host.SSH
    ]


def _require_scan_api(state: EmulatorState) -> None:
    """Nessus Professional refuses to create or launch scans through the API."""
    if not state.scan_api:
        raise ApiError(412, "API is not available")


def create_scan(state: EmulatorState, body: CreateScanBody, user: str) -> dict[str, Any]:
    """Validate and store a new scan; the answer is its summary plus the fields only creation returns."""
    template = next((t for t in TEMPLATES if t[0] == body.uuid), None)
    if template is None:
        raise ApiError(400, "Invalid 'uuid' field: template not found")
    if not body.settings.name.strip():
        raise ApiError(400, "Invalid 'name' field")
    try:
        targets = parse_targets(body.settings.text_targets, state.config.max_hosts)
    except InvalidTargets as exc:
        raise ApiError(400, "Invalid targets") from exc
    scan = state.create_scan(
        name=body.settings.name,
        description=body.settings.description,
        text_targets=body.settings.text_targets,
        targets=targets,
        template_uuid=body.uuid,
        policy_name=template[2],
        folder_id=body.settings.folder_id,
        owner=user,
        credentials=_ssh_credentials(body),
        enabled=body.settings.enabled,
    )
    if state.create_then_fail > 0:
        state.create_then_fail -= 1
        raise ApiError(502, "Bad Gateway: the connection dropped after the scan was created")
    return scan_summary(state, scan, state.clock()) | {
        "description": scan.description,
        "custom_targets": scan.text_targets,
        "owner_id": 1,
        "scanner_id": 1,
        "policy_id": scan.id + 100,
        "default_permissions": 0,
        "notification_filter_type": "and",
        "emails": None,
        "tag_id": 0,
    }


def scans_router(state: EmulatorState, guards: Guards) -> APIRouter:
    router = APIRouter(dependencies=guards.api)

    @router.post("/scans")
    async def create(request: Request, user: str = Depends(guards.authenticate)) -> Response:
        _require_scan_api(state)
        body = await read_body(request, CreateScanBody)
        return json_response({"scan": create_scan(state, body, user)})

    @router.get("/scans")
    async def list_scans(folder_id: int | None = None) -> Response:
        now = state.clock()
        scans = [scan_summary(state, s, now) for s in state.scans.values() if folder_id in (None, s.folder_id)]
        return json_response({"folders": _FOLDERS, "scans": scans, "timestamp": int(now)})

    @router.get("/scans/{scan_id}")
    async def details(scan_id: int) -> Response:
        return json_response(scan_details(state, find_scan(state, scan_id), state.clock()))

    @router.put("/scans/{scan_id}")
    async def configure(scan_id: int, request: Request) -> Response:
        scan = find_scan(state, scan_id)
        body = await read_body(request, ConfigureBody)
        if body.folder_id is not None:
            scan.folder_id = body.folder_id
        if body.settings is not None:
            scan.name = body.settings.name or scan.name
            scan.description = body.settings.description or scan.description
        scan.modified = int(state.clock())
        return json_response(scan_summary(state, scan, state.clock()))

    @router.delete("/scans/{scan_id}")
    async def delete(scan_id: int) -> Response:
        if state.status(find_scan(state, scan_id), state.clock()) in BUSY:
            raise ApiError(409, "Scan cannot be deleted while it is running")
        state.deleted[scan_id] = state.scans.pop(scan_id)
        return Response(status_code=200)

    return router


def scan_runs_router(state: EmulatorState, guards: Guards) -> APIRouter:
    """The transitions of a scan's current run; each is a 409 when the run's status forbids it."""
    router = APIRouter(dependencies=guards.api)

    @router.post("/scans/{scan_id}/launch")
    async def launch(scan_id: int) -> Response:
        _require_scan_api(state)
        scan = find_scan(state, scan_id)
        try:
            run = state.launch(scan, state.clock())
        except ConflictError as exc:
            raise ApiError(409, str(exc)) from exc
        return json_response({"scan_uuid": run.uuid})

    @router.post("/scans/{scan_id}/stop")
    async def stop(scan_id: int) -> Response:
        return transition(state, state.stop, scan_id)

    @router.post("/scans/{scan_id}/pause")
    async def pause(scan_id: int) -> Response:
        return transition(state, state.pause, scan_id)

    @router.post("/scans/{scan_id}/resume")
    async def resume(scan_id: int) -> Response:
        return transition(state, state.resume, scan_id)

    @router.post("/scans/{scan_id}/kill")
    async def kill(scan_id: int) -> Response:
        return transition(state, state.abort, scan_id)

    return router
