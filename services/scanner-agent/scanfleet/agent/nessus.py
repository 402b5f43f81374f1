"""Async client for the part of the Nessus REST API the scanner agent needs.

The client maps every failure to a typed `NessusError` and never retries on its own (apart from one
re-login after a session expires): retry policy belongs to the agent, which knows about leases and deadlines.
Credentials, API keys and session tokens are never logged or included in reprs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import httpx
import msgspec

from scanfleet.common.targets import parse_targets
from scanfleet.common.telemetry import http_client_span, record_http_error, record_http_status

log = logging.getLogger(__name__)

ADVANCED_SCAN_UUID: Final = "ad629e16-03b6-8c1d-cef6-ef8c9dd3c658d24bd260ef5f9e66"
MY_SCANS_FOLDER: Final = 3
ESCALATION_METHODS: Final = frozenset(
    {"Nothing", "sudo", "su", "su+sudo", "pbrun", "dzdo", ".k5login", "Cisco 'enable'", "Checkpoint Gaia 'expert'"}
)
_UNLIMITED: Final = 1 << 128
T = TypeVar("T")


class NessusError(Exception):
    """Any failure talking to Nessus; `status_code` is None when no HTTP response was received."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class NessusAuthError(NessusError):
    """401/403, or a 401 again right after logging in anew."""


class NessusApiUnavailable(NessusError):
    """412: the licence (Nessus Essentials/Professional/Expert) withholds the scan API."""


class NessusNotFound(NessusError):
    """404: the scan, export file or token does not exist (any more)."""


class NessusConflict(NessusError):
    """409: the scan's state does not allow the request, e.g. launching a running scan."""


class NessusRejected(NessusError):
    """400: Nessus refused the request itself, e.g. invalid targets."""


class NessusTransientError(NessusError):
    """Connection errors, timeouts, 429 and 5xx: worth retrying later, after `retry_after` seconds if given."""

    def __init__(self, message: str, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status_code)
        self.retry_after = retry_after


class SSHCredential(msgspec.Struct, frozen=True, kw_only=True):
    """SSH credentials for an authenticated scan; exactly one of `password` and `private_key` is set."""

    username: str
    password: str | None = None
    private_key: str | None = None
    private_key_passphrase: str | None = None
    elevate_privileges_with: str = "Nothing"
    escalation_account: str | None = None
    escalation_password: str | None = None

    def __post_init__(self) -> None:
        if not self.username:
            raise ValueError("SSH credential needs a username")
        if (self.password is None) == (self.private_key is None):
            raise ValueError("SSH credential needs exactly one of password and private_key")
        if self.elevate_privileges_with not in ESCALATION_METHODS:
            raise ValueError(f"unsupported privilege escalation {self.elevate_privileges_with!r}")

    def __repr__(self) -> str:
        return (
            f"SSHCredential(username={self.username!r}, auth={'key' if self.private_key else 'password'}, "
            f"elevate_privileges_with={self.elevate_privileges_with!r})"
        )

    def to_nessus(self, uploaded_key: str | None = None) -> dict[str, str]:
        """The `credentials.add.Host.SSH[]` entry; `uploaded_key` is the name `/file/upload` returned."""
        entry = {"username": self.username, "custom_password_prompt": "", "target_priority_list": ""}
        if self.private_key is not None:
            entry.update(auth_method="public key", private_key=uploaded_key or "")
            if self.private_key_passphrase:
                entry["private_key_passphrase"] = self.private_key_passphrase
        else:
            entry.update(auth_method="password", password=self.password or "")
        entry["elevate_privileges_with"] = self.elevate_privileges_with
        if self.elevate_privileges_with != "Nothing":
            if self.escalation_account:
                entry["escalation_account"] = self.escalation_account
            if self.escalation_password:
                entry["escalation_password"] = self.escalation_password
        return entry


class ServerCapabilities(msgspec.Struct, frozen=True):
    version: str
    nessus_type: str
    scan_api: bool
    license_type: str


class ServerStatus(msgspec.Struct, frozen=True):
    status: str
    code: int
    progress: int | None = None


class Template(msgspec.Struct, frozen=True):
    uuid: str
    name: str
    title: str = ""


class ScanRef(msgspec.Struct, frozen=True):
    id: int
    uuid: str | None
    name: str
    status: str
    folder_id: int | None = None


class HostProgress(msgspec.Struct, frozen=True):
    host_id: int
    hostname: str
    progress: int
    current: int
    total: int


