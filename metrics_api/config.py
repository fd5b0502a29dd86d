"""The metrics API's YAML config: parsed, validated (errors name the key), then one immutable object."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporters.common.config import ConfigError, check_keys, load_yaml_mapping, parse_duration, read_secret
from metrics_api.params import format_seconds

# Tenant names go into PromQL regexes and label values: a conservative charset keeps them unambiguous.
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
LABEL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

DEFAULT_ROLES: dict[str, Mapping[str, Any]] = {
    "admin": {"all_tenants": True},
    "operator": {"all_tenants": True},
    "viewer": {"all_tenants": False},
}


@dataclass(frozen=True)
class Role:
    """A role: whether it sees every tenant (no tenant matcher is enforced)."""

    name: str
    all_tenants: bool = False


@dataclass(frozen=True)
class TokenEntry:
    """An API token, known only by the sha256 of its value."""

    name: str
    sha256: bytes
    role: str
    tenants: tuple[str, ...]
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class SensitiveRule:
    """Metric names matching `pattern` (fully anchored) are readable only by `roles`."""

    pattern: str
    roles: frozenset[str]

    def matches(self, metric_name: str) -> bool:
        return re.fullmatch(self.pattern, metric_name) is not None


@dataclass(frozen=True)
class OidcConfig:
    """Bearer JWTs verified against a JWKS URL or a static public key."""

    issuer: str | None
    audience: str | None
    jwks_url: str | None
    public_key: str | None
    algorithms: tuple[str, ...]
    role_claim: str
    tenants_claim: str
    default_role: str | None
    leeway_seconds: float


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask of Prometheus."""

    query_timeout_seconds: float = 30.0
    max_range_seconds: float = 31 * 86400.0
    max_points_per_series: int = 11000
    max_series: int = 10000
    max_samples: int = 5_000_000
    max_query_length: int = 16384
    max_page_size: int = 1000


@dataclass(frozen=True)
class CacheConfig:
    ttl_seconds: float = 10.0
    max_entries: int = 2048


@dataclass(frozen=True)
class RateLimit:
    """Token bucket per principal."""

    requests_per_second: float = 20.0
    burst: int = 40


@dataclass(frozen=True)
class Config:
    """Everything the service needs, validated."""

    prometheus_url: str
    prometheus_bearer_token: str | None = None
    prometheus_ca_file: str | None = None
    tenant_label: str = "tenant"
    tenancy_mode: str = "label"
    tenancy_refresh_seconds: float = 30.0
    roles: Mapping[str, Role] = field(default_factory=dict)
    tokens: tuple[TokenEntry, ...] = ()
    sensitive: tuple[SensitiveRule, ...] = ()
    oidc: OidcConfig | None = None
    limits: Limits = field(default_factory=Limits)
    cache: CacheConfig = field(default_factory=CacheConfig)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    audit_file: str | None = None
    rate_interval: str = "5m"


_TOP = {
    "prometheus",
    "tenancy",
    "roles",
    "tokens",
    "sensitive_metrics",
    "oidc",
    "limits",
    "cache",
    "rate_limit",
    "audit",
    "aggregation",
}


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, "must be a mapping")
    return value


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(key, "must be a positive integer")
    return value


def _positive_float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(key, "must be a positive number")
    return float(value)


