"""The `decisions:` section of the sidecar's config file: one immutable settings object, errors name the key.

decisions:
  enabled: true
  scaling: {group_label: novacron_group, scale_out_above: 0.8, scale_in_below: 0.3, target: 0.6,
            scale_out_window: 3m, scale_in_window: 15m, cooldown: 30m, horizon: 1h}
  migration: {cpu_high: 0.85, memory_high: 0.9, steal_high: 0.1, target_cpu_max: 0.75,
              target_memory_max: 0.85, cost_per_gib: 0.002, max_moves: 10, consolidate: true,
              max_drain_hosts: 1, drain_below: 0.3}
  health: {failover_below: 0.5, failover_for: 2m, alert_penalty: 0.3, ...}
  placement: {limit: 5, sizes: [{name: small, vcpus: 2, memory_gib: 4}]}
  slo: {objective: 0.999, window: 30d, burn_windows: [1h, 6h], resolution: 1m, tenants: {acme: 0.995}}
  insights: {vm_cpu_threshold: 0.9, margin: 0.15, busy: 0.5}
  queries: {<name>: PromQL}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from analytics_sidecar.decisions.health import HealthPolicy
from analytics_sidecar.decisions.insights import InsightPolicy
from analytics_sidecar.decisions.migration import MigrationPolicy
from analytics_sidecar.decisions.placement import Size
from analytics_sidecar.decisions.scaling import ScalingPolicy
from analytics_sidecar.decisions.slo import SLI_TEMPLATE, SloPolicy
from exporters.common.config import ConfigError, check_keys, parse_duration, parse_number

GIB = float(1 << 30)
_HOST_INFO = "last_over_time(novacron_host_info[1h])"

# Live reads of the decision cycle (the sidecar's own queries give usage, allocation and host capacity).
DEFAULT_QUERIES: dict[str, str] = {
    "vm_info_lost": "last_over_time(novacron_vm_info[30m]) unless on(vm_id) novacron_vm_info",
    # Sharded: the VMs of the shares this replica does not analyse (groups and hosts span every share).
    "vm_info_fleet": "novacron_vm_info",
    "vm_vcpus_recent": "max by (vm_id) (last_over_time(novacron_vm_vcpus[30m]))",
    "vm_memory_recent": "max by (vm_id) (last_over_time(novacron_vm_memory_bytes[30m]))",
    "host_cpus_recent": "max by (host) (last_over_time(novacron_host_cpus[1h]))",
    "host_memory_recent": "max by (host) (last_over_time(novacron_host_memory_bytes[1h]))",
    "vm_steal": (
        "sum by (vm_id) (rate(novacron_vm_vcpu_delay_seconds_total[5m]))"
        " / on(vm_id) max by (vm_id) (novacron_vm_vcpus)"
    ),
    "host_exporter_up": f"max by (host) (up * on(instance, job) group_right {_HOST_INFO})",
    "host_libvirt_up": f"max by (host) (novacron_libvirt_up * on(instance, job) group_right {_HOST_INFO})",
    "host_errors": (
        "max by (host) (rate(novacron_libvirt_scrape_errors_total[15m])"
        f" * on(instance, job) group_right {_HOST_INFO})"
    ),
    "host_alerts": 'count by (host) (ALERTS{alertstate="firing", type="host", severity=~"critical|warning"})',
    "tenant_availability": SLI_TEMPLATE,
}

_SECONDS = {
    "scale_out_window",
    "scale_in_window",
    "cooldown",
    "horizon",
    "failover_for",
    "exhaustion_within",
    "window",
    "resolution",
}


@dataclass(frozen=True)
class DecisionSettings:
    enabled: bool = True
    scaling: ScalingPolicy = field(default_factory=ScalingPolicy)
    migration: MigrationPolicy = field(default_factory=MigrationPolicy)
    health: HealthPolicy = field(default_factory=HealthPolicy)
    slo: SloPolicy = field(default_factory=SloPolicy)
    insights: InsightPolicy = field(default_factory=InsightPolicy)
    sizes: tuple[Size, ...] = (
        Size("small", 2, 4 * GIB),
        Size("medium", 4, 16 * GIB),
        Size("large", 8, 32 * GIB),
    )
    placement_limit: int = 5
    queries: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_QUERIES))


def load(section: Mapping[str, Any]) -> DecisionSettings:
    """Validate `decisions:`; raises ConfigError with the dotted key."""
    check_keys(
        section,
        {"enabled", "scaling", "migration", "health", "placement", "slo", "insights", "queries"},
        "decisions",
    )
    s = DecisionSettings()
    enabled = section.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("decisions.enabled", "must be true or false")
    s = replace(
        s,
        enabled=enabled,
        scaling=_policy(s.scaling, _sub(section, "scaling"), "decisions.scaling"),
        migration=_policy(s.migration, _sub(section, "migration"), "decisions.migration"),
        health=_policy(s.health, _sub(section, "health"), "decisions.health"),
        insights=_policy(s.insights, _sub(section, "insights"), "decisions.insights"),
    )
    s = _placement(s, _sub(section, "placement"))
    s = replace(s, slo=_slo(_sub(section, "slo")))
    queries = _sub(section, "queries")
    check_keys(queries, set(DEFAULT_QUERIES), "decisions.queries")
    for name, q in queries.items():
        if not isinstance(q, str) or not q.strip():
            raise ConfigError(f"decisions.queries.{name}", "must be a non-empty PromQL string")
    return replace(s, queries={**DEFAULT_QUERIES, **queries})


def _sub(section: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = section.get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"decisions.{name}", "must be a mapping")
    return value


def _policy(default: Any, raw: Mapping[str, Any], where: str) -> Any:
    """Override a policy dataclass field by field, with the field's type (durations where seconds)."""
    kinds = {f.name: type(getattr(default, f.name)) for f in fields(default)}
    check_keys(raw, set(kinds), where)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        kind, name = kinds[key], f"{where}.{key}"
        if kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(name, "must be true or false")
        elif kind is str:
            if not isinstance(value, str) or not value:
                raise ConfigError(name, "must be a non-empty string")
        elif key in _SECONDS:
            value = parse_duration(value, name)
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(name, "must be a whole number >= 0")
        else:
            value = parse_number(value, name, 0)
        values[key] = float(value) if kind is float else value
    return replace(default, **values)


