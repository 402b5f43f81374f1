"""Shared fixtures: an in-process emulator driven by a fake clock, so tests move time instead of sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
from fastapi import FastAPI

from scanfleet.emulator.app import create_app
from scanfleet.emulator.config import EmulatorConfig

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
API_KEYS = {"X-ApiKeys": f"accessKey={ACCESS_KEY}; secretKey={SECRET_KEY};"}
ADVANCED = "ad629e16-03b6-8c1d-cef6-ef8c9dd3c658d24bd260ef5f9e66"


class FakeClock:
    def __init__(self, start: float = 1_718_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(**overrides: object) -> EmulatorConfig:
    values: dict[str, object] = {
        "name": "emu-1",
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "username": "operator",
        "password": "operator-pass",
        "scan_duration": 1.0,
        "pending_duration": 0.2,
        "export_delay": 0.5,
        "ssh_accounts": {"root": "toor"},
    }
    values.update(overrides)
    return msgspec.convert(values, EmulatorConfig)


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


def scan_body(name: str, targets: str, ssh: list[dict[str, str]] | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "uuid": ADVANCED,
        "settings": {"name": name, "text_targets": targets, "folder_id": 3, "scanner_id": 1, "enabled": False},
    }
    if ssh is not None:
        body["credentials"] = {"add": {"Host": {"SSH": ssh}}, "edit": {}, "delete": []}
    return body
