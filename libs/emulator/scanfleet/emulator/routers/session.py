"""``/session``: password logins for clients that use a session token instead of API keys."""

from __future__ import annotations

import hmac

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response

from scanfleet.emulator.state import EmulatorState
from scanfleet.emulator.web import ApiError, Guards, json_response, read_body


class SessionBody(msgspec.Struct):
    username: str = ""
    password: str = ""


def session_router(state: EmulatorState, guards: Guards) -> APIRouter:
    router = APIRouter()
    config = state.config

    @router.post("/session", dependencies=guards.public)
    async def login(request: Request) -> Response:
        body = await read_body(request, SessionBody)
        if not (
            hmac.compare_digest(body.username, config.username) and hmac.compare_digest(body.password, config.password)
        ):
            raise ApiError(401, "Invalid Credentials")
        return json_response({"token": state.login(body.username)})

    @router.delete("/session", dependencies=guards.api)
    async def logout(request: Request) -> Response:
        cookie = request.headers.get("x-cookie", "")
        state.sessions.pop(cookie.split("token=", 1)[-1].strip(), None)
        return Response(status_code=200)

    return router
