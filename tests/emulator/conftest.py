"""Shared fixtures: an in-process emulator driven by a fake clock, so tests move time instead of sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from scanfleet.emulator.app import create_app
from scanfleet.emulator.config import EmulatorConfig
from tests.helpers import API_KEYS, FakeClock, make_config


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config() -> EmulatorConfig:
    return make_config()


@pytest.fixture
def app(config: EmulatorConfig, clock: FakeClock) -> FastAPI:
    return create_app(config, clock=clock)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://emulator", headers=API_KEYS
    ) as client:
        yield client


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator") as client:
        yield client
