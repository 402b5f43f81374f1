"""``/_emulator``: what no real Nessus has; knobs that inject faults, and the ground truth tests compare to."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response

from scanfleet.emulator.state import EmulatorState, EndpointFault
from scanfleet.emulator.web import ApiError, Guards, find_scan, json_response, read_body, transition
from scanfleet.emulator.world import WorldBody, apply_world


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


class RestartBody(msgspec.Struct):
    """``loading_seconds``: how long the plugins load this time (default: the configured start-up)."""

    loading_seconds: float | None = None


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


def _reset(state: EmulatorState) -> None:
    """Undo every injected fault; sessions, scans and the scan-API licence are left as they are."""
    state.endpoint_faults.clear()
    state.fail_requests.clear()
    state.latency = 0.0
    state.stay_pending = state.export_stuck = state.export_error = False
    state.export_corrupt = None
    state.create_then_fail = 0


def apply_faults(state: EmulatorState, body: FaultsBody) -> None:
    """Apply the knobs in a fixed order that clients rely on: `reset` undoes the export error and failures
    sent with it, but not the knobs after it, so one request can reset and inject new endpoint faults."""
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
        transition(state, state.abort, body.abort_scan)
    if body.reset:
        _reset(state)
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


def _stats(state: EmulatorState, now: float) -> dict[str, Any]:
    return {
        "running": state.running_now(now),
        "max_running_seen": state.max_running_seen(now),
        "scans_created": state.scans_created,
        "launches": state.launches,
        "scans": [
            {"id": s.id, "name": s.name, "status": state.status(s, now), "launches": len(s.runs), "deleted": gone}
            for gone, scans in ((False, state.scans), (True, state.deleted))
            for s in scans.values()
        ],
    }


def controls_router(state: EmulatorState, guards: Guards) -> APIRouter:
    router = APIRouter(prefix="/_emulator", dependencies=guards.control)

    @router.get("/scans/{scan_id}/truth")
    async def truth(scan_id: int, history_id: int | None = None) -> Response:
        """What an export of the run (the latest, or ``history_id``) holds now, and every host's progress:
        a stopped run's hosts below 100 are the ones a rollover must scan."""
        scan = state.deleted[scan_id] if scan_id in state.deleted else find_scan(state, scan_id)
        if scan.run is None:
            raise ApiError(409, "Scan was never launched")
        run = state.find_run(scan, history_id)
        if run is None:
            raise ApiError(404, "The requested history was not found.")
        now = state.clock()
        current = run is scan.run
        return json_response(
            {
                "scan_id": scan.id,
                "name": scan.name,
                "status": state.status(scan, now) if current else state.finished_status(run),
                "history_id": run.history_id,
                "epoch": run.epoch,
                "host_progress": dict(zip(run.hosts, state.host_progress(scan, now, run), strict=True)),
                **state.visible_model(scan, now, run).truth(),
            }
        )

    @router.post("/world")
    async def world(request: Request) -> Response:
        """The emulated network's epoch, seed and per-epoch changes (``world.py``)."""
        apply_world(state.world, await read_body(request, WorldBody))
        return json_response(msgspec.to_builtins(state.world))

    @router.get("/stats")
    async def stats() -> Response:
        return json_response(_stats(state, state.clock()))

    @router.post("/restart")
    async def restart(request: Request) -> Response:
        """Restart the emulated Nessus in place: sessions end, scans under way abort, plugins load again."""
        body = await read_body(request, RestartBody)
        if body.loading_seconds is not None and body.loading_seconds < 0:
            raise ApiError(400, "loading_seconds must be 0 or more")
        state.restart(state.clock(), body.loading_seconds)
        return json_response({"started_at": state.started_at, "loading_until": state.loading_until})

    @router.post("/faults")
    async def faults(request: Request) -> Response:
        apply_faults(state, await read_body(request, FaultsBody))
        return json_response(
            {
                "scan_api": state.scan_api,
                "export_error": state.export_error,
                "pending_failures": len(state.fail_requests),
                "sessions": len(state.sessions),
            }
        )

    return router
