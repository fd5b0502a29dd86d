"""Report configuration and templates: parsed and validated into immutable objects (errors name the key)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from croniter import croniter  # type: ignore[import-untyped]

from analytics_sidecar.config import PrometheusSettings, prometheus_settings
from exporters.common.config import (
    ConfigError,
    check_keys,
    load_yaml_mapping,
    parse_duration,
    parse_number,
    read_secret,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FORMATS = ("pdf", "csv", "html")
ITEM_KINDS = ("table", "chart", "stat")


@dataclass(frozen=True)
class Item:
    """One element of a section: an instant `table`, a range `chart`, or a single-value `stat`."""

    kind: str
    title: str
    query: str
    unit: str = ""
    legend: str = ""
    columns: tuple[str, ...] = ()
    limit: int = 50


@dataclass(frozen=True)
class Section:
    title: str
    text: str = ""
    items: tuple[Item, ...] = ()


@dataclass(frozen=True)
class Template:
    title: str
    description: str
    range_seconds: float
    step_seconds: float
    sections: tuple[Section, ...]


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 25
    sender: str = "novacron-reports@localhost"
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0


@dataclass(frozen=True)
class ArchiveConfig:
    directory: Path
    retention_days: float = 90.0
    max_runs: int = 0  # 0: no count limit


@dataclass(frozen=True)
class ReportSpec:
    name: str
    template: Template
    schedule: str
    formats: tuple[str, ...]
    email_to: tuple[str, ...] = ()
    subject: str = ""


@dataclass(frozen=True)
class ReportsConfig:
    prometheus: PrometheusSettings
    archive: ArchiveConfig
    reports: tuple[ReportSpec, ...]
    smtp: SmtpConfig | None = None


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, "must be a mapping")
    return value


def _str(section: Mapping[str, Any], name: str, where: str, default: str | None = None) -> str:
    value = section.get(name, default)
    if value is None or not isinstance(value, str) or (default is None and not value.strip()):
        raise ConfigError(f"{where}.{name}", "is required and must be a non-empty string")
    return value


def _list(section: Mapping[str, Any], name: str, where: str) -> list[Any]:
    value = section.get(name, [])
    if not isinstance(value, list):
        raise ConfigError(f"{where}.{name}", "must be a list")
    return value


def parse_item(data: Any, where: str) -> Item:
    data = _mapping(data, where)
    check_keys(data, {"type", "title", "query", "unit", "legend", "columns", "limit"}, where)
    kind = _str(data, "type", where)
    if kind not in ITEM_KINDS:
        raise ConfigError(f"{where}.type", f"must be one of {', '.join(ITEM_KINDS)}")
    limit = data.get("limit", 50)
    if not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"{where}.limit", "must be a positive integer")
    columns = _list(data, "columns", where)
    if not all(isinstance(c, str) for c in columns):
        raise ConfigError(f"{where}.columns", "must be a list of label names")
    return Item(
        kind,
        _str(data, "title", where),
        _str(data, "query", where),
        str(data.get("unit", "")),
        str(data.get("legend", "")),
        tuple(columns),
        limit,
    )


def parse_template(data: Mapping[str, Any], where: str = "template") -> Template:
    check_keys(data, {"title", "description", "range", "step", "sections"}, where)
    sections = []
    for i, raw in enumerate(_list(data, "sections", where)):
        swhere = f"{where}.sections[{i}]"
        section = _mapping(raw, swhere)
        check_keys(section, {"title", "text", "items"}, swhere)
        items = tuple(
            parse_item(it, f"{swhere}.items[{j}]") for j, it in enumerate(_list(section, "items", swhere))
        )
        sections.append(Section(_str(section, "title", swhere), str(section.get("text", "")), items))
    if not sections:
        raise ConfigError(f"{where}.sections", "needs at least one section")
    range_s = parse_duration(data.get("range", "1d"), f"{where}.range")
    step = parse_duration(data.get("step", "5m"), f"{where}.step")
    if range_s / step > 11000:  # Prometheus refuses more than 11,000 points per series
        raise ConfigError(f"{where}.step", "too small for the range (over 11,000 points per series)")
    return Template(
        _str(data, "title", where), str(data.get("description", "")), range_s, step, tuple(sections)
    )


def load_template(path: str | Path, key: str) -> Template:
    return parse_template(load_yaml_mapping(path, key), key)


def _parse_report(data: Any, where: str, base: Path) -> ReportSpec:
    data = _mapping(data, where)
    check_keys(data, {"name", "template", "schedule", "formats", "email"}, where)
    name = _str(data, "name", where)
    if not NAME_RE.match(name):
        raise ConfigError(
            f"{where}.name", "letters, digits, '.', '_' and '-' only (it names archive directories)"
        )
    template_ref = data.get("template")
    if isinstance(template_ref, str):
        path = Path(template_ref) if Path(template_ref).is_absolute() else base / template_ref
        template = load_template(path, f"{where}.template")
    else:
        template = parse_template(_mapping(template_ref, f"{where}.template"), f"{where}.template")
    schedule = _str(data, "schedule", where)
    if not croniter.is_valid(schedule):
        raise ConfigError(f"{where}.schedule", f"not a valid cron expression: {schedule!r}")
    formats = tuple(_list(data, "formats", where) or ["pdf", "csv"])
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"{where}.formats", f"unknown format {fmt!r} (allowed: {', '.join(FORMATS)})")
    email = _mapping(data.get("email", {}), f"{where}.email")
    check_keys(email, {"to", "subject"}, f"{where}.email")
    to = tuple(_list(email, "to", f"{where}.email"))
    if not all(isinstance(a, str) and "@" in a for a in to):
        raise ConfigError(f"{where}.email.to", "must be a list of e-mail addresses")
    return ReportSpec(name, template, schedule, formats, to, str(email.get("subject", "")))


def _parse_smtp(data: Any) -> SmtpConfig:
    data = _mapping(data, "smtp")
    check_keys(
        data,
        {"host", "port", "from", "starttls", "username", "password_env", "password_file", "timeout"},
        "smtp",
    )
    port = data.get("port", 25)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError("smtp.port", "must be a port number")
    password = read_secret(data.get("password_env"), data.get("password_file"), "smtp.password_file")
    if data.get("username") and password is None:
        raise ConfigError("smtp.username", "set password_env or password_file as well")
    return SmtpConfig(
        _str(data, "host", "smtp"),
        port,
        str(data.get("from", SmtpConfig.sender)),
        bool(data.get("starttls", False)),
        data.get("username"),
        password,
        _timeout(data, "smtp"),
    )


def _timeout(section: Mapping[str, Any], where: str) -> float:
    """Seconds, a positive number: a typo here must name the key, not end in a traceback."""
    return parse_number(section.get("timeout", 30.0), f"{where}.timeout", 0.001, 3600)


def parse_config(data: Mapping[str, Any], base: Path) -> ReportsConfig:
    check_keys(data, {"prometheus", "smtp", "archive", "reports"}, "")
    prom = _mapping(data.get("prometheus", {}), "prometheus")
    _str(prom, "url", "prometheus")  # required here: reports have no local default
    prometheus = prometheus_settings(prom)
    archive = _mapping(data.get("archive", {}), "archive")
    check_keys(archive, {"dir", "retention", "max_runs"}, "archive")
    max_runs = archive.get("max_runs", 0)
    if not isinstance(max_runs, int) or max_runs < 0:
        raise ConfigError("archive.max_runs", "must be a non-negative integer")
    archive_cfg = ArchiveConfig(
        Path(_str(archive, "dir", "archive")),
        parse_duration(archive.get("retention", "90d"), "archive.retention") / 86400,
        max_runs,
    )
    reports = tuple(_parse_report(r, f"reports[{i}]", base) for i, r in enumerate(_list(data, "reports", "")))
    if not reports:
        raise ConfigError("reports", "needs at least one report")
    names = [r.name for r in reports]
    if len(set(names)) != len(names):
        raise ConfigError("reports", "report names must be unique")
    smtp = _parse_smtp(data["smtp"]) if data.get("smtp") else None
    if smtp is None and any(r.email_to for r in reports):
        raise ConfigError("smtp", "required when a report has email.to")
    return ReportsConfig(prometheus, archive_cfg, reports, smtp)


def load_config(path: str | Path) -> ReportsConfig:
    return parse_config(load_yaml_mapping(path), Path(path).resolve().parent)
