"""FastAPI app speaking the Nessus REST shapes that scanfleet and pyTenable use."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from scanfleet.emulator.config import EmulatorConfig
from scanfleet.emulator.routers.controls import controls_router
from scanfleet.emulator.routers.editor import editor_router
from scanfleet.emulator.routers.exports import exports_router
from scanfleet.emulator.routers.scans import scan_runs_router, scans_router
from scanfleet.emulator.routers.server import server_router
from scanfleet.emulator.routers.session import session_router
from scanfleet.emulator.state import EmulatorState
from scanfleet.emulator.web import ApiError, Guards, api_error


def create_app(config: EmulatorConfig, *, clock: Callable[[], float] = time.time) -> FastAPI:
    """Build one emulated scanner; `clock` lets tests move time instead of sleeping."""
    state = EmulatorState(config, clock)
    guards = Guards(state)

    @contextlib.asynccontextmanager
    async def serving(_: FastAPI) -> AsyncIterator[None]:
        # The plugins load once the server answers, as Nessus's web server answers while they do.
        state.boot(state.clock())
        yield

    app = FastAPI(
        title=f"Nessus emulator {config.name}",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        exception_handlers={ApiError: api_error},
        lifespan=serving,
    )
    app.state.emulator = state
    for router in (
        session_router(state, guards),
        server_router(state, guards),
        editor_router(guards),
        scans_router(state, guards),
        scan_runs_router(state, guards),
        exports_router(state, guards),
        controls_router(state, guards),
    ):
        app.include_router(router)
    return app