def _tenants(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(key, "must be a list of tenant names")
    for tenant in value:
        if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
            raise ConfigError(key, f"{tenant!r} is not a valid tenant name ([A-Za-z0-9][A-Za-z0-9_.:-]*)")
    return tuple(value)


def hash_token(token: str) -> bytes:
    """Tokens are high-entropy random strings, so one fixed-cost sha256 is the right hash (no bcrypt cost)."""
    return hashlib.sha256(token.encode()).digest()


def _prometheus(section: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    check_keys(section, {"url", "bearer_token_env", "bearer_token_file", "ca_file"}, "prometheus")
    url = section.get("url")
    if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
        raise ConfigError("prometheus.url", "must be an http:// or https:// URL of Prometheus")
    token = read_secret(
        section.get("bearer_token_env"), section.get("bearer_token_file"), "prometheus.bearer_token"
    )
    ca = section.get("ca_file")
    if ca is not None and not Path(str(ca)).is_file():
        raise ConfigError("prometheus.ca_file", f"no such file: {ca}")
    return url.rstrip("/"), token, ca


def _roles(section: Mapping[str, Any]) -> dict[str, Role]:
    raw = section or DEFAULT_ROLES
    roles: dict[str, Role] = {}
    for name, spec in raw.items():
        key = f"roles.{name}"
        spec = _mapping(spec, key)
        check_keys(spec, {"all_tenants"}, key)
        all_tenants = spec.get("all_tenants", False)
        if not isinstance(all_tenants, bool):
            raise ConfigError(f"{key}.all_tenants", "must be true or false")
        roles[str(name)] = Role(str(name), all_tenants)
    return roles


def _token(index: int, spec: Any, roles: Mapping[str, Role]) -> TokenEntry:
    key = f"tokens[{index}]"
    spec = _mapping(spec, key)
    check_keys(spec, {"name", "role", "tenants", "sha256", "token_env", "token_file", "rate_limit"}, key)
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key}.name", "required: a name for audit logs and rate limits")
    role = spec.get("role")
    if role not in roles:
        raise ConfigError(f"{key}.role", f"unknown role {role!r} (defined: {', '.join(sorted(roles))})")
    tenants = _tenants(spec.get("tenants"), f"{key}.tenants")
    if not roles[role].all_tenants and not tenants:
        raise ConfigError(f"{key}.tenants", f"role {role} is tenant-scoped: give at least one tenant")
    sources = [k for k in ("sha256", "token_env", "token_file") if spec.get(k)]
    if len(sources) != 1:
        raise ConfigError(key, "give exactly one of sha256, token_env, token_file")
    if spec.get("sha256"):
        hexdigest = str(spec["sha256"]).lower()
        if not _SHA256_RE.match(hexdigest):
            raise ConfigError(
                f"{key}.sha256", "must be 64 hex digits (see `novacron-metrics-api hash-token`)"
            )
        digest = bytes.fromhex(hexdigest)
    else:
        secret = read_secret(spec.get("token_env"), spec.get("token_file"), f"{key}.{sources[0]}")
        if not secret:
            raise ConfigError(f"{key}.{sources[0]}", "the token is empty or the variable is not set")
        if len(secret) < 16:
            raise ConfigError(f"{key}.{sources[0]}", "tokens must have at least 16 characters")
        digest = hash_token(secret)
    rate = None
    if spec.get("rate_limit") is not None:
        rate = _rate_limit(_mapping(spec["rate_limit"], f"{key}.rate_limit"), f"{key}.rate_limit")
    return TokenEntry(name, digest, str(role), tenants, rate)


def _rate_limit(section: Mapping[str, Any], key: str) -> RateLimit:
    check_keys(section, {"requests_per_second", "burst"}, key)
    return RateLimit(
        requests_per_second=_positive_float(
            section.get("requests_per_second", 20.0), f"{key}.requests_per_second"
        ),
        burst=_positive_int(section.get("burst", 40), f"{key}.burst"),
    )


def _sensitive(value: Any, roles: Mapping[str, Role]) -> tuple[SensitiveRule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("sensitive_metrics", "must be a list of {match, roles}")
    rules = []
    for i, spec in enumerate(value):
        key = f"sensitive_metrics[{i}]"
        spec = _mapping(spec, key)
        check_keys(spec, {"match", "roles"}, key)
        pattern = spec.get("match")
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"{key}.match", "required: a regular expression over metric names")
        if '"' in pattern or "\\" in pattern:
            raise ConfigError(f"{key}.match", "must not contain quotes or backslashes (use [.] for a dot)")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{key}.match", f"invalid regular expression: {exc}") from None
        allowed = spec.get("roles") or []
        if not isinstance(allowed, list) or any(r not in roles for r in allowed):
            raise ConfigError(f"{key}.roles", f"must list defined roles ({', '.join(sorted(roles))})")
        rules.append(SensitiveRule(pattern, frozenset(allowed)))
    return tuple(rules)


def _oidc(section: Mapping[str, Any], roles: Mapping[str, Role]) -> OidcConfig | None:
    if not section:
        return None
    allowed = {
        "issuer",
        "audience",
        "jwks_url",
        "public_key_file",
        "algorithms",
        "role_claim",
        "tenants_claim",
        "default_role",
        "leeway",
    }
    check_keys(section, allowed, "oidc")
    jwks_url, key_file = section.get("jwks_url"), section.get("public_key_file")
    if bool(jwks_url) == bool(key_file):
        raise ConfigError("oidc", "give exactly one of jwks_url, public_key_file")
    public_key = None
    if key_file:
        try:
            public_key = Path(str(key_file)).read_text()
        except OSError as exc:
            raise ConfigError("oidc.public_key_file", f"cannot read {key_file}: {exc.strerror}") from None
    algorithms = section.get("algorithms", ["RS256", "ES256"])
    asymmetric = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}
    if not isinstance(algorithms, list) or not algorithms or any(a not in asymmetric for a in algorithms):
        raise ConfigError(
            "oidc.algorithms", f"must be a list of asymmetric algorithms ({', '.join(sorted(asymmetric))})"
        )
    default_role = section.get("default_role")
    if default_role is not None and default_role not in roles:
        raise ConfigError("oidc.default_role", f"unknown role {default_role!r}")
    leeway = section.get("leeway", 30)
    return OidcConfig(
        issuer=section.get("issuer"),
        audience=section.get("audience"),
        jwks_url=jwks_url,
        public_key=public_key,
        algorithms=tuple(algorithms),
        role_claim=str(section.get("role_claim", "novacron_role")),
        tenants_claim=str(section.get("tenants_claim", "novacron_tenants")),
        default_role=default_role,
        leeway_seconds=parse_duration(leeway, "oidc.leeway") if leeway else 0.0,
    )


