"""Who is asking: API tokens (sha256, constant-time compare) and optional OIDC/JWT bearer tokens."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import jwt

from metrics_api.config import TENANT_RE, Config, OidcConfig, RateLimit, hash_token

log = logging.getLogger(__name__)


class AuthError(Exception):
    """No or bad credentials (HTTP 401); the message is safe to show the client."""


class ForbiddenError(Exception):
    """Valid credentials that do not allow this (HTTP 403)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: name (for audit and rate limits), role, and the tenants it is bound to."""

    name: str
    role: str
    tenants: tuple[str, ...]
    all_tenants: bool
    rate_limit: RateLimit | None = None  # this token's own limit; None: the global one

    def can_see_tenant(self, tenant: str) -> bool:
        return self.all_tenants or tenant in self.tenants


class Authenticator:
    """Resolves the `Authorization: Bearer ...` header to a Principal."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._tokens = config.tokens
        self._jwks: jwt.PyJWKClient | None = None
        if config.oidc and config.oidc.jwks_url:
            self._jwks = jwt.PyJWKClient(config.oidc.jwks_url, cache_keys=True, lifespan=300, timeout=5)

    def authenticate(self, header: str | None) -> Principal:
        if not header:
            raise AuthError("missing Authorization: Bearer token")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthError("use Authorization: Bearer <token>")
        if self._config.oidc is not None and credential.count(".") == 2:
            return self._from_jwt(credential, self._config.oidc)
        return self._from_token(credential)

    def _from_token(self, credential: str) -> Principal:
        digest = hash_token(credential)
        match = None
        # Compare against every entry so the time taken does not depend on which one matches.
        for entry in self._tokens:
            if hmac.compare_digest(digest, entry.sha256):
                match = entry
        if match is None:
            raise AuthError("invalid token")
        role = self._config.roles[match.role]
        return Principal(match.name, match.role, match.tenants, role.all_tenants, match.rate_limit)

    def _signing_key(self, token: str, oidc: OidcConfig) -> object:
        if self._jwks is not None:
            try:
                return self._jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientConnectionError:
                raise  # transient: the caller turns it into a 503
            except jwt.PyJWKClientError as exc:
                raise AuthError(f"invalid bearer token: {exc}") from None
        return oidc.public_key

    def _from_jwt(self, token: str, oidc: OidcConfig) -> Principal:
        try:
            key = self._signing_key(token, oidc)
            claims = jwt.decode(
                token,
                key=key,  # type: ignore[arg-type]
                algorithms=list(oidc.algorithms),
                audience=oidc.audience,
                issuer=oidc.issuer,
                leeway=oidc.leeway_seconds,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWKClientConnectionError:
            raise
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid bearer token: {exc}") from None
        role = claims.get(oidc.role_claim, oidc.default_role)
        if not isinstance(role, str) or role not in self._config.roles:
            raise ForbiddenError(f"token has no known role in claim {oidc.role_claim!r}")
        tenants = _claim_tenants(claims.get(oidc.tenants_claim))
        all_tenants = self._config.roles[role].all_tenants
        if not all_tenants and not tenants:
            raise ForbiddenError(f"token has no tenants in claim {oidc.tenants_claim!r}")
        return Principal(f"jwt:{claims['sub']}", role, tenants, all_tenants)


def _claim_tenants(value: object) -> tuple[str, ...]:
    """A tenants claim: a list or a space/comma separated string; invalid names are refused, not dropped."""
    if value is None:
        return ()
    items: Sequence[object]
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, list):
        items = value
    else:
        raise ForbiddenError("tenants claim must be a list or a string")
    tenants = []
    for item in items:
        if not isinstance(item, str) or not TENANT_RE.match(item):
            raise ForbiddenError("tenants claim holds an invalid tenant name")
        tenants.append(item)
    return tuple(tenants)
