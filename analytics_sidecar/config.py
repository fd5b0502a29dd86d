"""The sidecar's configuration file (`--config.file`): parsed and validated into one immutable object."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from analytics_sidecar.forecast import ForecastPolicy
from analytics_sidecar.patterns import PatternPolicy
from analytics_sidecar.rightsizing import RISK_LEVELS, IdlePolicy, RightsizingPolicy
from exporters.common.config import (
    ConfigError,
    check_keys,
    load_yaml_mapping,
    parse_duration,
    parse_number,
    read_secret,
)

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}

# PromQL on the raw normalised schema (docs/metrics.md), so the sidecar needs no recording rule.
# `$rate_window` becomes analysis.rate_window; `$vm_filter` becomes the label matcher that picks this
# shard's VMs (`vm_id!=""` when one replica analyses everything). Every query must keep `vm_id` (VM queries),
# `host` (host queries) or `host` and `pool` (storage pool queries) on its result.
DEFAULT_QUERIES: dict[str, str] = {
    "vm_info": "novacron_vm_info{$vm_filter}",
    "vm_vcpus": "max by (vm_id) (novacron_vm_vcpus{$vm_filter})",
    "vm_memory_bytes": "max by (vm_id) (novacron_vm_memory_bytes{$vm_filter})",
    "vm_cpu_cores": (
        "max by (vm_id) (rate(novacron_vm_cpu_seconds_total{$vm_filter}[$rate_window]))"
        " or max by (vm_id) (novacron_vm_cpu_utilisation_ratio{$vm_filter})"
        " * on(vm_id) max by (vm_id) (novacron_vm_vcpus{$vm_filter})"
    ),
    "vm_memory_used_bytes": (
        "max by (vm_id) (novacron_vm_memory_available_bytes{$vm_filter}"
        " - novacron_vm_memory_usable_bytes{$vm_filter})"
        " or max by (vm_id) (novacron_vm_memory_utilisation_ratio{$vm_filter})"
        " * on(vm_id) max by (vm_id) (novacron_vm_memory_bytes{$vm_filter})"
    ),
    "vm_network_bytes_per_second": (
        "sum by (vm_id) (rate(novacron_vm_network_receive_bytes_total{$vm_filter}[$rate_window]))"
        " + sum by (vm_id) (rate(novacron_vm_network_transmit_bytes_total{$vm_filter}[$rate_window]))"
        " or max by (vm_id) (novacron_vm_network_receive_bytes_per_second{$vm_filter}"
        " + novacron_vm_network_transmit_bytes_per_second{$vm_filter})"
    ),
    "host_cpus": "max by (host) (novacron_host_cpus)",
    "host_memory_bytes": "max by (host) (novacron_host_memory_bytes)",
    "host_cpu_cores_used": (
        'sum by (host) (rate(novacron_host_cpu_seconds_total{mode!~"idle|iowait"}[$rate_window]))'
    ),
    "host_memory_used_bytes": (
        "max by (host) (novacron_host_memory_bytes) - max by (host) (novacron_host_memory_free_bytes)"
    ),
    "pool_capacity_bytes": "max by (host, pool) (novacron_storage_pool_capacity_bytes)",
    "pool_used_bytes": (
        "max by (host, pool) (novacron_storage_pool_capacity_bytes)"
        " - max by (host, pool) (novacron_storage_pool_available_bytes)"
    ),
    # Read back by shard 0 when several replicas run, so consolidation sees the whole fleet.
    "recommended_vcpus": "max by (vm_id) (novacron_vm_recommended_vcpus)",
    "recommended_memory_bytes": "max by (vm_id) (novacron_vm_recommended_memory_bytes)",
}


def format_duration(seconds: float) -> str:
    for unit in ("d", "h", "m", "s"):  # days, not weeks: "7d" reads as configured
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Shard:
    """`i/n`: this replica analyses the VMs whose vm_id hashes to i modulo n (0-based, like hashmod)."""

    index: int = 0
    count: int = 1
    # Shares of dead peers this replica analyses too (set each cycle by analytics_sidecar.shard_lease).
    adopted: frozenset[int] = frozenset()

    def owns(self, share: int) -> bool:
        return share == self.index or share in self.adopted

    @staticmethod
    def parse(text: str) -> Shard:
        m = re.match(r"^(\d+)/(\d+)$", text.strip())
        if not m:
            raise ConfigError("shard", f"must be i/n, got {text!r}")
        i, n = int(m.group(1)), int(m.group(2))
        if n < 1 or i >= n:
            raise ConfigError("shard", f"need 0 <= i < n, got {text!r}")
        return Shard(i, n)


@dataclass(frozen=True)
class PrometheusSettings:
    url: str = "http://127.0.0.1:9090"
    timeout: float = 30.0
    retries: int = 3
    bearer_token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_insecure_skip_verify: bool = False


@dataclass(frozen=True)
class AnalysisSettings:
    interval: float = 900.0
    lookback: float = 28 * 86400.0
    step: float = 300.0
    chunk: float = 86400.0
    rate_window: float = 300.0
    horizons: tuple[float, ...] = (3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0)
    batch_size: int = 200  # VMs per range query (the vm_id regex stays short)


@dataclass(frozen=True)
class NeighbourSettings:
    min_correlation: float = 0.8
    max_per_vm: int = 3


@dataclass(frozen=True)
class ConsolidationSettings:
    anti_affinity_label: str = "anti_affinity_group"
    cpu_overcommit: float = 1.0
    memory_overcommit: float = 1.0


@dataclass(frozen=True)
class Config:
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    rightsizing: RightsizingPolicy = field(
        default_factory=lambda: RightsizingPolicy(
            memory_granularity_bytes=64 << 20, memory_min_bytes=64 << 20
        )
    )
    idle: IdlePolicy = field(default_factory=IdlePolicy)
    patterns: PatternPolicy = field(default_factory=PatternPolicy)
    forecast: ForecastPolicy = field(default_factory=ForecastPolicy)
    neighbours: NeighbourSettings = field(default_factory=NeighbourSettings)
    consolidation: ConsolidationSettings = field(default_factory=ConsolidationSettings)
    catalogue_file: str | None = None
    api_token: str | None = field(default=None, repr=False)
    queries: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_QUERIES))
    shard: Shard = field(default_factory=Shard)
    decisions: Any = None  # analytics_sidecar.decisions.config.DecisionSettings; None: its defaults

    def query(self, name: str, vm_filter: str = 'vm_id!=""') -> str:
        text = self.queries[name].replace("$rate_window", format_duration(self.analysis.rate_window))
        return text.replace("$vm_filter", vm_filter)


_TOP = {
    "prometheus",
    "analysis",
    "rightsizing",
    "idle",
    "patterns",
    "neighbours",
    "consolidation",
    "cost",
    "api",
    "queries",
    "decisions",
}


def load_config(path: str | None) -> Config:
    """Read and validate the file (no file: all defaults); raises ConfigError naming the key."""
    data: Mapping[str, Any] = load_yaml_mapping(path) if path else {}
    check_keys(data, _TOP, "")
    cfg = Config()
    cfg = replace(cfg, prometheus=prometheus_settings(_section(data, "prometheus")))
    cfg = replace(cfg, analysis=_analysis(_section(data, "analysis")))
    cfg = replace(cfg, rightsizing=_rightsizing(_section(data, "rightsizing"), cfg.rightsizing))
    cfg = replace(cfg, idle=_idle(_section(data, "idle")))
    cfg = replace(cfg, patterns=_patterns(_section(data, "patterns")))
    cfg = replace(cfg, forecast=replace(cfg.forecast, step=cfg.analysis.step))
    cfg = replace(cfg, neighbours=_neighbours(_section(data, "neighbours")))
    cfg = replace(cfg, consolidation=_consolidation(_section(data, "consolidation")))
    cost = _section(data, "cost")
    check_keys(cost, {"catalogue_file"}, "cost")
    api = _section(data, "api")
    check_keys(api, {"token_env", "token_file"}, "api")
    token = read_secret(
        env=str(api.get("token_env", "NOVACRON_ANALYTICS_TOKEN")),
        file=api.get("token_file"),
        key="api.token_file",
    )
    queries = _section(data, "queries")
    check_keys(queries, set(DEFAULT_QUERIES), "queries")
    for name, q in queries.items():
        if not isinstance(q, str) or not q.strip():
            raise ConfigError(f"queries.{name}", "must be a non-empty PromQL string")
    from analytics_sidecar.decisions.config import load as load_decisions  # late: it imports this module

    return replace(
        cfg,
        decisions=load_decisions(_section(data, "decisions")),
        catalogue_file=cost.get("catalogue_file"),
        api_token=token,
        queries={**DEFAULT_QUERIES, **queries},
    )


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(name, "must be a mapping")
    return value


def _number(section: Mapping[str, Any], key: str, where: str, default: float, lo: float, hi: float) -> float:
    return parse_number(section.get(key, default), f"{where}.{key}", lo, hi)


def prometheus_url(value: Any, key: str = "prometheus.url") -> str:
    """An http(s) base URL without the trailing slash: a typo fails at start, not at every cycle."""
    url = str(value).rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        shown = "a value with credentials" if "@" in url else repr(url[:100])
        raise ConfigError(key, f"must be an http:// or https:// URL, got {shown}")
    if "@" in url.split("://", 1)[1].split("/", 1)[0]:
        # The URL is logged at start and in query errors: credentials belong in the secret-backed settings.
        raise ConfigError(key, "must not carry credentials: use prometheus.basic_auth or bearer_token_file")
    return url


def prometheus_settings(s: Mapping[str, Any]) -> PrometheusSettings:
    """The `prometheus` section (URL, timeout, retries, token or basic auth, TLS), for sidecar and reports."""
    allowed = {
        "url",
        "timeout",
        "retries",
        "bearer_token_env",
        "bearer_token_file",
        "basic_auth",
        "tls_insecure_skip_verify",
    }
    check_keys(s, allowed, "prometheus")
    d = PrometheusSettings()
    token = read_secret(s.get("bearer_token_env"), s.get("bearer_token_file"), "prometheus.bearer_token_file")
    basic = s.get("basic_auth") or {}
    if not isinstance(basic, Mapping):
        raise ConfigError("prometheus.basic_auth", "must be a mapping")
    check_keys(basic, {"username", "password_env", "password_file"}, "prometheus.basic_auth")
    password = read_secret(basic.get("password_env"), basic.get("password_file"), "prometheus.basic_auth")
    return PrometheusSettings(
        url=prometheus_url(s.get("url", d.url)),
        timeout=parse_duration(s.get("timeout", d.timeout), "prometheus.timeout"),
        retries=int(_number(s, "retries", "prometheus", d.retries, 0, 20)),
        bearer_token=token,
        username=basic.get("username"),
        password=password,
        tls_insecure_skip_verify=bool(s.get("tls_insecure_skip_verify", False)),
    )


def _analysis(s: Mapping[str, Any]) -> AnalysisSettings:
    check_keys(
        s, {"interval", "lookback", "step", "chunk", "rate_window", "horizons", "batch_size"}, "analysis"
    )
    d = AnalysisSettings()
    horizons = s.get("horizons", [format_duration(h) for h in d.horizons])
    if not isinstance(horizons, list) or not horizons:
        raise ConfigError("analysis.horizons", "must be a non-empty list of durations")
    a = AnalysisSettings(
        interval=parse_duration(s.get("interval", d.interval), "analysis.interval"),
        lookback=parse_duration(s.get("lookback", d.lookback), "analysis.lookback"),
        step=parse_duration(s.get("step", d.step), "analysis.step"),
        chunk=parse_duration(s.get("chunk", d.chunk), "analysis.chunk"),
        rate_window=parse_duration(s.get("rate_window", d.rate_window), "analysis.rate_window"),
        horizons=tuple(parse_duration(h, f"analysis.horizons[{i}]") for i, h in enumerate(horizons)),
        batch_size=int(_number(s, "batch_size", "analysis", d.batch_size, 1, 5000)),
    )
    if 86400 % a.step:
        raise ConfigError("analysis.step", "must divide one day (e.g. 1m, 5m, 15m)")
    if a.chunk % a.step:
        raise ConfigError("analysis.chunk", "must be a multiple of analysis.step")
    if a.chunk / a.step > 10_000:
        raise ConfigError("analysis.chunk", "must hold at most 10000 steps (Prometheus' limit is 11000)")
    if a.lookback / a.step > 200_000:
        raise ConfigError("analysis.lookback", "too many points at this step")
    return a


def _rightsizing(s: Mapping[str, Any], d: RightsizingPolicy) -> RightsizingPolicy:
    check_keys(
        s, {"risk", "half_life", "min_history", "memory_granularity_bytes", "tolerance"}, "rightsizing"
    )
    risk = str(s.get("risk", d.risk.name))
    if risk not in RISK_LEVELS:
        raise ConfigError("rightsizing.risk", f"must be one of {', '.join(sorted(RISK_LEVELS))}")
    return replace(
        d,
        risk=RISK_LEVELS[risk],
        half_life_seconds=parse_duration(s.get("half_life", d.half_life_seconds), "rightsizing.half_life"),
        min_history_seconds=parse_duration(
            s.get("min_history", d.min_history_seconds), "rightsizing.min_history"
        ),
        memory_granularity_bytes=int(
            _number(s, "memory_granularity_bytes", "rightsizing", d.memory_granularity_bytes, 1, 1 << 40)
        ),
        tolerance=_number(s, "tolerance", "rightsizing", d.tolerance, 0, 0.9),
    )


def _idle(s: Mapping[str, Any]) -> IdlePolicy:
    check_keys(s, {"cpu_percentile", "cpu_ratio_below", "network_bytes_per_day_below", "min_history"}, "idle")
    d = IdlePolicy()
    return IdlePolicy(
        cpu_percentile=_number(s, "cpu_percentile", "idle", d.cpu_percentile, 0, 100),
        cpu_ratio_below=_number(s, "cpu_ratio_below", "idle", d.cpu_ratio_below, 0, 1),
        network_bytes_per_day_below=_number(
            s, "network_bytes_per_day_below", "idle", d.network_bytes_per_day_below, 0, 1e15
        ),
        min_history_seconds=parse_duration(s.get("min_history", d.min_history_seconds), "idle.min_history"),
    )


def _patterns(s: Mapping[str, Any]) -> PatternPolicy:
    keys = {
        "seasonal_strength_min",
        "trend_p_value_max",
        "trend_growth_per_week_min",
        "bursty_peak_to_median_min",
        "outlier_z",
    }
    check_keys(s, keys, "patterns")
    d = PatternPolicy()
    return PatternPolicy(
        seasonal_strength_min=_number(s, "seasonal_strength_min", "patterns", d.seasonal_strength_min, 0, 1),
        trend_p_value_max=_number(s, "trend_p_value_max", "patterns", d.trend_p_value_max, 0, 1),
        trend_growth_per_week_min=_number(
            s, "trend_growth_per_week_min", "patterns", d.trend_growth_per_week_min, 0, 100
        ),
        bursty_peak_to_median_min=_number(
            s, "bursty_peak_to_median_min", "patterns", d.bursty_peak_to_median_min, 1, 1e6
        ),
        outlier_z=_number(s, "outlier_z", "patterns", d.outlier_z, 0.5, 100),
    )


def _neighbours(s: Mapping[str, Any]) -> NeighbourSettings:
    check_keys(s, {"min_correlation", "max_per_vm"}, "neighbours")
    d = NeighbourSettings()
    return NeighbourSettings(
        min_correlation=_number(s, "min_correlation", "neighbours", d.min_correlation, -1, 1),
        max_per_vm=int(_number(s, "max_per_vm", "neighbours", d.max_per_vm, 0, 100)),
    )


def _consolidation(s: Mapping[str, Any]) -> ConsolidationSettings:
    check_keys(s, {"anti_affinity_label", "cpu_overcommit", "memory_overcommit"}, "consolidation")
    d = ConsolidationSettings()
    label = s.get("anti_affinity_label", d.anti_affinity_label)
    if not isinstance(label, str) or not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", label):
        raise ConfigError("consolidation.anti_affinity_label", "must be a Prometheus label name")
    return ConsolidationSettings(
        anti_affinity_label=label,
        cpu_overcommit=_number(s, "cpu_overcommit", "consolidation", d.cpu_overcommit, 0.1, 64),
        memory_overcommit=_number(s, "memory_overcommit", "consolidation", d.memory_overcommit, 0.1, 4),
    )
