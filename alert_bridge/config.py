"""The bridge's YAML config: parsed, validated (errors name the key), frozen into typed objects."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alert_bridge.automation import AutomationConfig, parse_automation
from alert_bridge.enrichment import EnrichmentConfig, parse_enrichment
from exporters.common.config import ConfigError, check_keys, parse_number, read_secret

SEVERITIES = ("none", "info", "warning", "error", "critical", "page")
ROLES = ("viewer", "webhook", "operator", "admin")
CHANNEL_TYPES = ("email", "webhook", "sms", "grafana")


def severity_rank(severity: str | None) -> int:
    """Order of severities; an unknown value ranks like `warning` so it is never silently dropped."""
    if not severity:
        return SEVERITIES.index("warning")
    try:
        return SEVERITIES.index(severity.lower())
    except ValueError:
        return SEVERITIES.index("warning")


@dataclass(frozen=True)
class TimeWindow:
    """A daily window `HH:MM-HH:MM` in a time zone; it may wrap past midnight."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        # An end of 24:00 is kept as time.max: it holds up to and including the day's last microsecond.
        before_end = moment < self.end or self.end == time.max
        if self.start <= self.end:
            return self.start <= moment and before_end
        return moment >= self.start or before_end


@dataclass(frozen=True)
class ChannelConfig:
    """One notification channel; `options` holds the type-specific, validated settings."""

    name: str
    type: str
    options: Mapping[str, Any] = field(repr=False)  # may hold a secret URL or secret headers
    secret: str | None = field(default=None, repr=False)
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class EscalationStep:
    after_minutes: float
    channels: tuple[str, ...]
    users: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """A routing policy: label matchers, optional time of day, channels, users, repeat and escalation."""

    name: str
    match: Mapping[str, str]
    match_re: Mapping[str, re.Pattern[str]]
    min_severity: str | None
    hours: TimeWindow | None
    channels: tuple[str, ...]
    users: tuple[str, ...]
    repeat_minutes: float | None
    notify_resolved: bool
    escalation: tuple[EscalationStep, ...]


@dataclass(frozen=True)
class UserPrefs:
    """A person's own preferences: where to reach them, quiet hours, the lowest severity they want."""

    name: str
    email: str | None
    phone: str | None
    channels: tuple[str, ...]
    min_severity: str
    quiet_hours: TimeWindow | None


@dataclass(frozen=True)
class TokenSpec:
    name: str
    role: str
    token: str


@dataclass(frozen=True)
class BridgeConfig:
    """Everything the bridge reads from `--config.file`, immutable after load."""

    channels: Mapping[str, ChannelConfig] = field(default_factory=dict)
    policies: tuple[Policy, ...] = ()
    default_channels: tuple[str, ...] = ()
    default_notify_resolved: bool = True
    users: Mapping[str, UserPrefs] = field(default_factory=dict)
    timezone: str = "UTC"
    tokens: tuple[TokenSpec, ...] = ()
    lease_seconds: float = 5 * 3600.0
    incident_group_by: tuple[str, ...] = ()
    storm_threshold: int = 20
    storm_window_seconds: float = 60.0
    alertmanager_urls: tuple[str, ...] = ()
    reconcile_interval_seconds: float = 0.0
    ack_silence_minutes: float = 0.0
    worker_interval_seconds: float = 0.2
    max_attempts: int = 8
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    breaker_failures: int = 5
    breaker_reset_seconds: float = 30.0
    external_url: str = ""
    session_secret: str | None = None
    heartbeat_alertname: str = ""
    heartbeat_timeout_seconds: float = 300.0
    heartbeat_channels: tuple[str, ...] = ()
    automation: AutomationConfig = field(default_factory=AutomationConfig)
    enrichment: EnrichmentConfig = field(default_factory=EnrichmentConfig)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


_TOP = {
    "channels",
    "routing",
    "users",
    "auth",
    "intake",
    "incidents",
    "alertmanager",
    "delivery",
    "ui",
    "timezone",
    "heartbeat",
    "automation",
    "enrichment",
}


