"""Cloud exporter AWS provider against moto: discovery, GetMetricData, throttling, late data."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporters.cloud.collector import CloudCollector
from exporters.cloud.config import parse_config
from exporters.cloud.model import Provider, Target
from exporters.cloud.providers.aws import AwsProvider
from exporters.cloud.refresh import TargetRefresher
from exporters.cloud.resilience import Backoff, CircuitBreaker
from exporters.common.web import registry_with
from tests.fakes import aws_seed
from tests.harness import ManagedProcess

pytestmark = pytest.mark.slow

REGION = "eu-west-1"
OTHER = "eu-central-1"
PERIOD = 60
# A fixed "now" aligned so the late-data arithmetic is exact: end of the query range = NOW - 60.
NOW = math.floor(__import__("time").time() / 3600) * 3600 - 3600 + 30


@pytest.fixture(scope="module")
def fleet(moto: ManagedProcess) -> dict[str, list[str]]:
    url = aws_seed.endpoint_of(moto)
    prod = aws_seed.launch(url, REGION, 3, {"env": "prod", "tenant": "acme"})
    dev = aws_seed.launch(url, REGION, 2, {"env": "dev"})
    other = aws_seed.launch(url, OTHER, 1, {"env": "prod"})
    # History: 10 one-minute periods ending one period before the query end (period ends at NOW - 60).
    points = aws_seed.history(
        prod,
        {"CPUUtilization": 42.0, "NetworkIn": 6000.0, "StatusCheckFailed_Instance": 0},
        NOW - 60 - 600,
        NOW - 60,
        PERIOD,
    )
    aws_seed.put(url, REGION, points)
    aws_seed.put(url, OTHER, aws_seed.history(other, {"CPUUtilization": 10.0}, NOW - 600, NOW - 60, PERIOD))
    return {"prod": prod, "dev": dev, "other": other}


def provider(moto: ManagedProcess, **extra: Any) -> AwsProvider:
    raw = {
        "type": "aws",
        "account": "123456789012",
        "regions": [REGION, OTHER],
        "endpoint_url": aws_seed.endpoint_of(moto),
        "discovery": {"tags": {"env": "prod"}},
        "defaults": {"period": "1m", "delay": "1m", "window": "5m"},
        "concurrency": 1,
        **extra,
    }
    config = parse_config({"providers": [raw]}, {"aws": AwsProvider})
    p = config.providers[0]
    assert isinstance(p, AwsProvider)
    return p


def refresher_for(p: Provider, target: Target, now: float, seed: int, **kw: Any) -> TargetRefresher:
    """A refresher on a fixed clock that never sleeps (any provider): fast retries, a breaker after 2."""
    return TargetRefresher(
        p,
        target,
        prices={},
        backoff=kw.pop("backoff", Backoff(base=0.01, cap=0.05, attempts=4)),
        breaker=kw.pop("breaker", CircuitBreaker(threshold=2, reset_after=3600)),
        stale_after=10_000,
        clock=lambda: now,
        sleep=lambda _s: None,
        rng=random.Random(seed),
    )


def refresher(p: AwsProvider, region: str = REGION, now: float = NOW, **kw: Any) -> TargetRefresher:
    return refresher_for(p, next(t for t in p.targets() if t.region == region), now, 1, **kw)


def scrape(*refreshers: TargetRefresher, now: float = NOW) -> dict[str, list[Any]]:
    text = generate_latest(registry_with(CloudCollector(refreshers, clock=lambda: now))).decode()
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def values(fams: dict[str, list[Any]], name: str, **match: str) -> list[float]:
    return [s.value for s in fams.get(name, []) if all(s.labels.get(k) == v for k, v in match.items())]


def test_discovery_by_tags_and_vm_info(moto: ManagedProcess, fleet: dict[str, list[str]]) -> None:
    r = refresher(provider(moto))
    assert r.refresh()
    fams = scrape(r)
    info = {s.labels["vm_id"]: s.labels for s in fams["novacron_vm_info"]}
    assert set(info) == set(fleet["prod"])  # dev instances are filtered out by the tag
    one = info[fleet["prod"][0]]
    assert one["provider"] == "aws" and one["account"] == "123456789012" and one["region"] == REGION
    assert one["zone"].startswith(REGION) and one["instance_type"] == "t3.micro" and one["tenant"] == "acme"
    assert one["vm_name"].startswith("prod-")
    assert values(fams, "novacron_vm_state", vm_id=fleet["prod"][0]) == [1.0]
    assert values(fams, "novacron_vm_memory_bytes", vm_id=fleet["prod"][0]) == [1024 * 1024 * 1024]
    assert values(fams, "novacron_vm_vcpus", vm_id=fleet["prod"][0]) == [2.0]


def test_metrics_are_normalised(moto: ManagedProcess, fleet: dict[str, list[str]]) -> None:
    r = refresher(provider(moto))
    assert r.refresh()
    fams = scrape(r)
    vm = fleet["prod"][1]
    assert values(fams, "novacron_vm_cpu_utilisation_ratio", vm_id=vm) == [pytest.approx(0.42)]
    # NetworkIn is a Sum of bytes over the 60 s period: 6000 bytes -> 100 bytes/s.
    assert values(fams, "novacron_vm_network_receive_bytes_per_second", vm_id=vm) == [pytest.approx(100.0)]
    assert values(fams, "novacron_vm_status_check_failed", vm_id=vm, check="instance") == [0.0]
    # Nothing was published for DiskReadBytes: the series is absent, never NaN.
    assert values(fams, "novacron_vm_disk_read_bytes_per_second", vm_id=vm) == []
    assert all(not math.isnan(s.value) for f in fams.values() for s in f)
    assert values(fams, "novacron_cloud_up", region=REGION) == [1.0]
    info = values(fams, "novacron_cloud_metric_info", source="CPUUtilization", period_seconds="60")
    assert info == [1.0]


def test_one_get_metric_data_call_per_500_queries(moto: ManagedProcess, fleet: dict[str, list[str]]) -> None:
    r = refresher(provider(moto))
    assert r.refresh()
    # 3 VMs x 9 default metrics = 27 queries: one GetMetricData call, priced per metric requested.
    assert r.stats.calls["GetMetricData"] == 1
    assert r.last_cost == pytest.approx(27 * 0.00001)
    fams = scrape(r)
    assert values(fams, "novacron_cloud_api_calls_total", operation="GetMetricData", region=REGION) == [1.0]
    assert values(fams, "novacron_cloud_refresh_cost_dollars", region=REGION) == [pytest.approx(27e-5)]


def test_regions_are_separate_targets(moto: ManagedProcess, fleet: dict[str, list[str]]) -> None:
    p = provider(moto)
    a, b = refresher(p, REGION), refresher(p, OTHER)
    assert a.refresh() and b.refresh()
    fams = scrape(a, b)
    assert values(fams, "novacron_cloud_vms", region=OTHER) == [1.0]
    assert values(fams, "novacron_vm_cpu_utilisation_ratio", vm_id=fleet["other"][0]) == [pytest.approx(0.10)]


class Throttle:
    """A botocore before-call hook answering the first `n` calls with CloudWatch's Throttling error."""

    def __init__(self, n: int) -> None:
        self.remaining = n
        self.seen = 0

    def __call__(self, **_kw: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        self.seen += 1
        if self.remaining <= 0:
            return None
        self.remaining -= 1
        body = {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}, "ResponseMetadata": {}}
        return AWSResponse("http://throttled", 400, {}, None), body


