"""Cloud exporter GCP provider: the real google-cloud-monitoring client against an in-process gRPC fake."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from exporters.cloud.config import parse_config
from exporters.cloud.providers.gcp import GcpProvider
from exporters.cloud.refresh import TargetRefresher
from exporters.cloud.resilience import Backoff, CircuitBreaker
from tests.fakes.gcp_monitoring import GcpMonitoringFake
from tests.test_cloud_aws import scrape, values

PROJECT = "novacron-test"
NOW = math.floor(time.time() / 3600) * 3600 - 3600 + 30
CE = "compute.googleapis.com/instance/"


@pytest.fixture(scope="module")
def fake() -> Iterator[GcpMonitoringFake]:
    with GcpMonitoringFake(PROJECT) as f:
        end = NOW - 30 - 240  # newest complete minute under the default 240 s delay
        for i in range(7):
            iid = str(1000 + i)
            labels = {"env": "prod", "tenant": "acme"} if i < 6 else {"env": "dev"}
            zone = "europe-west1-b" if i < 5 else "us-central1-a"
            kw: dict[str, Any] = {"name": f"gce-{i}", "zone": zone, "user_labels": labels}
            f.put(iid, CE + "cpu/utilization", end, 0.3, **kw)
            f.put(iid, CE + "cpu/utilization", end - 60, 0.2, **kw)
            # Two series per instance (loadbalanced true/false) add up: 70 + 30 = 100 bytes/s.
            f.put(
                iid,
                CE + "network/received_bytes_count",
                end,
                70.0,
                metric_labels={"loadbalanced": "false"},
                **kw,
            )
            f.put(
                iid,
                CE + "network/received_bytes_count",
                end,
                30.0,
                metric_labels={"loadbalanced": "true"},
                **kw,
            )
        yield f


def provider(fake: GcpMonitoringFake, **extra: Any) -> GcpProvider:
    raw = {
        "type": "gcp",
        "projects": [PROJECT],
        "regions": ["europe-west1"],
        "tags": {"env": "prod"},
        "endpoint_url": fake.endpoint,
        "page_size": 2,
        **extra,
    }
    p = parse_config({"providers": [raw]}, {"gcp": GcpProvider}).providers[0]
    assert isinstance(p, GcpProvider)
    return p


def refresher(p: GcpProvider, now: float = NOW) -> TargetRefresher:
    return TargetRefresher(
        p,
        p.targets()[0],
        prices={},
        backoff=Backoff(0.01, 0.05, 4),
        breaker=CircuitBreaker(2, 3600),
        stale_after=10_000,
        clock=lambda: now,
        sleep=lambda _s: None,
        rng=random.Random(3),
    )


def test_discovery_from_metric_labels_and_normalised_values(fake: GcpMonitoringFake) -> None:
    p = provider(fake)
    r = refresher(p)
    assert r.refresh()
    fams = scrape(r, now=NOW)
    info = {s.labels["vm_id"]: s.labels for s in fams["novacron_vm_info"]}
    assert set(info) == {"1000", "1001", "1002", "1003", "1004"}  # region and label filters applied
    one = info["1002"]
    assert one["provider"] == "gcp" and one["account"] == PROJECT and one["region"] == "europe-west1"
    assert (
        one["zone"] == "europe-west1-b"
        and one["vm_name"] == "gce-2"
        and one["instance_type"] == "e2-standard-2"
    )
    assert one["tenant"] == "acme"
    assert values(fams, "novacron_vm_cpu_utilisation_ratio", vm_id="1002") == [pytest.approx(0.3)]
    assert values(fams, "novacron_vm_network_receive_bytes_per_second", vm_id="1002") == [
        pytest.approx(100.0)
    ]
    assert values(fams, "novacron_cloud_data_age_seconds", metric="novacron_vm_cpu_utilisation_ratio") == [
        270.0
    ]


def test_one_paginated_call_per_metric_type_with_aligners(fake: GcpMonitoringFake) -> None:
    fake.requests.clear()
    p = provider(fake, concurrency=1)
    r = refresher(p)
    assert r.refresh()
    by_type: dict[str, list[Any]] = {}
    for req in fake.requests:
        by_type.setdefault(req.filter.split('"')[1], []).append(req)
    assert len(by_type) == len(p.specs) == 7  # default metric types
    # 5 CPU series at page size 2: 3 pages; 10 network series: 5 pages; no data types: 1 call each.
    assert len(by_type[CE + "cpu/utilization"]) == 3
    assert len(by_type[CE + "network/received_bytes_count"]) == 5
    assert r.stats.calls["ListTimeSeries"] == len(fake.requests) == 3 + 5 + 5
    cpu = by_type[CE + "cpu/utilization"][0]
    assert cpu.aggregation.alignment_period.seconds == 60 and 'starts_with("europe-west1")' in cpu.filter
    assert 'metadata.user_labels."env" = one_of("prod")' in cpu.filter


def test_throttling_retried_and_late_point_updates(fake: GcpMonitoringFake) -> None:
    p = provider(fake, defaults={"delay": "0s"}, concurrency=1)
    r = refresher(p)
    fake.throttle_next = 1
    assert r.refresh()
    assert r.stats.throttled["ListTimeSeries"] == 1
    assert values(scrape(r, now=NOW), "novacron_vm_cpu_utilisation_ratio", vm_id="1001") == [
        pytest.approx(0.3)
    ]
    fake.put("1001", CE + "cpu/utilization", NOW - 30, 0.9, name="gce-1", user_labels={"env": "prod"})
    assert r.refresh()
    assert values(scrape(r, now=NOW), "novacron_vm_cpu_utilisation_ratio", vm_id="1001") == [
        pytest.approx(0.9)
    ]


def test_unknown_project_is_an_error(fake: GcpMonitoringFake) -> None:
    p = provider(fake, projects=["other-project"], concurrency=1)
    r = refresher(p)
    assert not r.refresh()
    assert r.stats.errors["ListTimeSeries"] == 1 and not r.stats.throttled


def test_config_errors_name_the_key() -> None:
    from exporters.common.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(
            {"providers": [{"type": "gcp", "projects": [PROJECT], "endpoint_url": "ftp://x"}]},
            {"gcp": GcpProvider},
        )
    assert err.value.key == "providers[0].endpoint_url"
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": [{"type": "gcp", "projects": "p"}]}, {"gcp": GcpProvider})
    assert err.value.key == "providers[0].projects"
