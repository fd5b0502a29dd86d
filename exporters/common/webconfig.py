"""The exporter-toolkit web config file (`--web.config.file`): TLS and bcrypt basic auth."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporters.common.config import ConfigError, check_keys, load_yaml_mapping

_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version"}


@dataclass(frozen=True)
class WebConfig:
    """Parsed web config: an optional TLS context and bcrypt-hashed users."""

    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    client_auth_type: str = "NoClientCert"
    users: dict[str, bytes] = field(default_factory=dict)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.cert_file:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            ctx.load_verify_locations(self.client_ca_file)
            if self.client_auth_type == "RequireAndVerifyClientCert":
                ctx.verify_mode = ssl.CERT_REQUIRED
            else:
                ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def check_basic_auth(self, username: str | None, password: str | None) -> bool:
        """True when no users are configured, or the pair matches a bcrypt hash."""
        if not self.users:
            return True
        if username is None or password is None:
            return False
        import bcrypt

        # Compare against a dummy hash for unknown users so timing does not reveal which names exist.
        hashed = self.users.get(username, _DUMMY_HASH)
        return bcrypt.checkpw(password.encode(), hashed) and username in self.users


_DUMMY_HASH = b"$2b$10$CwTycUXWue0Thq9StjUM0uJ8.0p1o1f6Y8Zt9b5cQhV0V7oQm6Z1e"


def load_web_config(path: str | None) -> WebConfig:
    """Load and validate a web config file; no path means plain HTTP without auth."""
    if not path:
        return WebConfig()
    data = load_yaml_mapping(path, "web.config.file")
    check_keys(data, _TOP_KEYS, "")
    tls: dict[str, Any] = dict(data.get("tls_server_config") or {})
    check_keys(tls, _TLS_KEYS, "tls_server_config")
    cert, key = tls.get("cert_file"), tls.get("key_file")
    if bool(cert) != bool(key):
        raise ConfigError("tls_server_config", "cert_file and key_file must be given together")
    for name in ("cert_file", "key_file", "client_ca_file"):
        if tls.get(name) and not Path(tls[name]).is_file():
            raise ConfigError(f"tls_server_config.{name}", f"no such file: {tls[name]}")
    users_raw = data.get("basic_auth_users") or {}
    if not isinstance(users_raw, dict):
        raise ConfigError("basic_auth_users", "must be a mapping of user name to bcrypt hash")
    users: dict[str, bytes] = {}
    for name, hashed in users_raw.items():
        if not isinstance(hashed, str) or not hashed.startswith("$2"):
            raise ConfigError(f"basic_auth_users.{name}", "must be a bcrypt hash ($2a$/$2b$/$2y$...)")
        users[str(name)] = hashed.encode()
    return WebConfig(
        cert_file=cert,
        key_file=key,
        client_ca_file=tls.get("client_ca_file"),
        client_auth_type=str(tls.get("client_auth_type", "NoClientCert")),
        users=users,
    )
