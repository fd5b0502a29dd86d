"""Cloud exporter GCP provider: the real google-cloud-monitoring client against an in-process gRPC fake."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from exporters.cloud.config import parse_config
from exporters.cloud.providers.gcp import GcpProvider
from exporters.cloud.providers.gcp_machine_types import MachineSize, resolve
from exporters.cloud.refresh import TargetRefresher
from tests.fakes.gcp_monitoring import GcpMonitoringFake
from tests.test_cloud_aws import refresher_for, scrape, values

PROJECT = "novacron-test"
GIB = 1024**3
MIB = 1024**2
# asia-east1 instances for the size tests: one the parser knows, one overridden, one unknown (two VMs).
SIZED = {"2000": "n2-highcpu-8", "2001": "a2-highgpu-1g", "2002": "m1-megamem-96", "2003": "m1-megamem-96"}
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
        for iid, machine_type in SIZED.items():
            f.put(iid, CE + "cpu/utilization", end, 0.5, zone="asia-east1-a", machine_type=machine_type)
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
    return refresher_for(p, p.targets()[0], now, 3)


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
    assert values(fams, "novacron_vm_vcpus", vm_id="1002") == [2.0]  # e2-standard-2, parsed, no call
    assert values(fams, "novacron_vm_memory_bytes", vm_id="1002") == [8.0 * GIB]
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


@pytest.mark.parametrize(
    ("name", "vcpus", "memory_mb"),
    [
        ("e2-standard-2", 2, 8192),
        ("n1-standard-1", 1, 3840),
        ("n1-highmem-2", 2, 13312),
        ("n1-highcpu-2", 2, 1843),  # the Compute API's memoryMb: 0.9 GB x 2, rounded down
        ("n2-highcpu-8", 8, 8192),
        ("n2d-highmem-4", 4, 32768),
        ("c3-highcpu-4", 4, 8192),
        ("c4-standard-8", 8, 30720),
        ("c3-standard-4-lssd", 4, 16384),
        ("e2-micro", 2, 1024),
        ("e2-medium", 2, 4096),
        ("f1-micro", 1, 614),
        ("g1-small", 1, 1740),
        ("custom-4-5120", 4, 5120),
        ("n2-custom-2-16384-ext", 2, 16384),
        ("e2-custom-medium-6144", 2, 6144),
        ("zones/europe-west1-b/machineTypes/n2-standard-4", 4, 16384),
    ],
)
def test_machine_type_names_parsed(name: str, vcpus: int, memory_mb: int) -> None:
    assert resolve(name) == MachineSize(vcpus, memory_mb)


@pytest.mark.parametrize(
    "name",
    [
        "m1-megamem-96",
        "a2-highgpu-1g",
        "zz9-standard-4",
        "c2-highmem-4",
        "n1-standard-0",
        "custom-0-1024",
        "n2-custom-micro-2048",
        "e2-standard",
        "",
    ],
)
def test_unknown_machine_types_are_not_guessed(name: str) -> None:
    assert resolve(name) is None


def test_sizes_resolved_without_calls_unknown_counted(fake: GcpMonitoringFake) -> None:
    fake.requests.clear()
    types = {"a2-highgpu-1g": {"vcpus": 12, "memory_mb": 87040}}
    p = provider(fake, regions=["asia-east1"], tags={}, concurrency=1, machine_types=types)
    r = refresher(p)
    assert r.refresh()
    # ListTimeSeries only, as before sizes: 7 metric types, the 4 CPU series at page size 2 on 2 pages.
    assert r.last_calls == len(fake.requests) == len(p.specs) + 1 == 8
    assert set(r.stats.calls) == {"ListTimeSeries"}
    fams = scrape(r, now=NOW)
    assert values(fams, "novacron_vm_vcpus", vm_id="2000") == [8.0]
    assert values(fams, "novacron_vm_memory_bytes", vm_id="2000") == [8.0 * GIB]
    assert values(fams, "novacron_vm_vcpus", vm_id="2001") == [12.0]  # from the config's machine_types
    assert values(fams, "novacron_vm_memory_bytes", vm_id="2001") == [87040.0 * MIB]
    for unknown in ("2002", "2003"):
        assert values(fams, "novacron_vm_vcpus", vm_id=unknown) == []
        assert values(fams, "novacron_vm_memory_bytes", vm_id=unknown) == []
    counted = {s.labels["instance_type"]: s.value for s in fams["novacron_cloud_vms_size_unknown"]}
    assert counted == {"m1-megamem-96": 2.0}


def test_machine_types_override_wins_over_parsing(fake: GcpMonitoringFake) -> None:
    p = provider(
        fake, regions=["asia-east1"], tags={}, machine_types={"N2-HIGHCPU-8": {"vcpus": 4, "memory_mb": 4096}}
    )
    r = refresher(p)
    assert r.refresh()
    assert values(scrape(r, now=NOW), "novacron_vm_vcpus", vm_id="2000") == [4.0]


@pytest.mark.parametrize(
    ("types", "key"),
    [
        ({"x": {"vcpus": 0, "memory_mb": 1024}}, "providers[0].machine_types.x.vcpus"),
        ({"x": {"vcpus": True, "memory_mb": 1024}}, "providers[0].machine_types.x.vcpus"),
        ({"x": {"vcpus": 2}}, "providers[0].machine_types.x.memory_mb"),
        ({"x": {"vcpus": 2, "memory_mb": 1.5}}, "providers[0].machine_types.x.memory_mb"),
        ({"x": {"vcpus": 2, "memory_mb": 1024, "gpus": 1}}, "providers[0].machine_types.x.gpus"),
        ({"x": 4}, "providers[0].machine_types.x"),
        (["x"], "providers[0].machine_types"),
    ],
)
def test_machine_types_config_errors_name_the_key(types: Any, key: str) -> None:
    from exporters.common.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(
            {"providers": [{"type": "gcp", "projects": [PROJECT], "machine_types": types}]},
            {"gcp": GcpProvider},
        )
    assert err.value.key == key
