"""API tokens and OAuth JWTs, verified against a real JWKS served over HTTP by the test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from scanfleet.common.clients import Client, ClientDirectory, ClientsFile, OAuthIssuer, Role, issue_token, save_clients
from scanfleet.gateway.auth import Authenticator
from tests.helpers import Jwks, serving_jwks

ISSUER = "https://idp.test/realms/sec"
RESOURCE = "http://127.0.0.1:8080/mcp"


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": RESOURCE, "sub": "svc-agent-7", "iat": now, "nbf": now, "exp": now + 300, **over}


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, Jwks]]:
    with serving_jwks() as served:
        yield served


@pytest.fixture
def setup(tmp_path: Path, jwks_server: tuple[str, Jwks]) -> tuple[Path, ClientsFile, str, Jwks]:
    url, jwks = jwks_server
    data = ClientsFile(
        clients=[
            Client(id="agent-7", role=Role.AGENT, oauth_subjects=["svc-agent-7"]),
            Client(id="gone", disabled=True, oauth_subjects=["svc-gone"]),
        ],
        oauth=OAuthIssuer(issuer=ISSUER, jwks_url=url),
    )
    token = issue_token(data, "agent-7")
    path = tmp_path / "clients.yaml"
    save_clients(path, data)
    return path, data, token, jwks


async def verify(path: Path, token: str) -> str | None:
    async with httpx.AsyncClient() as http:
        auth = Authenticator(ClientDirectory(path), RESOURCE, http)
        access = await auth.verify_token(token)
    return access.client_id if access else None


async def test_valid_tokens_map_to_their_client(setup: tuple[Path, ClientsFile, str, Jwks]) -> None:
    path, _, api_token, jwks = setup
    assert await verify(path, api_token) == "agent-7"
    assert await verify(path, jwt.encode(claims(), jwks.rsa, "RS256", headers={"kid": "rsa-1"})) == "agent-7"
    assert await verify(path, jwt.encode(claims(), jwks.ec, "ES256", headers={"kid": "ec-1"})) == "agent-7"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand, as an attacker would: ``none`` or HMAC keyed with a public key."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}"
    signature = b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()) if secret else ""
    return f"{signing_input}.{signature}"


def forged(jwks: Jwks) -> dict[str, str]:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = jwks.rsa.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return {
        "expired": jwt.encode(claims(exp=int(time.time()) - 3600), jwks.rsa, "RS256", headers={"kid": "rsa-1"}),
        "wrong audience": jwt.encode(claims(aud="http://other/mcp"), jwks.rsa, "RS256", headers={"kid": "rsa-1"}),
        "wrong issuer": jwt.encode(claims(iss="https://evil.test"), jwks.rsa, "RS256", headers={"kid": "rsa-1"}),
        "wrong key": jwt.encode(claims(), other, "RS256", headers={"kid": "rsa-1"}),
        "unknown kid": jwt.encode(claims(), other, "RS256", headers={"kid": "rsa-9"}),
        "not yet valid": jwt.encode(claims(nbf=int(time.time()) + 3600), jwks.rsa, "RS256", headers={"kid": "rsa-1"}),
        "no expiry": jwt.encode(
            {k: v for k, v in claims().items() if k != "exp"}, jwks.rsa, "RS256", headers={"kid": "rsa-1"}
        ),
        "alg none": hand_signed({"alg": "none", "typ": "JWT"}, None),
        "HS256 with the public key": hand_signed({"alg": "HS256", "kid": "rsa-1"}, public_pem),
        "unknown subject": jwt.encode(claims(sub="someone"), jwks.rsa, "RS256", headers={"kid": "rsa-1"}),
        "disabled client": jwt.encode(claims(sub="svc-gone"), jwks.rsa, "RS256", headers={"kid": "rsa-1"}),
        "garbage": "not-a-token",
        "api token with a wrong secret": "sf_000000000000_AAAA",
    }


async def test_every_forged_or_invalid_token_is_refused(setup: tuple[Path, ClientsFile, str, Jwks]) -> None:
    path, _, api_token, jwks = setup
    cases = forged(jwks)
    tampered = api_token[:-2] + ("AA" if not api_token.endswith("AA") else "BB")
    cases["tampered api token"] = tampered
    accepted = {name: who for name, token in cases.items() if (who := await verify(path, token)) is not None}
    assert accepted == {}


async def test_revocation_and_disabling_take_effect_on_the_next_request(
    setup: tuple[Path, ClientsFile, str, Jwks],
) -> None:
    path, data, api_token, _ = setup
    assert await verify(path, api_token) == "agent-7"
    data.clients[0].tokens[0].revoked_at = data.clients[0].tokens[0].created_at
    save_clients(path, data)
    assert await verify(path, api_token) is None
    second = issue_token(data, "agent-7")
    save_clients(path, data)
    assert await verify(path, second) == "agent-7"
    data.clients[0].disabled = True
    save_clients(path, data)
    assert await verify(path, second) is None


def test_tokens_are_stored_only_as_hashes(setup: tuple[Path, ClientsFile, str, Jwks]) -> None:
    path, _, api_token, _ = setup
    text = path.read_text()
    assert api_token not in text
    assert api_token.split("_")[2] not in text
    assert path.stat().st_mode & 0o077 == 0
