"""Docker-API engines (Docker, or podman's Docker API) through the docker SDK.

The SDK is synchronous, so every call runs in a worker thread; one client per engine URL,
shared by the scanners of one agent process and made anew after the engine failed. The SDK
rather than hand-written HTTP: it speaks the engine API over unix sockets and TCP, with the
version negotiation and error types engines need.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import docker
import requests
from docker.errors import DockerException, NotFound

from scanfleet.common.messages import RestartRefusal

log = logging.getLogger("scanfleet.agent")

# Seconds an engine call may take (a restart: on top of the container's own stop timeout); a
# busy engine is slow to answer, and inspections run beside the heartbeat, never holding it up.
CALL_TIMEOUT = 30.0


class EngineError(Exception):
    """The engine could not do what was asked; ``code`` is the refusal an operator sees."""

    def __init__(self, code: RestartRefusal, message: str) -> None:
        super().__init__(message)
        self.code: RestartRefusal = code


class Engines:
    """The docker SDK clients of one agent process, one per engine URL."""

    def __init__(self, timeout: float = CALL_TIMEOUT) -> None:
        self.timeout = timeout
        self._clients: dict[str, docker.DockerClient] = {}
        self._lock = threading.Lock()

    def _client(self, url: str) -> docker.DockerClient:
        with self._lock:
            client = self._clients.get(url)
            if client is None:
                client = self._clients[url] = docker.DockerClient(base_url=url, timeout=int(self.timeout))
            return client

    def _forget(self, url: str) -> None:
        with self._lock:
            client = self._clients.pop(url, None)
        if client is not None:
            client.close()

    def _call(self, url: str, name: str, what: str, work: Any) -> Any:
        try:
            return work(self._client(url).containers.get(name))
        except NotFound:
            raise EngineError("container_not_found", f"the engine has no container {name!r}") from None
        except (DockerException, requests.RequestException) as exc:
            self._forget(url)
            raise EngineError("engine_unreachable", f"{what}: {type(exc).__name__}: {exc}") from None

    async def inspect(self, url: str, name: str) -> dict[str, Any]:
        """The container's inspect data (``docker inspect``)."""

        def attrs(container: Any) -> dict[str, Any]:
            return dict(container.attrs)

        result: dict[str, Any] = await asyncio.to_thread(self._call, url, name, "inspect", attrs)
        return result

    async def restart(self, url: str, name: str, stop_timeout: int) -> dict[str, Any]:
        """Restart the container (stop, waiting ``stop_timeout`` seconds before SIGKILL, then
        start; a stopped one is just started) and return its inspect data afterwards."""

        def restart(container: Any) -> dict[str, Any]:
            try:
                container.restart(timeout=stop_timeout)
            except NotFound:
                raise
            except DockerException as exc:
                if isinstance(exc, docker.errors.APIError) and exc.status_code is not None:
                    raise EngineError("restart_failed", f"the engine refused: {exc.explanation or exc}") from None
                raise
            container.reload()
            return dict(container.attrs)

        result: dict[str, Any] = await asyncio.to_thread(self._call, url, name, "restart", restart)
        return result

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()