def _placement(s: DecisionSettings, raw: Mapping[str, Any]) -> DecisionSettings:
    check_keys(raw, {"sizes", "limit"}, "decisions.placement")
    limit = raw.get("limit", s.placement_limit)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError("decisions.placement.limit", "must be a whole number >= 1")
    sizes = s.sizes
    if "sizes" in raw:
        if not isinstance(raw["sizes"], list) or not raw["sizes"]:
            raise ConfigError("decisions.placement.sizes", "must be a non-empty list")
        sizes = tuple(_size(x, f"decisions.placement.sizes[{i}]") for i, x in enumerate(raw["sizes"]))
    return replace(s, sizes=sizes, placement_limit=limit)


def _size(raw: Any, where: str) -> Size:
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "must be a mapping with name, vcpus, memory_gib")
    check_keys(raw, {"name", "vcpus", "memory_gib"}, where)
    for key in ("vcpus", "memory_gib"):
        v = raw.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise ConfigError(f"{where}.{key}", "must be a positive number")
    if not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ConfigError(f"{where}.name", "must be a non-empty string")
    return Size(raw["name"], float(raw["vcpus"]), float(raw["memory_gib"]) * GIB)


def _slo(raw: Mapping[str, Any]) -> SloPolicy:
    check_keys(raw, {"objective", "window", "burn_windows", "resolution", "tenants"}, "decisions.slo")
    p = SloPolicy()
    objective = _objective(raw.get("objective", p.objective), "decisions.slo.objective")
    window = parse_duration(raw.get("window", p.window), "decisions.slo.window")
    resolution = parse_duration(raw.get("resolution", p.resolution), "decisions.slo.resolution")
    burn = raw.get("burn_windows", list(p.burn_windows))
    if not isinstance(burn, list) or not burn:
        raise ConfigError("decisions.slo.burn_windows", "must be a non-empty list of durations")
    windows = tuple(parse_duration(w, f"decisions.slo.burn_windows[{i}]") for i, w in enumerate(burn))
    tenants = raw.get("tenants") or {}
    if not isinstance(tenants, Mapping):
        raise ConfigError("decisions.slo.tenants", "must map tenant names to objectives")
    per = {str(t): _objective(v, f"decisions.slo.tenants.{t}") for t, v in tenants.items()}
    return SloPolicy(objective, window, windows, resolution, per)


def _objective(v: Any, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1:
        raise ConfigError(key, "must be a ratio between 0 and 1 (0.999 for 99.9 %)")
    return float(v)
