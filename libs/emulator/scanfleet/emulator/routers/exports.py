"""Report exports: request one, poll it, download it by file id or by its token (which needs no login)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from scanfleet.emulator.report import iter_nessus
from scanfleet.emulator.state import EmulatorState, ExportJob
from scanfleet.emulator.web import ApiError, Guards, find_scan, json_response, read_body

_TOKEN_MESSAGES = {
    "ready": "The download is ready.",
    "loading": "The download is being prepared.",
    "error": "The export failed.",
}


class ExportBody(msgspec.Struct):
    format: str = ""


def _export_job(state: EmulatorState, scan_id: int, file_id: int) -> ExportJob:
    job = state.exports.get(file_id)
    if job is None or job.scan_id != scan_id:
        raise ApiError(404, "The requested file was not found.")
    return job


def _token_job(state: EmulatorState, token: str) -> ExportJob:
    job = state.tokens.get(token)
    if job is None:
        raise ApiError(404, "The requested file was not found.")
    return job


async def _chunks(job: ExportJob) -> AsyncIterator[bytes]:
    """The report streamed as generated, or broken the way the export-corruption knob asked."""
    if job.corrupt == "garbage":
        yield b"\x00\x9fnot a nessus report <NessusClientData_v2><Report"
        return
    if job.corrupt == "truncate":
        whole = b"".join(iter_nessus(job.model))
        yield whole[: len(whole) // 2]
        return
    for chunk in iter_nessus(job.model):
        yield chunk


def _download(state: EmulatorState, job: ExportJob) -> Response:
    status = state.export_status(job, state.clock())
    if status == "error":
        raise ApiError(500, "Export failed")
    if status != "ready":
        raise ApiError(409, "Report is still being generated")
    filename = f"{job.model.scan_name.replace(' ', '_')}_{job.file_id}.nessus"
    return StreamingResponse(
        _chunks(job),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def exports_router(state: EmulatorState, guards: Guards) -> APIRouter:
    router = APIRouter()

    @router.post("/scans/{scan_id}/export", dependencies=guards.api)
    async def export(scan_id: int, request: Request, history_id: int | None = None) -> Response:
        """``history_id`` (pyTenable sends it as a query parameter) exports that run, not the latest."""
        scan = find_scan(state, scan_id)
        body = await read_body(request, ExportBody)
        if body.format != "nessus":
            raise ApiError(400, "Invalid 'format' field: only nessus is supported by the emulator")
        if scan.run is None:
            raise ApiError(409, "Scan has no results to export")
        run = state.find_run(scan, history_id)
        if run is None:
            raise ApiError(404, "The requested history was not found.")
        job = state.create_export(scan, state.clock(), run)
        return json_response({"file": job.file_id, "token": job.token})

    @router.get("/scans/{scan_id}/export/{file_id}/status", dependencies=guards.api)
    async def export_status(scan_id: int, file_id: int) -> Response:
        job = _export_job(state, scan_id, file_id)
        return json_response({"status": state.export_status(job, state.clock())})

    @router.get("/scans/{scan_id}/export/{file_id}/download", dependencies=guards.api)
    async def export_download(scan_id: int, file_id: int) -> Response:
        return _download(state, _export_job(state, scan_id, file_id))

    @router.get("/tokens/{token}/status", dependencies=guards.public)
    async def token_status(token: str) -> Response:
        status = state.export_status(_token_job(state, token), state.clock())
        return json_response({"status": status, "message": _TOKEN_MESSAGES[status]})

    @router.get("/tokens/{token}/download", dependencies=guards.public)
    async def token_download(token: str) -> Response:
        return _download(state, _token_job(state, token))

    return router