def test_throttling_is_retried_with_backoff(moto: ManagedProcess, fleet: dict[str, list[str]]) -> None:
    p = provider(moto)
    hook = Throttle(2)
    p.clients[REGION].cloudwatch.meta.events.register("before-call.cloudwatch.GetMetricData", hook)
    slept: list[float] = []
    r = refresher(p)
    r.sleep = slept.append
    assert r.refresh()
    assert hook.seen == 3 and len(slept) == 2 and all(0 <= s <= 0.05 for s in slept)
    fams = scrape(r)
    assert values(fams, "novacron_cloud_api_throttled_total", operation="GetMetricData") == [2.0]
    assert values(fams, "novacron_cloud_api_calls_total", operation="GetMetricData") == [3.0]
    assert values(fams, "novacron_vm_cpu_utilisation_ratio", vm_id=fleet["prod"][0]) == [pytest.approx(0.42)]


def test_persistent_throttling_opens_the_breaker_and_keeps_last_values(
    moto: ManagedProcess, fleet: dict[str, list[str]]
) -> None:
    p = provider(moto)
    r = refresher(p)
    assert r.refresh()
    hook = Throttle(1000)
    p.clients[REGION].cloudwatch.meta.events.register("before-call.cloudwatch.GetMetricData", hook)
    assert not r.refresh() and not r.refresh()  # 2 failures: threshold reached
    assert r.breaker.state == "open"
    calls_before = hook.seen
    assert not r.refresh()  # skipped: no API call while open
    assert hook.seen == calls_before == 8  # 2 refreshes x 4 attempts
    fams = scrape(r)
    assert values(fams, "novacron_cloud_up", region=REGION) == [0.0]
    assert values(fams, "novacron_cloud_circuit_breaker_open", region=REGION) == [1.0]
    assert values(fams, "novacron_cloud_refreshes_total", region=REGION, result="skipped") == [1.0]
    # The last good values stay exposed (until stale_after), so a throttled API does not make a gap.
    assert values(fams, "novacron_vm_cpu_utilisation_ratio", vm_id=fleet["prod"][0]) == [pytest.approx(0.42)]


