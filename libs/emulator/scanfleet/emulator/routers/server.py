"""``/server``: readiness and the properties clients read the edition and licence from."""

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
        "scanner_boottime": int(state.clock()),
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
        return json_response({"code": 200, "status": "ready", "progress": None})

    @router.get("/server/properties", dependencies=guards.api)
    async def properties() -> Response:
        return json_response(server_properties(state))

    return router