def parse_config(data: Mapping[str, Any]) -> BridgeConfig:
    """Validate the whole mapping; the first problem raises ConfigError naming its dotted key."""
    check_keys(data, _TOP, "")
    tz = _str(data, "timezone", "timezone", "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("timezone", f"unknown time zone {tz!r}") from None
    channels = _channels(_section(data, "channels"))
    users = _users(_section(data, "users"), channels)
    routing = _section(data, "routing")
    check_keys(routing, {"policies", "default_channels", "notify_resolved"}, "routing")
    default_channels = _names(routing, "default_channels", "routing.default_channels", channels)
    if "default_channels" not in routing:
        # No routing at all: every configured channel gets every alert (the simplest useful set-up).
        default_channels = tuple(channels)
    policies = _policies(routing.get("policies") or [], channels, users)
    intake = _section(data, "intake")
    check_keys(intake, {"lease_seconds"}, "intake")
    incidents = _section(data, "incidents")
    check_keys(incidents, {"group_by", "storm_threshold", "storm_window_seconds"}, "incidents")
    am = _section(data, "alertmanager")
    check_keys(am, {"urls", "reconcile_interval_seconds", "ack_silence_minutes"}, "alertmanager")
    delivery = _section(data, "delivery")
    delivery_keys = {
        "worker_interval_seconds",
        "max_attempts",
        "backoff_base_seconds",
        "backoff_max_seconds",
        "breaker_failures",
        "breaker_reset_seconds",
    }
    check_keys(delivery, delivery_keys, "delivery")
    ui = _section(data, "ui")
    check_keys(ui, {"external_url", "session_secret_env", "session_secret_file"}, "ui")
    heartbeat = _section(data, "heartbeat")
    check_keys(heartbeat, {"alertname", "timeout_seconds", "channels"}, "heartbeat")
    heartbeat_channels = _names(heartbeat, "channels", "heartbeat.channels", channels) or default_channels
    return BridgeConfig(
        channels=channels,
        policies=policies,
        default_channels=default_channels,
        default_notify_resolved=_bool(routing, "notify_resolved", "routing.notify_resolved", True),
        users=users,
        timezone=tz,
        tokens=_tokens(_section(data, "auth")),
        lease_seconds=_num(intake, "lease_seconds", "intake.lease_seconds", 5 * 3600.0, minimum=1),
        incident_group_by=tuple(_str_list(incidents, "group_by", "incidents.group_by")),
        storm_threshold=int(_num(incidents, "storm_threshold", "incidents.storm_threshold", 20, minimum=1)),
        storm_window_seconds=_num(
            incidents, "storm_window_seconds", "incidents.storm_window_seconds", 60.0, minimum=1
        ),
        alertmanager_urls=tuple(u.rstrip("/") for u in _urls(am, "urls", "alertmanager.urls")),
        reconcile_interval_seconds=_num(
            am, "reconcile_interval_seconds", "alertmanager.reconcile_interval_seconds", 0.0, minimum=0
        ),
        ack_silence_minutes=_num(
            am, "ack_silence_minutes", "alertmanager.ack_silence_minutes", 0.0, minimum=0
        ),
        worker_interval_seconds=_num(
            delivery, "worker_interval_seconds", "delivery.worker_interval_seconds", 0.2, minimum=0.01
        ),
        max_attempts=int(_num(delivery, "max_attempts", "delivery.max_attempts", 8, minimum=1)),
        backoff_base_seconds=_num(
            delivery, "backoff_base_seconds", "delivery.backoff_base_seconds", 1.0, minimum=0.01
        ),
        backoff_max_seconds=_num(
            delivery, "backoff_max_seconds", "delivery.backoff_max_seconds", 300.0, minimum=0.01
        ),
        breaker_failures=int(_num(delivery, "breaker_failures", "delivery.breaker_failures", 5, minimum=1)),
        breaker_reset_seconds=_num(
            delivery, "breaker_reset_seconds", "delivery.breaker_reset_seconds", 30.0, minimum=0.1
        ),
        external_url=_str(ui, "external_url", "ui.external_url", "").rstrip("/"),
        session_secret=read_secret(
            env=ui.get("session_secret_env"), file=ui.get("session_secret_file"), key="ui.session_secret_file"
        ),
        heartbeat_alertname=_str(heartbeat, "alertname", "heartbeat.alertname", ""),
        heartbeat_timeout_seconds=_num(
            heartbeat, "timeout_seconds", "heartbeat.timeout_seconds", 300.0, minimum=1
        ),
        heartbeat_channels=heartbeat_channels,
        automation=parse_automation(_section(data, "automation"), channels),
        enrichment=parse_enrichment(_section(data, "enrichment")),
    )


# --- sections ------------------------------------------------------------------------------------------

_EMAIL_KEYS = {"type", "smtp", "from", "to", "subject_prefix", "timeout_seconds"}
_SMTP_KEYS = {"host", "port", "starttls", "ssl", "username", "password_env", "password_file", "ca_file"}
_WEBHOOK_KEYS = {
    "type",
    "url",
    "url_file",
    "secret_env",
    "secret_file",
    "timeout_seconds",
    "headers",
    "secret_headers",
}
_SMS_KEYS = {
    "type",
    "base_url",
    "account_sid",
    "auth_token_env",
    "auth_token_file",
    "from",
    "to",
    "timeout_seconds",
}
_GRAFANA_KEYS = {"type", "url", "token_env", "token_file", "dashboard_uid", "tags", "timeout_seconds"}


def _channels(section: Mapping[str, Any]) -> dict[str, ChannelConfig]:
    out: dict[str, ChannelConfig] = {}
    for name, raw in section.items():
        key = f"channels.{name}"
        if not isinstance(raw, Mapping):
            raise ConfigError(key, "must be a mapping")
        ctype = raw.get("type", name)
        if ctype not in CHANNEL_TYPES:
            raise ConfigError(f"{key}.type", f"must be one of {', '.join(CHANNEL_TYPES)} (got {ctype!r})")
        timeout = _num(raw, "timeout_seconds", f"{key}.timeout_seconds", 10.0, minimum=0.1)
        out[str(name)] = _CHANNEL_PARSERS[ctype](str(name), raw, key, timeout)
    return out


def _email(name: str, raw: Mapping[str, Any], key: str, timeout: float) -> ChannelConfig:
    check_keys(raw, _EMAIL_KEYS, key)
    smtp = raw.get("smtp")
    if not isinstance(smtp, Mapping):
        raise ConfigError(f"{key}.smtp", "required mapping with host and port")
    check_keys(smtp, _SMTP_KEYS, f"{key}.smtp")
    host = _str(smtp, "host", f"{key}.smtp.host", None)
    port = int(_num(smtp, "port", f"{key}.smtp.port", 25, minimum=1))
    if port > 65535:
        raise ConfigError(f"{key}.smtp.port", "must be a TCP port (1-65535)")
    sender = _str(raw, "from", f"{key}.from", None)
    to = _str_list(raw, "to", f"{key}.to")
    password = read_secret(
        smtp.get("password_env"), smtp.get("password_file"), key=f"{key}.smtp.password_file"
    )
    username = smtp.get("username")
    if username is not None and not isinstance(username, str):
        raise ConfigError(f"{key}.smtp.username", "must be a string")
    if username and password is None:
        raise ConfigError(
            f"{key}.smtp.password_env", "username is set but no password in the env var or file"
        )
    options = {
        "host": host,
        "port": port,
        "starttls": _bool(smtp, "starttls", f"{key}.smtp.starttls", False),
        "ssl": _bool(smtp, "ssl", f"{key}.smtp.ssl", False),
        "username": username,
        "ca_file": _ca_file(smtp, f"{key}.smtp.ca_file"),
        "from": sender,
        "to": tuple(to),
        "subject_prefix": _str(raw, "subject_prefix", f"{key}.subject_prefix", "[NovaCron]"),
    }
    return ChannelConfig(name, "email", options, password, timeout)


def _ca_file(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get("ca_file")
    if value is None:
        return None
    if not isinstance(value, str) or not Path(value).is_file():
        raise ConfigError(key, f"must name a readable CA bundle file (got {value!r})")
    return value


def _webhook(name: str, raw: Mapping[str, Any], key: str, timeout: float) -> ChannelConfig:
    check_keys(raw, _WEBHOOK_KEYS, key)
    url = _webhook_url(raw, key)
    secret = read_secret(raw.get("secret_env"), raw.get("secret_file"), key=f"{key}.secret_file")
    headers = raw.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{key}.headers", "must map header names to strings")
    headers = {**headers, **_secret_headers(raw.get("secret_headers") or {}, f"{key}.secret_headers")}
    return ChannelConfig(name, "webhook", {"url": url, "headers": headers}, secret, timeout)


def _webhook_url(raw: Mapping[str, Any], key: str) -> str:
    """`url`, or `url_file` for endpoints whose URL is itself the secret (Slack, Teams, Discord hooks)."""
    if ("url" in raw) == ("url_file" in raw):
        raise ConfigError(f"{key}.url", "give exactly one of url and url_file")
    if "url" in raw:
        return _url(raw, "url", f"{key}.url")
    value = read_secret(file=str(raw["url_file"]), key=f"{key}.url_file") or ""
    if not re.match(r"^https?://[^\s/]+", value):  # the value is a secret: never echoed
        raise ConfigError(f"{key}.url_file", "the file must hold one http(s) URL")
    return value.rstrip("/")


def _secret_headers(raw: Any, key: str) -> dict[str, str]:
    """Headers whose values are secrets (`Authorization: Bearer ...`): `{Name: {env: VAR} | {file: path}}`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(key, "must map header names to {env: VAR} or {file: path}")
    headers = {}
    for name, source in raw.items():
        if not isinstance(source, Mapping):
            raise ConfigError(f"{key}.{name}", "must be {env: VAR} or {file: path}")
        check_keys(source, {"env", "file"}, f"{key}.{name}")
        value = read_secret(source.get("env"), source.get("file"), key=f"{key}.{name}")
        if not value:
            raise ConfigError(f"{key}.{name}", "the environment variable or file is empty or missing")
        headers[str(name)] = value
    return headers


def _sms(name: str, raw: Mapping[str, Any], key: str, timeout: float) -> ChannelConfig:
    check_keys(raw, _SMS_KEYS, key)
    token = read_secret(raw.get("auth_token_env"), raw.get("auth_token_file"), key=f"{key}.auth_token_file")
    if token is None:
        raise ConfigError(
            f"{key}.auth_token_env", "the Twilio auth token must come from an env var or a file"
        )
    options = {
        "base_url": _url(raw, "base_url", f"{key}.base_url", "https://api.twilio.com"),
        "account_sid": _str(raw, "account_sid", f"{key}.account_sid", None),
        "from": _str(raw, "from", f"{key}.from", None),
        "to": tuple(_str_list(raw, "to", f"{key}.to")),
    }
    return ChannelConfig(name, "sms", options, token, timeout)


def _grafana(name: str, raw: Mapping[str, Any], key: str, timeout: float) -> ChannelConfig:
    check_keys(raw, _GRAFANA_KEYS, key)
    token = read_secret(raw.get("token_env"), raw.get("token_file"), key=f"{key}.token_file")
    options = {
        "url": _url(raw, "url", f"{key}.url"),
        "dashboard_uid": raw.get("dashboard_uid"),
        "tags": tuple(_str_list(raw, "tags", f"{key}.tags")),
    }
    return ChannelConfig(name, "grafana", options, token, timeout)


_CHANNEL_PARSERS = {"email": _email, "webhook": _webhook, "sms": _sms, "grafana": _grafana}

_USER_KEYS = {"email", "phone", "channels", "min_severity", "quiet_hours"}


def _users(section: Mapping[str, Any], channels: Mapping[str, ChannelConfig]) -> dict[str, UserPrefs]:
    return {str(name): parse_user(str(name), raw, channels, f"users.{name}") for name, raw in section.items()}


def parse_user(name: str, raw: Any, channels: Mapping[str, ChannelConfig], key: str) -> UserPrefs:
    """One person's preferences (config file or the self-service API); errors name the key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(key, "must be a mapping")
    check_keys(raw, _USER_KEYS, key)
    for field_name in ("email", "phone"):
        if raw.get(field_name) is not None and not isinstance(raw.get(field_name), str):
            raise ConfigError(f"{key}.{field_name}", "must be a string")
    return UserPrefs(
        name=name,
        email=raw.get("email"),
        phone=raw.get("phone"),
        channels=_names(raw, "channels", f"{key}.channels", channels),
        min_severity=_severity(raw, "min_severity", f"{key}.min_severity", "info"),
        quiet_hours=_window(raw, "quiet_hours", f"{key}.quiet_hours"),
    )


_POLICY_KEYS = {
    "name",
    "match",
    "match_re",
    "min_severity",
    "hours",
    "channels",
    "users",
    "repeat_minutes",
    "notify_resolved",
    "escalation",
}


def _policies(
    raw: Any, channels: Mapping[str, ChannelConfig], users: Mapping[str, UserPrefs]
) -> tuple[Policy, ...]:
    if not isinstance(raw, list):
        raise ConfigError("routing.policies", "must be a list")
    out = []
    for i, item in enumerate(raw):
        key = f"routing.policies[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(key, "must be a mapping")
        check_keys(item, _POLICY_KEYS, key)
        match = item.get("match") or {}
        if not isinstance(match, Mapping):
            raise ConfigError(f"{key}.match", "must map label names to values")
        match_re = {}
        for label, pattern in (item.get("match_re") or {}).items():
            try:
                match_re[str(label)] = re.compile(f"^(?:{pattern})$")
            except (re.error, TypeError) as exc:
                raise ConfigError(f"{key}.match_re.{label}", f"bad regular expression: {exc}") from None
        steps = []
        for j, step in enumerate(item.get("escalation") or []):
            skey = f"{key}.escalation[{j}]"
            if not isinstance(step, Mapping):
                raise ConfigError(skey, "must be a mapping")
            check_keys(step, {"after_minutes", "channels", "users"}, skey)
            steps.append(
                EscalationStep(
                    after_minutes=_num(step, "after_minutes", f"{skey}.after_minutes", None, minimum=0),
                    channels=_names(step, "channels", f"{skey}.channels", channels),
                    users=_names(step, "users", f"{skey}.users", users),
                )
            )
        repeat = item.get("repeat_minutes")
        out.append(
            Policy(
                name=_str(item, "name", f"{key}.name", f"policy-{i}"),
                match={str(k): str(v) for k, v in match.items()},
                match_re=match_re,
                min_severity=_severity(item, "min_severity", f"{key}.min_severity", None),
                hours=_window(item, "hours", f"{key}.hours"),
                channels=_names(item, "channels", f"{key}.channels", channels),
                users=_names(item, "users", f"{key}.users", users),
                repeat_minutes=None
                if repeat is None
                else _num(item, "repeat_minutes", f"{key}.repeat_minutes", None, minimum=0.01),
                notify_resolved=_bool(item, "notify_resolved", f"{key}.notify_resolved", True),
                escalation=tuple(steps),
            )
        )
    return tuple(out)


def _tokens(auth: Mapping[str, Any]) -> tuple[TokenSpec, ...]:
    check_keys(auth, {"tokens"}, "auth")
    raw = auth.get("tokens") or []
    if not isinstance(raw, list):
        raise ConfigError("auth.tokens", "must be a list")
    out = []
    for i, item in enumerate(raw):
        key = f"auth.tokens[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(key, "must be a mapping")
        check_keys(item, {"name", "role", "token_env", "token_file"}, key)
        role = item.get("role")
        if role not in ROLES:
            raise ConfigError(f"{key}.role", f"must be one of {', '.join(ROLES)}")
        token = read_secret(item.get("token_env"), item.get("token_file"), key=f"{key}.token_file")
        if not token:
            raise ConfigError(f"{key}.token_file", "no token in the env var or file")
        if len(token) < 16:
            raise ConfigError(f"{key}.token_file", "token must be at least 16 characters")
        out.append(TokenSpec(_str(item, "name", f"{key}.name", None), role, token))
    return tuple(out)


# --- scalar helpers ------------------------------------------------------------------------------------


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(name, "must be a mapping")
    return value


def _str(data: Mapping[str, Any], name: str, key: str, default: str | None) -> str:
    value = data.get(name, default)
    if value is None:
        raise ConfigError(key, "required")
    if not isinstance(value, str):
        raise ConfigError(key, "must be a string")
    return value


def _num(data: Mapping[str, Any], name: str, key: str, default: float | None, minimum: float) -> float:
    value = data.get(name, default)
    if value is None:
        raise ConfigError(key, "required")
    return parse_number(value, key, minimum)


def _bool(data: Mapping[str, Any], name: str, key: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(key, "must be true or false")
    return value


def _str_list(data: Mapping[str, Any], name: str, key: str) -> list[str]:
    value = data.get(name) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, "must be a list of strings")
    return value


def _names(data: Mapping[str, Any], name: str, key: str, known: Mapping[str, Any]) -> tuple[str, ...]:
    names = _str_list(data, name, key)
    for item in names:
        if item not in known:
            raise ConfigError(key, f"{item!r} is not defined")
    return tuple(names)


def _url(data: Mapping[str, Any], name: str, key: str, default: str | None = None) -> str:
    value = _str(data, name, key, default)
    if not re.match(r"^https?://[^\s/]+", value):
        raise ConfigError(key, f"must be an http(s) URL (got {value!r})")
    return value.rstrip("/")


def _urls(data: Mapping[str, Any], name: str, key: str) -> list[str]:
    values = _str_list(data, name, key)
    for v in values:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ConfigError(key, f"must be http(s) URLs (got {v!r})")
    return values


def _severity(data: Mapping[str, Any], name: str, key: str, default: str | None) -> Any:
    value = data.get(name, default)
    if value is not None and value not in SEVERITIES:
        raise ConfigError(key, f"must be one of {', '.join(SEVERITIES)}")
    return value


def _window(data: Mapping[str, Any], name: str, key: str) -> TimeWindow | None:
    value = data.get(name)
    if value is None:
        return None
    match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", str(value))
    if not match:
        raise ConfigError(key, "must be HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
        raise ConfigError(key, "hours 0-23 and minutes 0-59")
    end = time(23, 59, 59, 999999) if h2 == 24 else time(h2, m2)
    return TimeWindow(time(h1, m1), end)