def test_late_datapoints_leave_no_gap_then_update(moto: ManagedProcess, fleet: dict[str, list[str]]) -> None:
    """The newest period (ending NOW) is published late: the previous value stays, then the late one wins."""
    p = provider(moto, defaults={"period": "1m", "delay": "0s", "window": "5m"})
    vm = fleet["prod"][2]
    r = refresher(p)
    assert r.refresh()
    fams = scrape(r)
    assert values(fams, "novacron_vm_cpu_utilisation_ratio", vm_id=vm) == [pytest.approx(0.42)]
    age = values(
        fams, "novacron_cloud_data_age_seconds", region=REGION, metric="novacron_vm_cpu_utilisation_ratio"
    )
    assert age == [pytest.approx(90.0)]  # NOW is 30 s into a period; newest data ends one period earlier
    aws_seed.put(aws_seed.endpoint_of(moto), REGION, [(vm, "CPUUtilization", NOW - 60, 99.0)])
    assert r.refresh()
    fams = scrape(r)
    assert values(fams, "novacron_vm_cpu_utilisation_ratio", vm_id=vm) == [pytest.approx(0.99)]
    assert values(fams, "novacron_vm_cpu_utilisation_ratio", vm_id=fleet["prod"][0]) == [pytest.approx(0.42)]


def test_stale_snapshot_is_dropped(moto: ManagedProcess, fleet: dict[str, list[str]]) -> None:
    r = refresher(provider(moto))
    assert r.refresh()
    r.clock = lambda: NOW + 20_000
    fams = scrape(r, now=NOW + 20_000)
    assert fams.get("novacron_vm_info", []) == [] and values(fams, "novacron_cloud_up", region=REGION) == [
        1.0
    ]