class ScanDetails(msgspec.Struct, frozen=True):
    status: str
    progress: float
    hosts: list[HostProgress]
    hostcount: int
    name: str = ""
    uuid: str | None = None


class ExportHandle(msgspec.Struct, frozen=True):
    scan_id: int
    file_id: int
    token: str


class _Features(msgspec.Struct):
    scan_api: bool = False


class _License(msgspec.Struct):
    type: str = ""
    features: _Features = msgspec.field(default_factory=_Features)


class _Properties(msgspec.Struct):
    server_version: str = ""
    nessus_type: str = ""
    license: _License = msgspec.field(default_factory=_License)


class _Folder(msgspec.Struct):
    id: int
    type: str = ""


class _ScanList(msgspec.Struct):
    folders: list[_Folder] | None = None
    scans: list[ScanRef] | None = None


class _Host(msgspec.Struct):
    host_id: int = 0
    hostname: str = ""
    scanprogresscurrent: int = 0
    scanprogresstotal: int = 100


class _Info(msgspec.Struct):
    status: str
    name: str = ""
    uuid: str | None = None
    hostcount: int | None = 0


class _Details(msgspec.Struct):
    info: _Info
    hosts: list[_Host] | None = None


def _error_message(response: httpx.Response) -> str:
    with contextlib.suppress(Exception):
        body = msgspec.json.decode(response.content)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return str(body["error"])
    return response.reason_phrase or f"HTTP {response.status_code}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def raise_for_status(response: httpx.Response) -> None:
    """Map an HTTP error status to the matching `NessusError` subclass."""
    code = response.status_code
    if code < 400:
        return
    message = f"{response.request.method} {response.request.url.path}: {code} {_error_message(response)}"
    if code in (401, 403):
        raise NessusAuthError(message, code)
    if code == 412:
        raise NessusApiUnavailable(message, code)
    if code == 404:
        raise NessusNotFound(message, code)
    if code == 409:
        raise NessusConflict(message, code)
    if code == 400:
        raise NessusRejected(message, code)
    if code == 429 or code >= 500:
        raise NessusTransientError(message, code, _retry_after(response))
    raise NessusError(message, code)


def _ssl_verify(verify: bool | str) -> bool | ssl.SSLContext:
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    if not verify:
        log.warning("TLS certificate verification is disabled for this Nessus client")
    return verify


