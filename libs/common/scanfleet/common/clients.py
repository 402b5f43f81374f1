"""Who may call scanfleet: clients, their roles and scopes, API tokens, and the OAuth issuer.

One YAML file (``clients.yaml``) is the source of truth; ``scanfleet clients`` edits it and the
gateway re-reads it whenever it changes on disk, so a revoked token or a disabled client stops
working with the next request. API tokens are random, shown once, and stored only as their
SHA-256 (a 256-bit random secret needs no slow hash: there is nothing to guess).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import msgspec
import yaml

from scanfleet.common.contract import NAME_RE
from scanfleet.common.messages import utcnow
from scanfleet.common.scope import CompiledScope, DenyList, Interval, Scope, parse_ranges

TOKEN_PREFIX = "sf"


class Role(StrEnum):
    """``agent`` sees its own tasks; ``operator`` every task in its pools; ``admin`` everything."""

    AGENT = "agent"
    OPERATOR = "operator"
    ADMIN = "admin"


class ApiToken(msgspec.Struct, kw_only=True):
    id: str
    sha256: str
    created_at: datetime
    label: str = ""
    revoked_at: datetime | None = None


class Client(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    role: Role = Role.AGENT
    description: str = ""
    disabled: bool = False
    scope: Scope = msgspec.field(default_factory=Scope)
    # Values of the OAuth client claim that identify this client; none: not reachable by OAuth.
    oauth_subjects: list[str] = msgspec.field(default_factory=list)
    tokens: list[ApiToken] = msgspec.field(default_factory=list)


class OAuthIssuer(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The organisation's identity provider; its JWTs are verified against ``jwks_url``."""

    issuer: str
    jwks_url: str
    audience: str | None = None  # defaults to the gateway's resource URL (…/mcp)
    client_claim: str = "sub"
    algorithms: list[str] = msgspec.field(default_factory=lambda: ["RS256", "ES256", "PS256", "EdDSA"])
    leeway_seconds: float = 30.0


class ClientsFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    clients: list[Client] = msgspec.field(default_factory=list)
    oauth: OAuthIssuer | None = None
    # Ranges denied to every client on top of the built-in list (scanfleet's own hosts, say).
    deny: list[str] = msgspec.field(default_factory=list)


class ClientsError(ValueError):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh ``(token_id, token)``; the id is public (it names the token in lists and audit)."""
    token_id = secrets.token_hex(6)
    return token_id, f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"


def token_id_of(token: str) -> str | None:
    prefix, _, rest = token.partition("_")
    token_id, _, secret = rest.partition("_")
    return token_id if prefix == TOKEN_PREFIX and token_id and secret else None


def load_clients(path: Path) -> ClientsFile:
    """Parse and check the file; every mistake is reported with the client it concerns."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        data = msgspec.convert(raw, ClientsFile)
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ClientsError(f"{path}: {exc}") from None
    seen: set[str] = set()
    for client in data.clients:
        if not NAME_RE.match(client.id):
            raise ClientsError(f"{path}: client id {client.id!r} must be 1-64 of [A-Za-z0-9_-]")
        if client.id in seen:
            raise ClientsError(f"{path}: client {client.id!r} is listed twice")
        seen.add(client.id)
        try:
            CompiledScope.of(client.scope)
        except ValueError as exc:
            raise ClientsError(f"{path}: client {client.id!r}: {exc}") from None
    try:
        parse_ranges(data.deny, what="deny")
    except ValueError as exc:
        raise ClientsError(f"{path}: {exc}") from None
    return data


def save_clients(path: Path, data: ClientsFile) -> None:
    """Write atomically (readers never see half a file), readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(msgspec.to_builtins(data), sort_keys=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def issue_token(data: ClientsFile, client_id: str, label: str = "") -> str:
    client = find_client(data, client_id)
    token_id, token = new_token()
    client.tokens.append(ApiToken(id=token_id, sha256=hash_token(token), created_at=utcnow(), label=label))
    return token


def find_client(data: ClientsFile, client_id: str) -> Client:
    for client in data.clients:
        if client.id == client_id:
            return client
    raise ClientsError(f"no client {client_id!r}")


@dataclass(frozen=True)
class Principal:
    """A verified caller: the client and how it proved itself (``token:<id>`` or ``oauth``)."""

    client: Client
    scope: CompiledScope
    method: str

    @property
    def id(self) -> str:
        return self.client.id

    @property
    def role(self) -> Role:
        return self.client.role


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[int, int, int]
    data: ClientsFile
    scopes: dict[str, CompiledScope]
    deny_extra: tuple[Interval, ...]
    by_token: dict[str, tuple[Client, ApiToken]]
    by_subject: dict[str, Client]


class ClientDirectory:
    """The clients file as the gateway sees it: re-read whenever its inode, size or mtime change.

    A broken edit keeps the last good version (and says why in ``error``) rather than locking
    every client out; a missing file means no clients at all.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.error: str | None = None
        self._loaded: _Loaded | None = None

    def _current(self) -> _Loaded | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._loaded = None
            return None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._loaded is None or self._loaded.stamp != stamp:
            try:
                self._loaded = _index(stamp, load_clients(self.path))
                self.error = None
            except ClientsError as exc:
                self.error = str(exc)
        return self._loaded

    @property
    def configured(self) -> bool:
        loaded = self._current()
        return loaded is not None and any(not c.disabled for c in loaded.data.clients)

    @property
    def oauth(self) -> OAuthIssuer | None:
        loaded = self._current()
        return loaded.data.oauth if loaded else None

    def deny(self, base: DenyList) -> DenyList:
        """``base`` (built-in and infrastructure ranges) plus the file's own ``deny`` list."""
        loaded = self._current()
        return DenyList((*base.ranges, *loaded.deny_extra)) if loaded and loaded.deny_extra else base

    def by_token(self, token: str) -> Principal | None:
        loaded = self._current()
        token_id = token_id_of(token)
        if loaded is None or token_id is None:
            return None
        found = loaded.by_token.get(token_id)
        if found is None:
            return None
        client, record = found
        if not hmac.compare_digest(record.sha256, hash_token(token)):
            return None
        if record.revoked_at is not None or client.disabled:
            return None
        return Principal(client, loaded.scopes[client.id], f"token:{token_id}")

    def by_subject(self, subject: str) -> Principal | None:
        loaded = self._current()
        client = loaded.by_subject.get(subject) if loaded else None
        if loaded is None or client is None or client.disabled:
            return None
        return Principal(client, loaded.scopes[client.id], "oauth")

    def get(self, client_id: str) -> Principal | None:
        loaded = self._current()
        if loaded is None:
            return None
        client = next((c for c in loaded.data.clients if c.id == client_id), None)
        if client is None or client.disabled:
            return None
        return Principal(client, loaded.scopes[client.id], "id")


def _index(stamp: tuple[int, int, int], data: ClientsFile) -> _Loaded:
    by_subject: dict[str, Client] = {}
    for client in data.clients:
        for subject in client.oauth_subjects:
            by_subject[subject] = client
    return _Loaded(
        stamp=stamp,
        data=data,
        scopes={c.id: CompiledScope.of(c.scope) for c in data.clients},
        deny_extra=tuple(parse_ranges(data.deny, what="deny")),
        by_token={t.id: (c, t) for c in data.clients for t in c.tokens},
        by_subject=by_subject,
    )