def test_ebs_and_agent_namespaces(moto: ManagedProcess, fleet: dict[str, list[str]]) -> None:
    p = provider(moto, extra_namespaces=["CWAgent", "EBS"])
    r = refresher(p)
    assert r.refresh()
    vm = fleet["prod"][0]
    volume = next(v for v, owner in p._volumes[REGION].items() if owner == vm)
    url = aws_seed.endpoint_of(moto)
    aws_seed.put(url, REGION, [(vm, "mem_used_percent", NOW - 120, 55.0)], namespace="CWAgent")
    aws_seed.put(url, REGION, [(volume, "VolumeReadBytes", NOW - 120, 1200.0)], "AWS/EBS", "VolumeId")
    aws_seed.put(url, REGION, [(vm, "DiskReadBytes", NOW - 120, 600.0)])
    assert r.refresh()
    fams = scrape(r)
    assert values(fams, "novacron_vm_memory_utilisation_ratio", vm_id=vm) == [pytest.approx(0.55)]
    # Instance store (600 B) and EBS (1200 B) over 60 s are one disk concept: 30 bytes/s.
    assert values(fams, "novacron_vm_disk_read_bytes_per_second", vm_id=vm) == [pytest.approx(30.0)]


def test_config_rejects_unknown_metric_and_short_window(tmp_path: Path) -> None:
    from exporters.common.config import ConfigError

    base = {"type": "aws", "account": "1", "regions": ["eu-west-1"]}
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": [{**base, "metrics": ["CPUUtilisation"]}]}, {"aws": AwsProvider})
    assert err.value.key == "providers[0].metrics[0].name"
    with pytest.raises(ConfigError) as err:
        parse_config(
            {"providers": [{**base, "defaults": {"period": "5m", "window": "1m"}}]}, {"aws": AwsProvider}
        )
    assert err.value.key == "providers[0].defaults.window"
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": [{**base, "secret_access_key": "x"}]}, {"aws": AwsProvider})
    assert err.value.key == "providers[0].secret_access_key"


def test_get_metric_data_follows_next_token(moto: ManagedProcess, fleet: dict[str, list[str]]) -> None:
    """CloudWatch may split one call's results over pages; datapoints of one query may span pages."""
    p = provider(moto)
    seen: list[dict[str, Any]] = []
    events = p.clients[REGION].cloudwatch.meta.events

    def record(params: dict[str, Any], **_kw: Any) -> None:
        seen.append(dict(params))

    def first_page_then_moto(**_kw: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if len(seen) > 1:
            return None  # page 2: moto answers with everything
        old = datetime.fromtimestamp(NOW - 600, UTC)
        page = {"Id": "q0", "Label": "x", "Timestamps": [old], "Values": [1.0], "StatusCode": "PartialData"}
        body = {"MetricDataResults": [page], "NextToken": "page-2", "Messages": [], "ResponseMetadata": {}}
        return AWSResponse("http://paged", 200, {}, None), body

    events.register("before-parameter-build.cloudwatch.GetMetricData", record)
    events.register("before-call.cloudwatch.GetMetricData", first_page_then_moto)
    r = refresher(p)
    assert r.refresh()
    assert len(seen) == 2 and seen[1]["NextToken"] == "page-2"
    assert r.stats.calls["GetMetricData"] == 2
    # q0 is the first VM's CPU: the newer datapoint of page 2 wins over page 1's old one.
    fams = scrape(r)
    assert values(fams, "novacron_vm_cpu_utilisation_ratio", vm_id=fleet["prod"][0]) == [pytest.approx(0.42)]


def test_runaway_paging_fails_the_refresh(
    moto: ManagedProcess, fleet: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporters.cloud.providers as providers_pkg
    import exporters.cloud.providers.aws as aws_mod

    monkeypatch.setattr(aws_mod, "MAX_LIST_PAGES", 5)
    monkeypatch.setattr(providers_pkg, "MAX_LIST_PAGES", 5)
    p = provider(moto)

    def always_more(**_kw: Any) -> tuple[AWSResponse, dict[str, Any]]:
        body = {"MetricDataResults": [], "NextToken": "again", "Messages": [], "ResponseMetadata": {}}
        return AWSResponse("http://paged", 200, {}, None), body

    p.clients[REGION].cloudwatch.meta.events.register("before-call.cloudwatch.GetMetricData", always_more)
    r = refresher(p)
    assert not r.refresh()
    assert r.stats.calls["GetMetricData"] == 5 and r.refreshes["failure"] == 1
