"""``/server``: readiness and the properties clients read the edition and licence from.

After a (re)start Nessus loads its plugins for minutes. Meanwhile ``GET /server/status``
answers ``503 {"code": 503, "status": "loading", "progress": <percent>}`` and the API refuses
work with 503 (``web.Guards``); once loaded it answers ``200 {"code": 200, "status": "ready",
"progress": null}``. The emulator does the same for ``startup_duration`` seconds after it
starts, and after ``POST /_emulator/restart``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from scanfleet.emulator.state import EmulatorState
from scanfleet.emulator.web import Guards, json_response


def server_properties(state: EmulatorState) -> dict[str, Any]:
    """The licence follows the scan-API knob, so a test can turn a Manager into a Professional at runtime."""
    config = state.config
    return {
        "nessus_type": config.nessus_type,
        "server_version": config.version,
        "nessus_ui_version": config.version,
        "nessus_ui_build": "20010",
        "server_build": "20010",
        "platform": "LINUX",
        "idle_timeout": "30",
        "scanner_boottime": int(state.started_at),
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


def server_router(state: EmulatorState, guards: Guards) -> APIRouter:
    router = APIRouter()

    @router.get("/server/status", dependencies=guards.public)
    async def server_status() -> Response:
        progress = state.loading_progress(state.clock())
        if progress is not None:
            return json_response({"code": 503, "status": "loading", "progress": progress}, status=503)
        return json_response({"code": 200, "status": "ready", "progress": None})

    @router.get("/server/properties", dependencies=guards.api)
    async def properties() -> Response:
        return json_response(server_properties(state))

    return router
