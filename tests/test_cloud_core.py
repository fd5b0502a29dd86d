"""Cloud exporter core: late-data ranges, backoff bounds, circuit breaker, config parsing, entry points."""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from exporters.cloud.config import ENTRY_POINT_GROUP, parse_config, provider_classes
from exporters.cloud.main import build_app, build_refreshers
from exporters.cloud.model import VM, ApiCaller, LatePolicy, Provider, Sample, Target
from exporters.cloud.refresh import RefreshScheduler
from exporters.cloud.resilience import Backoff, CircuitBreaker
from exporters.common.config import ConfigError, check_keys, parse_duration, parse_number


def test_query_range_covers_whole_periods_before_the_delay() -> None:
    p = LatePolicy(period=300, delay=300, window=1200)
    start, end = p.query_range(10_000.0)  # (10000 - 300) floored to 300 s -> 9600
    assert (start, end) == (8400.0, 9600.0)
    odd = LatePolicy(period=60, delay=0, window=90)  # window rounds up to whole periods
    assert odd.query_range(6030.0) == (5880.0, 6000.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("1.5m", 90.0),
        ("2.5", 2.5),
        ("1h30m", 5400.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, "k") == seconds


@pytest.mark.parametrize("bad", ["soon", "5 minutes", True, "-1s", [1], "0s", 0, "inf", float("nan"), "5m1"])
def test_bad_durations_name_the_key(bad: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_duration(bad, "providers[0].defaults.delay")
    assert err.value.key == "providers[0].defaults.delay"


def test_duration_floor_and_zero() -> None:
    assert parse_duration("0s", "k", zero_ok=True) == 0.0
    assert parse_duration("2m", "k", 60) == 120.0
    with pytest.raises(ConfigError, match="at least 60s"):
        parse_duration("30s", "k", 60)


@pytest.mark.parametrize("bad", [True, "3", float("nan"), float("inf"), -1, 11, None])
def test_bad_numbers_name_the_key_and_the_range(bad: object) -> None:
    with pytest.raises(ConfigError, match="must be a number from 0 to 10") as err:
        parse_number(bad, "analysis.batch_size", 0, 10)
    assert err.value.key == "analysis.batch_size"
    assert parse_number(10, "k", 0, 10) == 10.0
    assert parse_number(0.5, "k", 0) == 0.5


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


class BlockingProvider(Provider):
    """A custom provider (the plug-in interface) whose metric fetch blocks until released."""

    name = "blocking"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.fetching = threading.Event()
        self.specs = ()

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], key: str, defaults: Mapping[str, Any]) -> Provider:
        check_keys(raw, set(), key)
        return cls()

    def targets(self) -> Sequence[Target]:
        return [Target("blocking", "acct", "r1")]

    def discover(self, target: Target, now: float, api: ApiCaller) -> list[VM]:
        return [api.call("List", lambda: VM("vm-1", "one", "acct", "r1"))]

    def fetch(self, target: Target, vms: Sequence[VM], now: float, api: ApiCaller) -> list[Sample]:
        self.fetching.set()
        self.release.wait(10)
        return [Sample("novacron_vm_cpu_utilisation_ratio", "vm-1", 0.5, now)]

    def is_throttled(self, exc: BaseException) -> bool:
        return False


def test_scrapes_read_the_cache_while_a_refresh_is_stuck() -> None:
    config = parse_config(
        {"refresh_interval": "1s", "providers": [{"type": "blocking"}]}, {"blocking": BlockingProvider}
    )
    provider = config.providers[0]
    assert isinstance(provider, BlockingProvider)
    refreshers = build_refreshers(config)
    app = build_app(refreshers, "/metrics", None)
    client = Client(app)
    scheduler = RefreshScheduler(refreshers, config.refresh_interval)
    scheduler.start()
    try:
        assert provider.fetching.wait(10)
        started = time.monotonic()
        body = client.get("/metrics").get_data(as_text=True)
        assert time.monotonic() - started < 1.0  # the stuck cloud call does not hold the scrape
        assert 'novacron_cloud_up{account="acct",provider="blocking",region="r1"} 0.0' in body
        assert "novacron_vm_info{" not in body
        provider.release.set()
        deadline = time.monotonic() + 10
        while "novacron_vm_cpu_utilisation_ratio{" not in body and time.monotonic() < deadline:
            time.sleep(0.05)
            body = client.get("/metrics").get_data(as_text=True)
        assert 'novacron_vm_cpu_utilisation_ratio{vm_id="vm-1"} 0.5' in body
        assert 'novacron_cloud_api_calls_total{account="acct",operation="List"' in body
    finally:
        provider.release.set()
        scheduler.stop()


def test_web_config_basic_auth_protects_metrics(tmp_path: Path) -> None:
    import bcrypt

    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    config = parse_config({"providers": [{"type": "blocking"}]}, {"blocking": BlockingProvider})
    client = Client(build_app(build_refreshers(config), "/metrics", str(web)))
    assert client.get("/metrics").status_code == 401
    auth = "Basic " + base64.b64encode(b"prometheus:s3cret").decode()
    assert client.get("/metrics", headers={"Authorization": auth}).status_code == 200
