"""Cloud exporter Azure provider: the real SDKs against a local fake of ARM and metrics:getBatch."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from exporters.cloud.config import parse_config
from exporters.cloud.model import Target
from exporters.cloud.providers.azure import AzureProvider
from exporters.cloud.refresh import TargetRefresher
from tests.fakes.azure_metrics import AzureFake, StaticTokenCredential
from tests.test_cloud_aws import refresher_for, scrape, values

SUB = "00000000-0000-0000-0000-00000000aaaa"
SUB2 = "00000000-0000-0000-0000-00000000bbbb"  # VM sizes tests: VMs seeded per test, apart from SUB's
GIB = 1024**3
NOW = math.floor(time.time() / 3600) * 3600 - 3600 + 30


@pytest.fixture(scope="module")
def fake() -> Iterator[AzureFake]:
    with AzureFake(page_size=2) as f:
        for i in range(60):  # more than one batch of 50
            rid = f.add_vm(SUB, "rg-web", f"web-{i}", tags={"env": "prod", "tenant": "acme"})
            f.put(rid, "Percentage CPU", NOW - 270, 25.0)
            f.put(rid, "Network In Total", NOW - 270, 6000.0)
            f.put(rid, "VmAvailabilityMetric", NOW - 270, 1.0)
        f.add_vm(SUB, "rg-web", "web-stopped", power="deallocated", tags={"env": "prod"})
        f.add_vm(SUB, "rg-dev", "dev-0", tags={"env": "dev"})
        f.add_vm(SUB, "rg-web", "web-us", location="eastus", tags={"env": "prod"})
        yield f


def provider(fake: AzureFake, **extra: Any) -> AzureProvider:
    raw = {
        "type": "azure",
        "subscriptions": [SUB],
        "regions": ["westeurope"],
        "tags": {"env": "prod"},
        "endpoint_url": fake.url,
        "management_endpoint_url": fake.url,
        "concurrency": 2,
        **extra,
    }
    p = parse_config({"providers": [raw]}, {"azure": AzureProvider}).providers[0]
    assert isinstance(p, AzureProvider)
    p._credential = StaticTokenCredential()
    return p


def refresher(p: AzureProvider, now: float = NOW, target: Target | None = None) -> TargetRefresher:
    return refresher_for(p, target or p.targets()[0], now, 2)


def test_discovery_paged_filtered_by_region_and_tags(fake: AzureFake) -> None:
    r = refresher(provider(fake))
    assert r.refresh()
    fams = scrape(r, now=NOW)
    info = {s.labels["vm_name"]: s.labels for s in fams["novacron_vm_info"]}
    assert len(info) == 61 and "dev-0" not in info and "web-us" not in info
    web = info["web-3"]
    assert (
        web["vm_id"]
        == f"/subscriptions/{SUB}/resourcegroups/rg-web/providers/microsoft.compute/virtualmachines/web-3"
    )
    assert web["provider"] == "azure" and web["account"] == SUB and web["region"] == "westeurope"
    assert (
        web["zone"] == "westeurope-1"
        and web["instance_type"] == "Standard_D2s_v3"
        and web["tenant"] == "acme"
    )
    assert values(fams, "novacron_vm_state", vm_id=info["web-stopped"]["vm_id"]) == [5.0]
    assert r.stats.calls["ListVirtualMachines"] == 32  # 63 VMs in the subscription, 2 per page
    # Standard_D2s_v3 from the location's size list: 2 vCPUs, 8 GiB (also for the deallocated VM).
    assert values(fams, "novacron_vm_vcpus", vm_id=web["vm_id"]) == [2.0]
    assert values(fams, "novacron_vm_memory_bytes", vm_id=info["web-stopped"]["vm_id"]) == [8.0 * GIB]
    assert r.stats.calls["ListVirtualMachineSizes"] == 1
    assert "novacron_cloud_vms_size_unknown" not in fams


def test_batch_metrics_normalised(fake: AzureFake) -> None:
    fake.batch_sizes.clear()
    r = refresher(provider(fake))
    assert r.refresh()
    # 60 running VMs: one batch of 50 and one of 10 (the deallocated VM is not asked for).
    assert sorted(fake.batch_sizes) == [10, 50] and r.stats.calls["MetricsBatch"] == 2
    fams = scrape(r, now=NOW)
    vm = f"/subscriptions/{SUB}/resourcegroups/rg-web/providers/microsoft.compute/virtualmachines/web-7"
    assert values(fams, "novacron_vm_cpu_utilisation_ratio", vm_id=vm) == [pytest.approx(0.25)]
    assert values(fams, "novacron_vm_network_receive_bytes_per_second", vm_id=vm) == [pytest.approx(100.0)]
    assert values(fams, "novacron_vm_status_check_failed", vm_id=vm, check="availability") == [0.0]
    assert values(fams, "novacron_vm_disk_read_bytes_per_second", vm_id=vm) == []  # no data: absent, not NaN
    # Defaults: period 60 s, delay 180 s; the newest point (NOW-270) ends at NOW-210.
    age = values(fams, "novacron_cloud_data_age_seconds", metric="novacron_vm_cpu_utilisation_ratio")
    assert age == [pytest.approx(210.0)]


def test_late_point_arrives(fake: AzureFake) -> None:
    p = provider(fake, defaults={"delay": "0s", "window": "10m"})
    r = refresher(p)
    rid = f"/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-9"
    assert r.refresh()
    assert values(scrape(r, now=NOW), "novacron_vm_cpu_utilisation_ratio", vm_id=rid.lower()) == [0.25]
    fake.put(rid, "Percentage CPU", NOW - 90, 80.0)
    assert r.refresh()
    assert values(scrape(r, now=NOW), "novacron_vm_cpu_utilisation_ratio", vm_id=rid.lower()) == [0.8]


def test_429_is_retried_and_counted(fake: AzureFake) -> None:
    r = refresher(provider(fake, concurrency=1))
    fake.throttle_next = 2
    assert r.refresh()
    assert sum(r.stats.throttled.values()) == 2
    fams = scrape(r, now=NOW)
    assert values(fams, "novacron_cloud_up") == [1.0]
    assert sum(values(fams, "novacron_cloud_api_throttled_total")) == 2.0


def test_wrong_token_is_an_error_not_throttling(fake: AzureFake) -> None:
    p = provider(fake)

    class Wrong(StaticTokenCredential):
        def get_token(self, *scopes: str, **kw: Any) -> Any:
            from azure.core.credentials import AccessToken

            return AccessToken("nope", int(time.time()) + 3600)

    p._credential = Wrong()
    r = refresher(p)
    assert not r.refresh()
    assert r.stats.errors["ListVirtualMachines"] == 1 and not r.stats.throttled


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"subscriptions": None}, "providers[0].subscriptions"),
        ({"client_secret": "s"}, "providers[0].client_secret"),
        ({"size_cache_ttl": "5s"}, "providers[0].size_cache_ttl"),  # at least a minute
        ({"size_cache_ttl": "six hours"}, "providers[0].size_cache_ttl"),
    ],
)
def test_config_errors_name_the_key(extra: dict[str, Any], key: str) -> None:
    from exporters.common.config import ConfigError

    section = {"type": "azure", "subscriptions": ["s"], "regions": ["westeurope"], **extra}
    with pytest.raises(ConfigError) as err:
        parse_config(
            {"providers": [{k: v for k, v in section.items() if v is not None}]}, {"azure": AzureProvider}
        )
    assert err.value.key == key


def test_resource_group_listing(fake: AzureFake) -> None:
    p = provider(fake, resource_groups=["rg-dev"], tags={"env": "dev"})
    r = refresher(p)
    assert r.refresh()
    names = [s.labels["vm_name"] for s in scrape(r, now=NOW)["novacron_vm_info"]]
    assert names == ["dev-0"]
    assert r.stats.calls["ListVirtualMachines"] == 1


def sizes_provider(fake: AzureFake, regions: list[str], **extra: Any) -> AzureProvider:
    return provider(fake, subscriptions=[SUB2], regions=regions, tags={}, **extra)


def test_sizes_listed_once_per_region_across_refreshes(fake: AzureFake) -> None:
    east = fake.add_vm(SUB2, "rg-s", "size-east", location="eastus", size="Standard_E4s_v5", zone=None)
    north = fake.add_vm(SUB2, "rg-s", "size-north", location="northeurope", size="Standard_B1s")
    p = sizes_provider(fake, ["eastus", "northeurope"])
    refreshers = [refresher(p, target=t) for t in p.targets()]
    before = len(fake.size_calls())
    for _ in range(3):
        assert all(r.refresh() for r in refreshers)
    calls = fake.size_calls()[before:]
    assert sorted(calls) == [
        f"/subscriptions/{SUB2}/providers/Microsoft.Compute/locations/{loc}/vmSizes"
        for loc in ("eastus", "northeurope")
    ]
    fams = scrape(*refreshers, now=NOW)
    assert values(fams, "novacron_vm_vcpus", vm_id=east.lower()) == [4.0]
    assert values(fams, "novacron_vm_memory_bytes", vm_id=east.lower()) == [32.0 * GIB]
    assert values(fams, "novacron_vm_vcpus", vm_id=north.lower()) == [1.0]
    assert values(fams, "novacron_vm_memory_bytes", vm_id=north.lower()) == [1.0 * GIB]
    assert values(fams, "novacron_cloud_api_calls_total", operation="ListVirtualMachineSizes") == [1.0, 1.0]
    # After the first refresh a refresh is back at the floor: one VM list page and one metrics batch.
    assert [r.last_calls for r in refreshers] == [2, 2]


def test_size_cache_expires_after_its_ttl(fake: AzureFake) -> None:
    fake.add_vm(SUB2, "rg-t", "ttl-0", location="westus", size="Standard_F2s_v2")
    p = sizes_provider(fake, ["westus"], size_cache_ttl="1h")
    # The provider holds the cache, so fresh refreshers at later clocks share it.
    assert refresher(p).refresh() and refresher(p, now=NOW + 3599).refresh()
    assert sum(c.endswith("/westus/vmSizes") for c in fake.size_calls()) == 1
    r = refresher(p, now=NOW + 3601)
    assert r.refresh() and r.stats.calls["ListVirtualMachineSizes"] == 1
    assert sum(c.endswith("/westus/vmSizes") for c in fake.size_calls()) == 2


def test_unknown_size_counted_not_guessed(fake: AzureFake) -> None:
    odd = fake.add_vm(SUB2, "rg-u", "odd-0", location="centralus", size="Standard_Unlisted_v9")
    fake.add_vm(SUB2, "rg-u", "odd-1", location="centralus", size="Standard_Unlisted_v9")
    known = fake.add_vm(SUB2, "rg-u", "ok-0", location="centralus", size="standard_d2s_v5")
    r = refresher(sizes_provider(fake, ["centralus"]))
    assert r.refresh()
    fams = scrape(r, now=NOW)
    assert values(fams, "novacron_vm_vcpus", vm_id=odd.lower()) == []
    assert values(fams, "novacron_vm_memory_bytes", vm_id=odd.lower()) == []
    assert values(fams, "novacron_vm_vcpus", vm_id=known.lower()) == [2.0]  # size names match in any case
    unknown = values(fams, "novacron_cloud_vms_size_unknown", instance_type="Standard_Unlisted_v9")
    assert unknown == [2.0] and len(fams["novacron_cloud_vms_size_unknown"]) == 1


def test_failed_size_listing_keeps_metrics_and_retries_later(fake: AzureFake) -> None:
    rid = fake.add_vm(SUB2, "rg-f", "fail-0", location="southindia", size="Standard_D4s_v5")
    fake.put(rid, "Percentage CPU", NOW - 270, 50.0)
    p = sizes_provider(fake, ["southindia"])
    fake.fail_sizes = 1
    r = refresher(p)
    assert r.refresh()  # sizes are metadata: the refresh and its metrics go on
    fams = scrape(r, now=NOW)
    assert values(fams, "novacron_vm_cpu_utilisation_ratio", vm_id=rid.lower()) == [0.5]
    assert values(fams, "novacron_vm_vcpus", vm_id=rid.lower()) == []
    assert r.stats.errors["ListVirtualMachineSizes"] == 1
    assert values(fams, "novacron_cloud_vms_size_unknown", instance_type="Standard_D4s_v5") == [1.0]
    assert refresher(p, now=NOW + 60).refresh()  # not asked again at once
    later = refresher(p, now=NOW + 901)
    assert later.refresh() and later.stats.calls["ListVirtualMachineSizes"] == 1
    assert values(scrape(later, now=NOW + 901), "novacron_vm_vcpus", vm_id=rid.lower()) == [4.0]
    assert sum(c.endswith("/southindia/vmSizes") for c in fake.size_calls()) == 2
