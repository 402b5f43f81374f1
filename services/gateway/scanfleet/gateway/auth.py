"""Who is calling: API tokens from the clients file, or JWTs from the organisation's identity provider.

The same ``Authenticator`` serves MCP (as the SDK's ``TokenVerifier``, so ``/mcp`` answers 401
with ``WWW-Authenticate`` and serves its protected-resource metadata) and REST (``bearer``).
JWTs are verified by PyJWT against the issuer's JWKS: signature with an allowed asymmetric
algorithm only (``none`` and HMAC are refused, so a public key can never serve as a secret),
issuer, audience (this gateway's resource URL, RFC 8707), expiry and not-before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import jwt
from mcp.server.auth.provider import AccessToken

from scanfleet.common.clients import ClientDirectory, OAuthIssuer, Principal

log = logging.getLogger("scanfleet.gateway.auth")

ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
JWKS_MIN_REFRESH = 30.0


class JwksCache:
    """The issuer's signing keys by ``kid``; an unknown ``kid`` refetches, at most every 30 s."""

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self._http = client
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -JWKS_MIN_REFRESH
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        found = self._lookup(kid)
        if found is not None:
            return found
        async with self._lock:
            if time.monotonic() - self._fetched_at >= JWKS_MIN_REFRESH:
                await self._refresh()
        return self._lookup(kid)

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            response = await self._http.get(self.url, timeout=5.0)
            response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json()).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("could not fetch JWKS from %s: %s", self.url, exc)
            return
        self._keys = {k.key_id or f"#{i}": k for i, k in enumerate(keys)}


class JwtVerifier:
    def __init__(self, issuer: OAuthIssuer, audience: str, client: httpx.AsyncClient) -> None:
        self.issuer = issuer
        self.audience = issuer.audience or audience
        self.algorithms = [a for a in issuer.algorithms if a in ASYMMETRIC]
        self.jwks = JwksCache(issuer.jwks_url, client)

    async def claims(self, token: str) -> dict[str, Any] | None:
        """The verified claims, or None for any token that fails any check."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        if header.get("alg") not in self.algorithms:
            return None
        key = await self.jwks.key(header.get("kid"))
        if key is None:
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer.issuer,
                leeway=self.issuer.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            log.info("refused a JWT: %s", exc)
            return None
        return claims


class Authenticator:
    """``verify_token`` for the MCP SDK; ``principal`` for REST and for the tools themselves."""

    def __init__(self, directory: ClientDirectory, resource_url: str, client: httpx.AsyncClient) -> None:
        self.directory = directory
        self.resource_url = resource_url
        self._http = client
        self._jwt: tuple[str, JwtVerifier] | None = None

    def _verifier(self) -> JwtVerifier | None:
        issuer = self.directory.oauth
        if issuer is None:
            return None
        fingerprint = json.dumps([issuer.issuer, issuer.jwks_url, issuer.audience, issuer.algorithms])
        if self._jwt is None or self._jwt[0] != fingerprint:
            self._jwt = (fingerprint, JwtVerifier(issuer, self.resource_url, self._http))
        return self._jwt[1]

    async def principal(self, token: str) -> Principal | None:
        if not token or len(token) > 8192:
            return None
        found = self.directory.by_token(token)
        if found is not None:
            return found
        verifier = self._verifier()
        if verifier is None or token.count(".") != 2:
            return None
        claims = await verifier.claims(token)
        subject = claims.get(verifier.issuer.client_claim) if claims else None
        return self.directory.by_subject(subject) if isinstance(subject, str) else None

    async def verify_token(self, token: str) -> AccessToken | None:
        principal = await self.principal(token)
        if principal is None:
            return None
        return AccessToken(
            token=token,
            client_id=principal.id,
            scopes=[str(principal.role)],
            resource=self.resource_url,
            claims={"method": principal.method},
        )
