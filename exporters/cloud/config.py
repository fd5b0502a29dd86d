"""Parse and validate the cloud exporter's YAML config into one immutable object (errors name the key)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from exporters.cloud.model import LatePolicy, Provider
from exporters.cloud.resilience import Backoff
from exporters.common.config import ConfigError, check_keys, load_yaml_mapping, parse_duration, parse_number

ENTRY_POINT_GROUP = "novacron.cloud_providers"
_TOP_KEYS = {"refresh_interval", "stale_after", "backoff", "circuit_breaker", "api_prices", "providers"}


@dataclass(frozen=True)
class ExporterConfig:
    """The validated config: global settings and the provider instances built from `providers:`."""

    refresh_interval: float
    stale_after: float
    backoff: Backoff
    breaker_threshold: int
    breaker_reset_after: float
    prices: Mapping[str, Mapping[str, float]]
    providers: tuple[Provider, ...]


def parse_positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, "must be a positive integer")
    return value


def parse_str_list(value: Any, key: str, required: bool = False) -> tuple[str, ...]:
    if value is None:
        if required:
            raise ConfigError(key, "is required")
        return ()
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(isinstance(v, str) for v in value)
    ):
        raise ConfigError(key, "must be a list of strings")
    if required and not value:
        raise ConfigError(key, "must not be empty")
    return tuple(value)


def parse_mapping(value: Any, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, "must be a mapping")
    return value


def parse_late_policy(raw: Mapping[str, Any], key: str, default: LatePolicy) -> LatePolicy:
    """`period`, `delay`, `window` (durations); the window must hold at least one whole period."""
    period = int(parse_duration(raw.get("period", default.period), f"{key}.period", 1))
    delay = int(parse_duration(raw.get("delay", default.delay), f"{key}.delay", zero_ok=True))
    window = int(parse_duration(raw.get("window", default.window), f"{key}.window", 1))
    if window < period:
        raise ConfigError(f"{key}.window", f"must be at least one period ({period}s)")
    return LatePolicy(period=period, delay=delay, window=window)


def parse_metric_overrides(
    raw: Any, key: str, catalogue: Mapping[str, Any], default: LatePolicy
) -> dict[str, LatePolicy] | None:
    """`metrics:` is a list of names or {name, period, delay, window}; None keeps the provider's defaults."""
    if raw is None:
        return None
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise ConfigError(key, "must be a non-empty list of metric names or mappings")
    chosen: dict[str, LatePolicy] = {}
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        entry: Mapping[str, Any] = {"name": item} if isinstance(item, str) else parse_mapping(item, where)
        check_keys(entry, {"name", "period", "delay", "window"}, where)
        name = entry.get("name")
        if name not in catalogue:
            raise ConfigError(
                f"{where}.name", f"unknown metric {name!r} (known: {', '.join(sorted(catalogue))})"
            )
        chosen[str(name)] = parse_late_policy(entry, where, default)
    return chosen


def provider_classes() -> dict[str, type[Provider]]:
    """Provider plug-ins registered under the `novacron.cloud_providers` entry point group."""
    found: dict[str, type[Provider]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load()
    return found


def parse_config(
    data: Mapping[str, Any], classes: Mapping[str, type[Provider]] | None = None
) -> ExporterConfig:
    """Validate the whole file; the first problem raises ConfigError naming its dotted key."""
    check_keys(data, _TOP_KEYS, "")
    refresh = parse_duration(data.get("refresh_interval", 60), "refresh_interval", 1)
    stale = parse_duration(data.get("stale_after", 3 * refresh + 900), "stale_after", refresh)
    bo = parse_mapping(data.get("backoff"), "backoff")
    check_keys(bo, {"base", "max", "attempts"}, "backoff")
    backoff = Backoff(
        base=parse_duration(bo.get("base", 1), "backoff.base", zero_ok=True),
        cap=parse_duration(bo.get("max", 30), "backoff.max", zero_ok=True),
        attempts=parse_positive_int(bo.get("attempts", 4), "backoff.attempts"),
    )
    cb = parse_mapping(data.get("circuit_breaker"), "circuit_breaker")
    check_keys(cb, {"failures", "reset_after"}, "circuit_breaker")
    prices = _parse_prices(data.get("api_prices"))
    classes = provider_classes() if classes is None else classes
    raw_providers = data.get("providers")
    if not isinstance(raw_providers, Sequence) or isinstance(raw_providers, str) or not raw_providers:
        raise ConfigError("providers", "must be a non-empty list of provider sections")
    providers = tuple(_build_provider(raw, f"providers[{i}]", classes) for i, raw in enumerate(raw_providers))
    seen: set[tuple[str, str, str]] = set()
    for i, provider in enumerate(providers):
        for target in provider.targets():
            if target.labels() in seen:
                raise ConfigError(f"providers[{i}]", f"duplicate target {target.labels()}")
            seen.add(target.labels())
    return ExporterConfig(
        refresh_interval=refresh,
        stale_after=stale,
        backoff=backoff,
        breaker_threshold=parse_positive_int(cb.get("failures", 3), "circuit_breaker.failures"),
        breaker_reset_after=parse_duration(
            cb.get("reset_after", 300), "circuit_breaker.reset_after", zero_ok=True
        ),
        prices=prices,
        providers=providers,
    )


def _parse_prices(raw: Any) -> dict[str, dict[str, float]]:
    prices: dict[str, dict[str, float]] = {}
    for provider, ops in parse_mapping(raw, "api_prices").items():
        table = parse_mapping(ops, f"api_prices.{provider}")
        prices[str(provider)] = {
            str(op): parse_number(price, f"api_prices.{provider}.{op}", 0) for op, price in table.items()
        }
    return prices


def _build_provider(raw: Any, key: str, classes: Mapping[str, type[Provider]]) -> Provider:
    section = parse_mapping(raw, key)
    kind = section.get("type")
    if kind not in classes:
        raise ConfigError(
            f"{key}.type", f"unknown provider {kind!r} (installed: {', '.join(sorted(classes))})"
        )
    body = {k: v for k, v in section.items() if k != "type"}
    return classes[str(kind)].from_config(body, key, {})


def load_config(path: str, classes: Mapping[str, type[Provider]] | None = None) -> ExporterConfig:
    return parse_config(load_yaml_mapping(path), classes)
