"""API tokens with roles (viewer, webhook, operator, admin): stored as SHA-256, constant-time compared."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select, update

from alert_bridge.config import ROLES, TokenSpec
from alert_bridge.db import Database, insert_id, tokens

ADMIN_ENV = "NOVACRON_BRIDGE_ADMIN_TOKEN"
CACHE_SECONDS = 5.0  # a revoked token stops working on every replica within this time

# What each role may do; `webhook` is the least privilege Alertmanager needs.
ROLE_RANK = {"viewer": 1, "webhook": 1, "operator": 2, "admin": 3}


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    role: str

    def can(self, needed: str) -> bool:
        if needed == "webhook":
            return self.role in ("webhook", "operator", "admin")
        if needed == "viewer":
            return self.role in ("viewer", "operator", "admin")
        return ROLE_RANK[self.role] >= ROLE_RANK[needed]


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so a fast hash is safe; bcrypt would cap intake at a few requests/s.
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "ncb_" + secrets.token_urlsafe(32)


class TokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, Principal] = {}
        self._loaded = 0.0
        self._lock = threading.Lock()

    def ensure(self, spec: TokenSpec, actor: str = "config") -> None:
        """Register a token from config or the environment (idempotent across restarts)."""
        digest = hash_token(spec.token)
        with self.db.write() as conn:
            found = conn.execute(select(tokens.c.id).where(tokens.c.token_hash == digest)).first()
            if found is None:
                conn.execute(
                    tokens.insert().values(
                        name=spec.name,
                        role=spec.role,
                        token_hash=digest,
                        created_at=time.time(),
                        created_by=actor,
                    )
                )
            else:
                conn.execute(
                    update(tokens).where(tokens.c.id == found[0]).values(role=spec.role, revoked_at=None)
                )
        self._loaded = 0.0

    def create(self, name: str, role: str, actor: str) -> tuple[int, str]:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        token = new_token()
        with self.db.write() as conn:
            token_id = insert_id(
                conn,
                tokens.insert().values(
                    name=name,
                    role=role,
                    token_hash=hash_token(token),
                    created_at=time.time(),
                    created_by=actor,
                ),
            )
        self._loaded = 0.0
        return int(token_id), token

    def revoke(self, token_id: int) -> bool:
        with self.db.write() as conn:
            changed = conn.execute(
                update(tokens)
                .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            ).rowcount
        self._loaded = 0.0
        return bool(changed)

    def list(self) -> list[dict[str, object]]:
        with self.db.read() as conn:
            rows = conn.execute(select(tokens).order_by(tokens.c.id)).mappings().all()
        return [
            {
                "id": r["id"],
                "name": r["name"],
                "role": r["role"],
                "createdBy": r["created_by"],
                "revoked": bool(r["revoked_at"]),
            }
            for r in rows
        ]

    def authenticate(self, presented: str | None) -> Principal | None:
        if not presented:
            return None
        digest = hash_token(presented)
        cache = self._fresh_cache()
        # Constant-time comparison against every stored hash: timing reveals nothing about near-misses.
        found = None
        for stored, principal in cache.items():
            if hmac.compare_digest(stored, digest):
                found = principal
        return found

    def by_id(self, token_id: int) -> Principal | None:
        """The still-valid token behind a UI session (a revoked token ends its sessions too)."""
        for principal in self._fresh_cache().values():
            if principal.token_id == token_id:
                return principal
        return None

    def _fresh_cache(self) -> dict[str, Principal]:
        if time.monotonic() - self._loaded < CACHE_SECONDS:
            return self._cache
        with self._lock:
            with self.db.read() as conn:
                rows = conn.execute(select(tokens).where(tokens.c.revoked_at.is_(None))).mappings().all()
            self._cache = {r["token_hash"]: Principal(r["id"], r["name"], r["role"]) for r in rows}
            self._loaded = time.monotonic()
        return self._cache