def _limits(section: Mapping[str, Any]) -> Limits:
    check_keys(
        section,
        {
            "query_timeout",
            "max_range",
            "max_points_per_series",
            "max_series",
            "max_samples",
            "max_query_length",
            "max_page_size",
        },
        "limits",
    )
    d = Limits()
    return Limits(
        query_timeout_seconds=parse_duration(
            section.get("query_timeout", d.query_timeout_seconds), "limits.query_timeout"
        ),
        max_range_seconds=parse_duration(section.get("max_range", d.max_range_seconds), "limits.max_range"),
        max_points_per_series=_positive_int(
            section.get("max_points_per_series", d.max_points_per_series), "limits.max_points_per_series"
        ),
        max_series=_positive_int(section.get("max_series", d.max_series), "limits.max_series"),
        max_samples=_positive_int(section.get("max_samples", d.max_samples), "limits.max_samples"),
        max_query_length=_positive_int(
            section.get("max_query_length", d.max_query_length), "limits.max_query_length"
        ),
        max_page_size=_positive_int(section.get("max_page_size", d.max_page_size), "limits.max_page_size"),
    )


def build_config(data: Mapping[str, Any]) -> Config:
    """Validate a parsed YAML mapping into a Config (raises ConfigError naming the key)."""
    check_keys(data, _TOP, "")
    url, prom_token, ca = _prometheus(_mapping(data.get("prometheus"), "prometheus"))
    tenancy = _mapping(data.get("tenancy"), "tenancy")
    check_keys(tenancy, {"mode", "label", "refresh"}, "tenancy")
    tenant_label = tenancy.get("label", "tenant")
    if not isinstance(tenant_label, str) or not LABEL_NAME_RE.match(tenant_label):
        raise ConfigError("tenancy.label", "must be a Prometheus label name")
    mode = tenancy.get("mode", "label")
    if mode not in ("label", "vm_id"):
        raise ConfigError("tenancy.mode", "must be label (series carry the tenant label) or vm_id")
    roles = _roles(_mapping(data.get("roles"), "roles"))
    tokens_raw = data.get("tokens") or []
    if not isinstance(tokens_raw, list):
        raise ConfigError("tokens", "must be a list")
    tokens = tuple(_token(i, spec, roles) for i, spec in enumerate(tokens_raw))
    names = [t.name for t in tokens]
    if len(set(names)) != len(names):
        raise ConfigError("tokens", "token names must be unique")
    oidc = _oidc(_mapping(data.get("oidc"), "oidc"), roles)
    if not tokens and oidc is None:
        raise ConfigError("tokens", "configure at least one token or oidc (the API never runs open)")
    cache = _mapping(data.get("cache"), "cache")
    check_keys(cache, {"ttl", "max_entries"}, "cache")
    audit = _mapping(data.get("audit"), "audit")
    check_keys(audit, {"file"}, "audit")
    agg = _mapping(data.get("aggregation"), "aggregation")
    check_keys(agg, {"rate_interval"}, "aggregation")
    # Spelled out again as a PromQL duration: it goes into queries, where `300` or `1.5m` are not valid.
    rate_seconds = parse_duration(agg.get("rate_interval", "5m"), "aggregation.rate_interval")
    rate_interval = format_seconds(rate_seconds)
    return Config(
        prometheus_url=url,
        prometheus_bearer_token=prom_token,
        prometheus_ca_file=ca,
        tenant_label=tenant_label,
        tenancy_mode=mode,
        tenancy_refresh_seconds=parse_duration(tenancy.get("refresh", 30), "tenancy.refresh"),
        roles=roles,
        tokens=tokens,
        sensitive=_sensitive(data.get("sensitive_metrics"), roles),
        oidc=oidc,
        limits=_limits(_mapping(data.get("limits"), "limits")),
        cache=CacheConfig(
            ttl_seconds=parse_duration(cache.get("ttl", 10), "cache.ttl") if cache.get("ttl", 10) else 0.0,
            max_entries=_positive_int(cache.get("max_entries", 2048), "cache.max_entries"),
        ),
        rate_limit=_rate_limit(_mapping(data.get("rate_limit"), "rate_limit"), "rate_limit"),
        audit_file=str(audit["file"]) if audit.get("file") else None,
        rate_interval=rate_interval,
    )


