"""Cloud exporter core: late-data ranges, backoff bounds, circuit breaker, config parsing, entry points."""

from __future__ import annotations

import random

import pytest

from exporters.cloud.config import ENTRY_POINT_GROUP, parse_config, parse_duration, provider_classes
from exporters.cloud.model import LatePolicy
from exporters.cloud.resilience import Backoff, CircuitBreaker
from exporters.common.config import ConfigError


def test_query_range_covers_whole_periods_before_the_delay() -> None:
    p = LatePolicy(period=300, delay=300, window=1200)
    start, end = p.query_range(10_000.0)  # (10000 - 300) floored to 300 s -> 9600
    assert (start, end) == (8400.0, 9600.0)
    odd = LatePolicy(period=60, delay=0, window=90)  # window rounds up to whole periods
    assert odd.query_range(6030.0) == (5880.0, 6000.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("500ms", 0.5), ("1.5m", 90.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, "k") == seconds


@pytest.mark.parametrize("bad", ["soon", "5 minutes", True, "-1s", [1]])
def test_bad_durations_name_the_key(bad: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_duration(bad, "providers[0].defaults.delay")
    assert err.value.key == "providers[0].defaults.delay"


def test_backoff_is_bounded_full_jitter() -> None:
    b = Backoff(base=1.0, cap=8.0, attempts=5)
    rng = random.Random(7)
    for retry, upper in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        delays = [b.delay(retry, rng) for _ in range(200)]
        assert all(0 <= d <= upper for d in delays)
        assert max(delays) > upper * 0.8  # jitter spreads over the whole range
        assert len(set(delays)) > 150


def test_breaker_opens_skips_and_half_opens() -> None:
    now = [0.0]
    cb = CircuitBreaker(threshold=2, reset_after=60, clock=lambda: now[0])
    cb.record_failure()
    assert cb.allow() and cb.state == "closed"
    cb.record_failure()
    assert cb.state == "open" and not cb.allow()
    now[0] = 61
    assert cb.state == "half_open" and cb.allow()
    cb.record_failure()  # the trial failed: open again at once
    assert cb.state == "open"
    now[0] = 130
    cb.record_success()
    assert cb.state == "closed" and cb.failures == 0


def test_entry_points_provide_the_three_providers() -> None:
    classes = provider_classes()
    assert {"aws", "azure", "gcp"} <= set(classes), ENTRY_POINT_GROUP
    assert all(cls.name == name for name, cls in classes.items() if name in {"aws", "azure", "gcp"})


def test_duplicate_targets_are_refused() -> None:
    section = {"type": "gcp", "projects": ["p"]}
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": [section, section]})
    assert err.value.key == "providers[1]"


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"refresh": "1m", "providers": [{"type": "gcp", "projects": ["p"]}]})
    assert err.value.key == "refresh"
