"""HTTP plumbing every router shares: Nessus-shaped errors, JSON in and out, request guards and lookups."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from fastapi import Depends, Request
from fastapi.responses import Response

from scanfleet.emulator.state import ConflictError, EmulatorState, Scan

T = TypeVar("T")

STATUS_PATH = "/server/status"
LOADING = "Nessus is loading plugins; try again once /server/status reports ready"


class ApiError(Exception):
    """An error answered as Nessus does: ``{"error": message}`` with the given status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


async def api_error(request: Request, exc: ApiError) -> Response:
    return Response(
        msgspec.json.encode({"error": exc.message}),
        status_code=exc.status,
        media_type="application/json",
        headers=exc.headers,
    )


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json")


async def read_body(request: Request, kind: type[T]) -> T:
    """Decode the JSON body into `kind`; an empty body is an empty object, as Nessus treats it."""
    raw = await request.body()
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(400, f"Invalid request body: {exc}") from exc


def find_scan(state: EmulatorState, scan_id: int) -> Scan:
    scan = state.scans.get(scan_id)
    if scan is None:
        raise ApiError(404, "The requested file was not found.")
    return scan


def transition(state: EmulatorState, action: Callable[[Scan, float], object], scan_id: int) -> Response:
    """Apply a run transition (stop, pause, ...) to a scan; a transition its status forbids is a 409."""
    try:
        action(find_scan(state, scan_id), state.clock())
    except ConflictError as exc:
        raise ApiError(409, str(exc)) from exc
    return Response(status_code=200)


def _parse_api_keys(header: str) -> dict[str, str]:
    parts = (p.strip() for p in header.split(";"))
    return dict(p.split("=", 1) for p in parts if "=" in p)


class Guards:
    """The checks in front of the handlers: injected faults, then credentials (API keys or a session token).

    `public` routes only see faults, `api` routes see both, and `control` routes (the emulator's own knobs)
    need credentials but never fail on purpose, so a test can always undo what it injected.
    """

    def __init__(self, state: EmulatorState) -> None:
        self._state = state
        self.public = [Depends(self.inject_failures)]
        self.api = [Depends(self.inject_failures), Depends(self.authenticate)]
        self.control = [Depends(self.authenticate)]

    async def inject_failures(self, request: Request) -> None:
        state = self._state
        if state.latency > 0:
            await asyncio.sleep(state.latency)
        route = request.scope.get("route")
        path = getattr(route, "path", request.url.path)
        if path != STATUS_PATH and state.loading_progress(state.clock()) is not None:
            raise ApiError(503, LOADING)
        fault = state.fault_for(request.method, path)
        if fault is not None:
            if fault.status == 0:
                await asyncio.sleep(3600)
            raise ApiError(fault.status, f"Injected fault (HTTP {fault.status})")
        if state.fail_requests:
            status, retry_after = state.fail_requests.pop(0)
            headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
            raise ApiError(status, "Service Unavailable" if status >= 500 else "Too Many Requests", headers)

    async def authenticate(self, request: Request) -> str:
        """The user the request acts as."""
        config = self._state.config
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
            user = self._state.sessions.get(token)
            if user is None:
                raise ApiError(401, "You need to log in to perform this request")
            return user
        raise ApiError(401, "Invalid Credentials")