class NessusClient:
    """One scanner's REST API, authenticated with API keys or, failing those, a session login."""

    def __init__(
        self,
        url: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        http = httpx.AsyncClient(
            base_url=url,
            verify=_ssl_verify(verify),
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"Accept": "application/json"},
        )
        self._setup(http, access_key, secret_key, username, password, owns_http=True)

    @classmethod
    def from_http_client(
        cls,
        http: httpx.AsyncClient,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> NessusClient:
        """Wrap an existing client (its base_url must point at the scanner); closing is left to the caller."""
        client = cls.__new__(cls)
        client._setup(http, access_key, secret_key, username, password, owns_http=False)
        return client

    def _setup(
        self,
        http: httpx.AsyncClient,
        access_key: str | None,
        secret_key: str | None,
        username: str | None,
        password: str | None,
        *,
        owns_http: bool,
    ) -> None:
        if access_key and secret_key:
            self._api_keys: str | None = f"accessKey={access_key}; secretKey={secret_key};"
        elif username and password:
            self._api_keys = None
        else:
            raise ValueError("NessusClient needs access_key and secret_key, or username and password")
        self._http = http
        self._owns_http = owns_http
        self._username = username
        self._password = password
        self._token: str | None = None
        self._login_lock = asyncio.Lock()

    def __repr__(self) -> str:
        mode = "api-keys" if self._api_keys else "session"
        return f"NessusClient(url={str(self._http.base_url)!r}, auth={mode})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Log out of a session (best effort) and close the HTTP client if this object created it."""
        if self._token is not None:
            with contextlib.suppress(NessusError, httpx.HTTPError):
                await self._http.delete("/session", headers={"X-Cookie": f"token={self._token}"})
            self._token = None
        if self._owns_http:
            await self._http.aclose()

    async def _login(self, stale_token: str | None) -> str:
        async with self._login_lock:
            if self._token is not None and self._token != stale_token:
                return self._token
            try:
                response = await self._http.post(
                    "/session", json={"username": self._username, "password": self._password}
                )
            except httpx.TransportError as exc:
                raise NessusTransientError(f"POST /session: {type(exc).__name__}: {exc}") from exc
            raise_for_status(response)
            self._token = self._decode(response, _Token).token
            log.info("logged in to Nessus at %s", self._http.base_url)
            return self._token

    async def _auth_headers(self) -> tuple[dict[str, str], str | None]:
        if self._api_keys is not None:
            return {"X-ApiKeys": self._api_keys}, None
        token = self._token or await self._login(None)
        return {"X-Cookie": f"token={token}"}, token

    async def _send(
        self,
        request_factory: Callable[[dict[str, str]], httpx.Request],
        *,
        stream: bool = False,
        answers: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        for attempt in (1, 2):
            headers, token = await self._auth_headers()
            request = request_factory(headers)
            url = request.url
            with http_client_span(request.method, url.scheme, url.host, url.port, url.path) as span:
                try:
                    response = await self._http.send(request, stream=stream)
                except httpx.TransportError as exc:
                    record_http_error(span, exc)
                    raise NessusTransientError(f"{request.method} {url.path}: {type(exc).__name__}: {exc}") from exc
                record_http_status(span, response.status_code)
            log.debug("nessus %s %s -> %s", request.method, request.url.path, response.status_code)
            if response.status_code >= 400 and stream:
                await response.aread()
                await response.aclose()
            if response.status_code == 401 and self._api_keys is None and attempt == 1:
                await self._login(token)
                continue
            if response.status_code not in answers:
                raise_for_status(response)
            return response
        raise AssertionError("unreachable")

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        answers: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """One call; an error status raises its ``NessusError`` unless ``answers`` lists it."""

        def build(headers: dict[str, str]) -> httpx.Request:
            return self._http.build_request(method, path, json=json, params=params, headers=headers)

        return await self._send(build, answers=answers)

    @staticmethod
    def _decode(response: httpx.Response, kind: type[T]) -> T:
        try:
            return msgspec.json.decode(response.content, type=kind)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise NessusError(
                f"{response.request.method} {response.request.url.path}: unexpected response: {exc}",
                response.status_code,
            ) from exc

    async def server_properties(self) -> ServerCapabilities:
        props = self._decode(await self._request("GET", "/server/properties"), _Properties)
        return ServerCapabilities(
            version=props.server_version,
            nessus_type=props.nessus_type,
            scan_api=props.license.features.scan_api,
            license_type=props.license.type,
        )

    async def server_status(self) -> ServerStatus:
        """``ready``, or ``loading`` with its progress while Nessus starts up (answered with a 503
        that carries the status); a 503 without a status body is a transient error as usual."""
        response = await self._request("GET", "/server/status", answers=frozenset({503}))
        if response.status_code == 503:
            try:
                return msgspec.json.decode(response.content, type=ServerStatus)
            except (msgspec.DecodeError, msgspec.ValidationError):
                raise_for_status(response)
        return self._decode(response, ServerStatus)

    async def templates(self) -> list[Template]:
        return self._decode(await self._request("GET", "/editor/scan/templates"), _Templates).templates

    async def _upload(self, filename: str, content: str) -> str:
        def build(headers: dict[str, str]) -> httpx.Request:
            files = {"Filedata": (filename, content.encode(), "application/octet-stream")}
            return self._http.build_request("POST", "/file/upload", files=files, headers=headers)

        return self._decode(await self._send(build), _Upload).fileuploaded

    async def create_scan(
        self,
        name: str,
        targets: str | Sequence[str],
        template_uuid: str = ADVANCED_SCAN_UUID,
        description: str = "",
        credentials: SSHCredential | None = None,
        folder_id: int | None = None,
    ) -> int:
        """Create (not launch) a scan and return its id; targets are checked for syntax before sending."""
        entries = [
            t.text
            for t in parse_targets(list(targets) if not isinstance(targets, str) else targets, max_addresses=_UNLIMITED)
        ]
        body: dict[str, Any] = {
            "uuid": template_uuid,
            "settings": {
                "name": name,
                "description": description,
                "text_targets": ",".join(entries),
                "folder_id": MY_SCANS_FOLDER if folder_id is None else folder_id,
                "scanner_id": 1,
                "enabled": False,
                "launch_now": False,
            },
        }
        if credentials is not None:
            uploaded = None
            if credentials.private_key is not None:
                uploaded = await self._upload(f"{name}-ssh-key", credentials.private_key)
            body["credentials"] = {
                "add": {"Host": {"SSH": [credentials.to_nessus(uploaded)]}},
                "edit": {},
                "delete": [],
            }
        return self._decode(await self._request("POST", "/scans", json=body), _Created).scan.id

    async def find_scans_by_name(self, name: str) -> list[ScanRef]:
        """Scans outside the trash with exactly this name, e.g. to recover when a create's reply was lost."""
        listing = self._decode(await self._request("GET", "/scans"), _ScanList)
        trash = {f.id for f in listing.folders or [] if f.type == "trash"}
        return [s for s in listing.scans or [] if s.name == name and s.folder_id not in trash]

    async def launch(self, scan_id: int) -> str:
        return self._decode(await self._request("POST", f"/scans/{scan_id}/launch", json={}), _Launched).scan_uuid

    async def stop(self, scan_id: int) -> None:
        await self._request("POST", f"/scans/{scan_id}/stop", json={})

    async def pause(self, scan_id: int) -> None:
        await self._request("POST", f"/scans/{scan_id}/pause", json={})

    async def resume(self, scan_id: int) -> None:
        await self._request("POST", f"/scans/{scan_id}/resume", json={})

    async def delete(self, scan_id: int) -> None:
        await self._request("DELETE", f"/scans/{scan_id}")

    async def scan_details(self, scan_id: int) -> ScanDetails:
        details = self._decode(await self._request("GET", f"/scans/{scan_id}"), _Details)
        hosts = [
            HostProgress(
                host_id=h.host_id,
                hostname=h.hostname,
                progress=min(100, (100 * h.scanprogresscurrent) // (h.scanprogresstotal or 100)),
                current=h.scanprogresscurrent,
                total=h.scanprogresstotal or 100,
            )
            for h in details.hosts or []
        ]
        if details.info.status == "completed":
            progress = 100.0
        elif hosts:
            progress = min(100.0, 100.0 * sum(h.current for h in hosts) / sum(h.total for h in hosts))
        else:
            progress = 0.0
        return ScanDetails(
            status=details.info.status,
            progress=round(progress, 1),
            hosts=hosts,
            hostcount=details.info.hostcount or len(hosts),
            name=details.info.name,
            uuid=details.info.uuid,
        )

    async def export_request(self, scan_id: int, history_id: int | None = None) -> ExportHandle:
        """Export the scan's latest run, or the run ``history_id`` (a query parameter, as Nessus takes it)."""
        params = {"history_id": history_id} if history_id is not None else None
        response = await self._request("POST", f"/scans/{scan_id}/export", json={"format": "nessus"}, params=params)
        created = self._decode(response, _ExportCreated)
        return ExportHandle(scan_id=scan_id, file_id=created.file, token=created.token)

    async def export_status(self, handle: ExportHandle) -> str:
        """`loading`, `ready` or `error`, via the token API, or the per-scan path on scanners without it."""
        try:
            response = await self._request("GET", f"/tokens/{handle.token}/status")
        except NessusNotFound:
            response = await self._request("GET", f"/scans/{handle.scan_id}/export/{handle.file_id}/status")
        return self._decode(response, _ExportStatus).status

    async def _open_stream(self, path: str) -> httpx.Response:
        def build(headers: dict[str, str]) -> httpx.Request:
            return self._http.build_request("GET", path, headers=headers)

        return await self._send(build, stream=True)

    async def export_stream(self, handle: ExportHandle, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Yield the `.nessus` file in chunks as it arrives; the whole file is never held in memory."""
        try:
            response = await self._open_stream(f"/tokens/{handle.token}/download")
        except NessusNotFound:
            response = await self._open_stream(f"/scans/{handle.scan_id}/export/{handle.file_id}/download")
        try:
            async for chunk in response.aiter_bytes(chunk_size):
                yield chunk
        except httpx.TransportError as exc:
            raise NessusTransientError(f"export download interrupted: {type(exc).__name__}: {exc}") from exc
        finally:
            await response.aclose()


class _Token(msgspec.Struct):
    token: str


class _Templates(msgspec.Struct):
    templates: list[Template]


class _Upload(msgspec.Struct):
    fileuploaded: str


class _CreatedScan(msgspec.Struct):
    id: int


class _Created(msgspec.Struct):
    scan: _CreatedScan


class _Launched(msgspec.Struct):
    scan_uuid: str


class _ExportCreated(msgspec.Struct):
    file: int
    token: str


class _ExportStatus(msgspec.Struct):
    status: str
