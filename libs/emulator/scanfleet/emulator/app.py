"""FastAPI app speaking the Nessus REST shapes that scanfleet and pyTenable use."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, TypeVar

import msgspec
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from scanfleet.emulator.config import EmulatorConfig
from scanfleet.emulator.report import ReportModel, iter_nessus
from scanfleet.emulator.state import (
    BUSY,
    MY_SCANS,
    TEMPLATES,
    TRASH,
    ConflictError,
    EmulatorState,
    EndpointFault,
    ExportJob,
    Scan,
    SshCredential,
)
from scanfleet.emulator.targets import InvalidTargets, parse_targets

T = TypeVar("T")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class SessionBody(msgspec.Struct):
    username: str = ""
    password: str = ""


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


class ExportBody(msgspec.Struct):
    format: str = ""


class FailRequests(msgspec.Struct):
    count: int = 1
    status: int = 503
    retry_after: float | None = None


class EndpointFaultBody(msgspec.Struct):
    """``path`` is the route as declared (``/scans/{scan_id}``) or ``*``; ``status`` 0 hangs."""

    method: str = "*"
    path: str = "*"
    status: int = 503
    rate: float = 1.0
    count: int | None = None


class FaultsBody(msgspec.Struct):
    session_expiry: bool = False
    scan_api: bool | None = None
    export_error: bool | None = None
    fail_requests: FailRequests | None = None
    abort_scan: int | None = None
    endpoint_faults: list[EndpointFaultBody] | None = None
    latency: float | None = None
    stay_pending: bool | None = None
    export_stuck: bool | None = None
    export_corrupt: Literal["truncate", "garbage"] | None = None
    clear_export_corrupt: bool = False
    create_then_fail: int | None = None
    vanish_scan: int | None = None
    reset: bool = False


def _json(obj: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json")


async def _body(request: Request, kind: type[T]) -> T:
    raw = await request.body()
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(400, f"Invalid request body: {exc}") from exc


def _parse_api_keys(header: str) -> dict[str, str]:
    parts = (p.strip() for p in header.split(";"))
    return dict(p.split("=", 1) for p in parts if "=" in p)


def _ssh_credentials(body: CreateScanBody) -> list[SshCredential]:
    if body.credentials is None:
        return []
    return [
        SshCredential(e.username, e.password if e.auth_method == "password" else None, e.auth_method)
        for e in body.credentials.add.Host.SSH
    ]


def create_app(config: EmulatorConfig, *, clock: Callable[[], float] = time.time) -> FastAPI:
    """Build one emulated scanner; `clock` lets tests move time instead of sleeping."""
    state = EmulatorState(config, clock)
    app = FastAPI(title=f"Nessus emulator {config.name}", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.emulator = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return Response(
            msgspec.json.encode({"error": exc.message}),
            status_code=exc.status,
            media_type="application/json",
            headers=exc.headers,
        )

    async def inject_failures(request: Request) -> None:
        if state.latency > 0:
            await asyncio.sleep(state.latency)
        route = request.scope.get("route")
        fault = state.fault_for(request.method, getattr(route, "path", request.url.path))
        if fault is not None:
            if fault.status == 0:
                await asyncio.sleep(3600)
            raise ApiError(fault.status, f"Injected fault (HTTP {fault.status})")
        if state.fail_requests:
            status, retry_after = state.fail_requests.pop(0)
            headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
            raise ApiError(status, "Service Unavailable" if status >= 500 else "Too Many Requests", headers)

    async def authenticate(request: Request) -> str:
        keys_header = request.headers.get("x-apikeys")
        if keys_header is not None:
            keys = _parse_api_keys(keys_header)
            if hmac.compare_digest(keys.get("accessKey", ""), config.access_key) and hmac.compare_digest(
                keys.get("secretKey", ""), config.secret_key
            ):
                return config.username
            raise ApiError(401, "Invalid Credentials")
        cookie = request.headers.get("x-cookie", "")
        token = cookie.split("token=", 1)[1].split(";")[0].strip() if "token=" in cookie else ""
        if token:
            user = state.sessions.get(token)
            if user is None:
                raise ApiError(401, "You need to log in to perform this request")
            return user
        raise ApiError(401, "Invalid Credentials")

    def require_scan_api() -> None:
        if not state.scan_api:
            raise ApiError(412, "API is not available")

    def get_scan(scan_id: int) -> Scan:
        scan = state.scans.get(scan_id)
        if scan is None:
            raise ApiError(404, "The requested file was not found.")
        return scan

    def transition(action: Callable[[Scan, float], object], scan_id: int) -> Response:
        try:
            action(get_scan(scan_id), clock())
        except ConflictError as exc:
            raise ApiError(409, str(exc)) from exc
        return Response(status_code=200)

    public = APIRouter(dependencies=[Depends(inject_failures)])
    api = APIRouter(dependencies=[Depends(inject_failures), Depends(authenticate)])
    emulator = APIRouter(prefix="/_emulator", dependencies=[Depends(authenticate)])

    @public.post("/session")
    async def login(request: Request) -> Response:
        body = await _body(request, SessionBody)
        if not (
            hmac.compare_digest(body.username, config.username) and hmac.compare_digest(body.password, config.password)
        ):
            raise ApiError(401, "Invalid Credentials")
        return _json({"token": state.login(body.username)})

    @api.delete("/session")
    async def logout(request: Request) -> Response:
        cookie = request.headers.get("x-cookie", "")
        state.sessions.pop(cookie.split("token=", 1)[-1].strip(), None)
        return Response(status_code=200)

    @public.get("/server/status")
    async def server_status() -> Response:
        return _json({"code": 200, "status": "ready", "progress": None})

    @api.get("/server/properties")
    async def server_properties() -> Response:
        return _json(
            {
                "nessus_type": config.nessus_type,
                "server_version": config.version,
                "nessus_ui_version": config.version,
                "nessus_ui_build": "20010",
                "server_build": "20010",
                "platform": "LINUX",
                "idle_timeout": "30",
                "scanner_boottime": int(clock()),
                "server_uuid": f"emulator-{config.name}",
                "loaded_plugin_set": "202406110523",
                "license": {
                    "type": "manager" if state.scan_api else "pro",
                    "name": config.nessus_type,
                    "restricted": False,
                    "ips": config.max_hosts,
                    "expiration_date": 1893456000,
                    "features": {
                        "api": True,
                        "scan_api": state.scan_api,
                        "policies": True,
                        "report": True,
                        "users": True,
                        "vpr": True,
                    },
                },
                "capabilities": {"multi_scanner": state.scan_api, "report_email_config": False},
            }
        )

    @api.get("/editor/scan/templates")
    async def templates() -> Response:
        return _json(
            {
                "templates": [
                    {
                        "uuid": uuid_,
                        "name": name,
                        "title": title,
                        "desc": desc,
                        "cloud_only": False,
                        "subscription_only": False,
                        "is_agent": False,
                        "more_info": None,
                        "manager_only": False,
                        "unsupported": False,
                    }
                    for uuid_, name, title, desc in TEMPLATES
                ]
            }
        )

    @api.post("/file/upload")
    async def upload(request: Request) -> Response:
        form = await request.form()
        upload = form.get("Filedata")
        filename = getattr(upload, "filename", None)
        if not filename:
            raise ApiError(400, "No file was uploaded")
        return _json({"fileuploaded": filename})

    def scan_summary(scan: Scan, now: float) -> dict[str, Any]:
        return {
            "id": scan.id,
            "uuid": scan.uuid,
            "name": scan.name,
            "status": state.status(scan, now),
            "folder_id": scan.folder_id,
            "owner": scan.owner,
            "enabled": scan.enabled,
            "read": False,
            "shared": False,
            "user_permissions": 128,
            "control": True,
            "type": "local",
            "rrules": None,
            "starttime": None,
            "timezone": None,
            "live_results": 0,
            "creation_date": scan.created,
            "last_modification_date": scan.modified,
        }

    @api.post("/scans")
    async def create_scan(request: Request, user: str = Depends(authenticate)) -> Response:
        require_scan_api()
        body = await _body(request, CreateScanBody)
        template = next((t for t in TEMPLATES if t[0] == body.uuid), None)
        if template is None:
            raise ApiError(400, "Invalid 'uuid' field: template not found")
        if not body.settings.name.strip():
            raise ApiError(400, "Invalid 'name' field")
        try:
            targets = parse_targets(body.settings.text_targets, config.max_hosts)
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
        summary = scan_summary(scan, clock())
        summary.update(
            {
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
        )
        return _json({"scan": summary})

    @api.get("/scans")
    async def list_scans(folder_id: int | None = None) -> Response:
        now = clock()
        scans = [scan_summary(s, now) for s in state.scans.values() if folder_id in (None, s.folder_id)]
        return _json(
            {
                "folders": [
                    {
                        "id": MY_SCANS,
                        "name": "My Scans",
                        "type": "main",
                        "default_tag": 1,
                        "custom": 0,
                        "unread_count": 0,
                    },
                    {
                        "id": TRASH,
                        "name": "Trash",
                        "type": "trash",
                        "default_tag": 0,
                        "custom": 0,
                        "unread_count": 0,
                    },
                ],
                "scans": scans,
                "timestamp": int(now),
            }
        )

    def host_entries(scan: Scan, now: float) -> list[dict[str, Any]]:
        run = scan.run
        if run is None or state.status(scan, now) == "pending":
            return []
        model = state.model(scan)
        entries = []
        for index, (host, pct) in enumerate(zip(model.hosts, state.host_progress(scan, now), strict=True)):
            seen = host.items[: (len(host.items) * pct) // 100]
            counts = [0] * 5
            for item in seen:
                counts[item.severity] += 1
            checks = 20000
            entries.append(
                {
                    "asset_id": index + 2,
                    "host_id": index + 2,
                    "uuid": f"{run.uuid}-{index}",
                    "hostname": host.name,
                    "progress": f"{checks * pct // 100}-{checks}/{655 * pct}-65535",
                    "scanprogresscurrent": pct,
                    "scanprogresstotal": 100,
                    "numchecksconsidered": checks * pct // 100,
                    "totalchecksconsidered": checks,
                    "severitycount": {"item": [{"count": c, "severitylevel": lvl} for lvl, c in enumerate(counts)]},
                    "severity": sum(counts),
                    "score": sum(c * 10**lvl for lvl, c in enumerate(counts)),
                    "info": counts[0],
                    "low": counts[1],
                    "medium": counts[2],
                    "high": counts[3],
                    "critical": counts[4],
                }
            )
        return entries

    def vulnerabilities(model: ReportModel) -> list[dict[str, Any]]:
        seen: dict[int, dict[str, Any]] = {}
        for host in model.hosts:
            for item in host.items:
                entry = seen.setdefault(
                    item.plugin.id,
                    {
                        "plugin_id": item.plugin.id,
                        "plugin_name": item.plugin.name,
                        "plugin_family": item.plugin.family,
                        "severity": item.severity,
                        "severity_index": item.severity,
                        "vuln_index": len(seen),
                        "count": 0,
                    },
                )
                entry["count"] += 1
        return list(seen.values())

    @api.get("/scans/{scan_id}")
    async def scan_details(scan_id: int) -> Response:
        scan = get_scan(scan_id)
        now = clock()
        status = state.status(scan, now)
        run = scan.run
        end = state.end_time(scan, now)
        history = [
            {
                "history_id": r.history_id,
                "uuid": r.uuid,
                "owner_id": 1,
                "type": "local",
                "scheduler": 0,
                "alt_targets_used": False,
                "is_archived": False,
                "status": status if r is run else state.finished_status(r),
                "creation_date": int(r.launched_at),
                "last_modification_date": int(r.launched_at),
            }
            for r in scan.runs
        ]
        info = {
            "acls": None,
            "edit_allowed": True,
            "status": status,
            "name": scan.name,
            "targets": scan.text_targets,
            "hostcount": len(scan.alive) if run else 0,
            "scan_type": "local",
            "object_id": scan.id,
            "uuid": run.uuid if run else scan.uuid,
            "policy": scan.policy_name,
            "scanner_name": config.name,
            "folder_id": scan.folder_id,
            "alt_targets_used": False,
            "pci-can-upload": False,
            "haskb": True,
            "hasaudittrail": False,
            "is_archived": False,
            "control": True,
            "user_permissions": 128,
            "owner": scan.owner,
            "timestamp": int(now),
            "scan_start": int(run.launched_at) if run else None,
            "scan_end": int(end) if end else None,
            "scanner_start": int(run.launched_at) if run else None,
            "scanner_end": int(end) if end else None,
        }
        visible = state.visible_model(scan, now) if run else None
        return _json(
            {
                "info": info,
                "hosts": host_entries(scan, now),
                "vulnerabilities": vulnerabilities(visible) if visible else [],
                "history": history,
                "remediations": {
                    "remediations": None,
                    "num_hosts": 0,
                    "num_cves": 0,
                    "num_impacted_hosts": 0,
                    "num_remediated_cves": 0,
                },
                "filters": [],
                "compliance": [],
                "notes": None,
            }
        )

    @api.put("/scans/{scan_id}")
    async def configure_scan(scan_id: int, request: Request) -> Response:
        scan = get_scan(scan_id)
        body = await _body(request, ConfigureBody)
        if body.folder_id is not None:
            scan.folder_id = body.folder_id
        if body.settings is not None:
            scan.name = body.settings.name or scan.name
            scan.description = body.settings.description or scan.description
        scan.modified = int(clock())
        return _json(scan_summary(scan, clock()))

    @api.delete("/scans/{scan_id}")
    async def delete_scan(scan_id: int) -> Response:
        scan = get_scan(scan_id)
        if state.status(scan, clock()) in BUSY:
            raise ApiError(409, "Scan cannot be deleted while it is running")
        del state.scans[scan_id]
        return Response(status_code=200)

    @api.post("/scans/{scan_id}/launch")
    async def launch(scan_id: int) -> Response:
        require_scan_api()
        scan = get_scan(scan_id)
        try:
            run = state.launch(scan, clock())
        except ConflictError as exc:
            raise ApiError(409, str(exc)) from exc
        return _json({"scan_uuid": run.uuid})

    @api.post("/scans/{scan_id}/stop")
    async def stop(scan_id: int) -> Response:
        return transition(state.stop, scan_id)

    @api.post("/scans/{scan_id}/pause")
    async def pause(scan_id: int) -> Response:
        return transition(state.pause, scan_id)

    @api.post("/scans/{scan_id}/resume")
    async def resume(scan_id: int) -> Response:
        return transition(state.resume, scan_id)

    @api.post("/scans/{scan_id}/kill")
    async def kill(scan_id: int) -> Response:
        return transition(state.abort, scan_id)

    @api.post("/scans/{scan_id}/export")
    async def export(scan_id: int, request: Request) -> Response:
        scan = get_scan(scan_id)
        body = await _body(request, ExportBody)
        if body.format != "nessus":
            raise ApiError(400, "Invalid 'format' field: only nessus is supported by the emulator")
        if scan.run is None:
            raise ApiError(409, "Scan has no results to export")
        job = state.create_export(scan, clock())
        return _json({"file": job.file_id, "token": job.token})

    def export_job(scan_id: int, file_id: int) -> ExportJob:
        job = state.exports.get(file_id)
        if job is None or job.scan_id != scan_id:
            raise ApiError(404, "The requested file was not found.")
        return job

    def download(job: ExportJob) -> Response:
        status = state.export_status(job, clock())
        if status == "error":
            raise ApiError(500, "Export failed")
        if status != "ready":
            raise ApiError(409, "Report is still being generated")

        async def chunks() -> AsyncIterator[bytes]:
            if job.corrupt == "garbage":
                yield b"\x00\x9fnot a nessus report <NessusClientData_v2><Report"
                return
            if job.corrupt == "truncate":
                whole = b"".join(iter_nessus(job.model))
                yield whole[: len(whole) // 2]
                return
            for chunk in iter_nessus(job.model):
                yield chunk

        filename = f"{job.model.scan_name.replace(' ', '_')}_{job.file_id}.nessus"
        return StreamingResponse(
            chunks(),
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @api.get("/scans/{scan_id}/export/{file_id}/status")
    async def export_status(scan_id: int, file_id: int) -> Response:
        job = export_job(scan_id, file_id)
        return _json({"status": state.export_status(job, clock())})

    @api.get("/scans/{scan_id}/export/{file_id}/download")
    async def export_download(scan_id: int, file_id: int) -> Response:
        return download(export_job(scan_id, file_id))

    def token_job(token: str) -> ExportJob:
        job = state.tokens.get(token)
        if job is None:
            raise ApiError(404, "The requested file was not found.")
        return job

    @public.get("/tokens/{token}/status")
    async def token_status(token: str) -> Response:
        job = token_job(token)
        status = state.export_status(job, clock())
        message = {
            "ready": "The download is ready.",
            "loading": "The download is being prepared.",
            "error": "The export failed.",
        }[status]
        return _json({"status": status, "message": message})

    @public.get("/tokens/{token}/download")
    async def token_download(token: str) -> Response:
        return download(token_job(token))

    @emulator.get("/scans/{scan_id}/truth")
    async def truth(scan_id: int) -> Response:
        scan = get_scan(scan_id)
        if scan.run is None:
            raise ApiError(409, "Scan was never launched")
        now = clock()
        return _json(
            {
                "scan_id": scan.id,
                "status": state.status(scan, now),
                "history_id": scan.run.history_id,
                **state.visible_model(scan, now).truth(),
            }
        )

    @emulator.get("/stats")
    async def stats() -> Response:
        now = clock()
        return _json(
            {
                "running": state.running_now(now),
                "max_running_seen": state.max_running_seen(now),
                "scans_created": state.scans_created,
                "launches": state.launches,
                "scans": [
                    {"id": s.id, "name": s.name, "status": state.status(s, now), "launches": len(s.runs)}
                    for s in state.scans.values()
                ],
            }
        )

    @emulator.post("/faults")
    async def faults(request: Request) -> Response:
        body = await _body(request, FaultsBody)
        if body.session_expiry:
            state.sessions.clear()
        if body.scan_api is not None:
            state.scan_api = body.scan_api
        if body.export_error is not None:
            state.export_error = body.export_error
        if body.fail_requests is not None:
            state.fail_requests += [(body.fail_requests.status, body.fail_requests.retry_after)] * (
                body.fail_requests.count
            )
        if body.abort_scan is not None:
            transition(state.abort, body.abort_scan)
        if body.reset:
            state.endpoint_faults.clear()
            state.fail_requests.clear()
            state.latency = 0.0
            state.stay_pending = state.export_stuck = state.export_error = False
            state.export_corrupt = None
            state.create_then_fail = 0
        if body.endpoint_faults is not None:
            state.endpoint_faults += [
                EndpointFault(f.method.upper(), f.path, f.status, f.rate, f.count) for f in body.endpoint_faults
            ]
        if body.latency is not None:
            state.latency = body.latency
        if body.stay_pending is not None:
            state.stay_pending = body.stay_pending
        if body.export_stuck is not None:
            state.export_stuck = body.export_stuck
        if body.export_corrupt is not None:
            state.export_corrupt = body.export_corrupt
        if body.clear_export_corrupt:
            state.export_corrupt = None
        if body.create_then_fail is not None:
            state.create_then_fail = body.create_then_fail
        if body.vanish_scan is not None:
            state.scans.pop(body.vanish_scan, None)
        return _json(
            {
                "scan_api": state.scan_api,
                "export_error": state.export_error,
                "pending_failures": len(state.fail_requests),
                "sessions": len(state.sessions),
            }
        )

    app.include_router(public)
    app.include_router(api)
    app.include_router(emulator)
    return app
