"""The `novacron up` stack config: defaults merged with the operator's YAML, validated, frozen."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporters.common.config import ConfigError, check_keys, load_yaml_mapping

DEFAULTS_PATH = Path(__file__).with_name("defaults.yml")
_DURATION = re.compile(r"^[0-9]+(ms|s|m|h)$")


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    listen_host: str
    scrape_interval: str
    evaluation_interval: str
    ports: Mapping[str, int]
    system_uri: str
    demo_hosts: int
    demo_vms_per_host: int
    demo_shutoff_every: int
    metrics_api_enabled: bool
    metrics_api_tenants: tuple[str, ...]
    cloud_config_file: str
    smtp_host: str
    smtp_port: int
    email_from: str
    email_to: str
    analytics_enabled: bool
    analytics_interval: str
    grafana_provisioning: bool


def _merge(base: Mapping[str, Any], override: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    check_keys(override, set(base), where.rstrip("."))
    merged = dict(base)
    for key, value in override.items():
        if isinstance(base[key], Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}{key}", "must be a mapping")
            merged[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def _int(data: Mapping[str, Any], key: str, where: str, minimum: int = 0, maximum: int = 65535) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise ConfigError(f"{where}{key}", f"must be an integer from {minimum} to {maximum}")
    return value


def _duration(data: Mapping[str, Any], key: str, where: str = "") -> str:
    value = str(data[key])
    if not _DURATION.match(value):
        raise ConfigError(f"{where}{key}", f"must be a Prometheus duration like 5s or 1m, got {value!r}")
    return value


def _check_port_overlap(ports: Mapping[str, int], libvirt: Mapping[str, Any]) -> None:
    """The libvirt exporters take consecutive ports from ports.libvirt_exporter: nothing else may."""
    exporters = 1 + int(libvirt["demo_hosts"])  # the system URI may take one more
    taken = {f"libvirt_exporter+{i}": ports["libvirt_exporter"] + i for i in range(exporters)}
    for name, port in ports.items():
        if name == "libvirt_exporter":
            continue
        clash = [k for k, p in taken.items() if p == port]
        if clash:
            raise ConfigError(f"ports.{name}", f"{port} is taken by the libvirt exporters ({clash[0]})")
        taken[name] = port


def load_stack_config(path: str | None, state_dir: str | None = None) -> StackConfig:
    """Defaults, then the file at `path`, then `--state-dir`; every error names its key."""
    raw = _merge(yaml.safe_load(DEFAULTS_PATH.read_text()), load_yaml_mapping(path) if path else {})
    ports = raw["ports"]
    for name in ports:
        _int(ports, name, "ports.", 1, 65535)
    lv, br, an, ma = raw["libvirt"], raw["bridge"], raw["analytics"], raw["metrics_api"]
    if lv["system_uri"] not in ("auto", "off") and "://" not in str(lv["system_uri"]):
        raise ConfigError("libvirt.system_uri", "must be auto, off or a libvirt URI")
    _int(lv, "demo_hosts", "libvirt.", 0, 50)
    _check_port_overlap(ports, lv)
    if raw["cloud"]["config_file"] and not Path(str(raw["cloud"]["config_file"])).is_file():
        raise ConfigError("cloud.config_file", f"no such file: {raw['cloud']['config_file']}")
    return StackConfig(
        state_dir=Path(state_dir or raw["state_dir"]).resolve(),
        listen_host=str(raw["listen_host"]),
        scrape_interval=_duration(raw, "scrape_interval"),
        evaluation_interval=_duration(raw, "evaluation_interval"),
        ports={k: int(v) for k, v in ports.items()},
        system_uri=str(lv["system_uri"]),
        demo_hosts=_int(lv, "demo_hosts", "libvirt.", 0, 50),
        demo_vms_per_host=_int(lv, "demo_vms_per_host", "libvirt.", 1, 10000),
        demo_shutoff_every=_int(lv, "demo_shutoff_every", "libvirt.", 0, 10000),
        metrics_api_enabled=bool(ma["enabled"]),
        metrics_api_tenants=tuple(str(t) for t in (ma["tenants"] or [])),
        cloud_config_file=str(raw["cloud"]["config_file"] or ""),
        smtp_host=str(br["smtp_host"] or ""),
        smtp_port=_int(br, "smtp_port", "bridge.", 1, 65535),
        email_from=str(br["email_from"]),
        email_to=str(br["email_to"]),
        analytics_enabled=bool(an["enabled"]),
        analytics_interval=_duration(an, "interval", "analytics."),
        grafana_provisioning=bool(raw["grafana"]["provisioning"]),
    )