def load_config(path: str) -> Config:
    """Read and validate the config file."""
    return build_config(load_yaml_mapping(path, "config.file"))


def write_demo_config(directory: Path, prometheus_url: str, tenants: tuple[str, ...] = ()) -> Path:
    """A ready config for `novacron up`: random tokens in 0600 files beside it, `vm_id` tenancy.

    Writes `admin.token` and one `tenant-<name>.token` per tenant, and `metrics-api.yml` referring to them
    by `token_file` (the config never holds a token). Returns the config path.
    """
    import yaml

    from exporters.common.config import ensure_secret_file

    directory.mkdir(parents=True, exist_ok=True)

    def token_file(name: str) -> str:
        # Kept across restarts of the stack, so clients keep working.
        return str(ensure_secret_file(directory / f"{name}.token"))

    tokens: list[dict[str, Any]] = [{"name": "admin", "role": "admin", "token_file": token_file("admin")}]
    for tenant in tenants:
        tokens.append(
            {
                "name": f"tenant-{tenant}",
                "role": "viewer",
                "tenants": [tenant],
                "token_file": token_file(f"tenant-{tenant}"),
            }
        )
    config = {
        "prometheus": {"url": prometheus_url},
        "tenancy": {"mode": "vm_id", "refresh": "15s"},
        "tokens": tokens,
        "aggregation": {"rate_interval": "1m"},
        "audit": {"file": str(directory / "audit.jsonl")},
    }
    path = directory / "metrics-api.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    build_config(config)  # what we write must load
    return path
