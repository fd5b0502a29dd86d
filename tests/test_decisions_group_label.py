"""The `novacron_group` label of novacron_vm_info (scaling groups) as the cloud exporter sets it from tags."""

from __future__ import annotations

import random
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporters.cloud.collector import CloudCollector
from exporters.cloud.config import parse_config
from exporters.cloud.model import Target
from exporters.cloud.providers import group_of
from exporters.cloud.providers.aws import AwsProvider
from exporters.cloud.providers.azure import AzureProvider
from exporters.cloud.providers.gcp import GcpProvider, _Series
from exporters.cloud.refresh import TargetRefresher
from exporters.cloud.resilience import Backoff, CircuitBreaker
from exporters.common.schema import VM_INFO_LABELS
from exporters.common.web import registry_with
from tests.fakes import aws_seed
from tests.harness import ManagedProcess

REGION = "ca-central-1"  # no other test seeds this region on the shared moto server


def _info(refresher: TargetRefresher) -> dict[str, dict[str, str]]:
    text = generate_latest(registry_with(CloudCollector([refresher]))).decode()
    return {
        s.labels["vm_id"]: s.labels
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "novacron_vm_info"
    }


def test_aws_instances_get_their_group_from_either_tag(moto: ManagedProcess) -> None:
    url = aws_seed.endpoint_of(moto)
    ids = aws_seed.launch(url, REGION, 4, {"env": "grp"})  # one launch: moto's AMI listing is slow
    colon, underscore, none = ids[:2], ids[2:3], ids[3:]
    ec2 = aws_seed.session().client("ec2", region_name=REGION, endpoint_url=url)
    ec2.create_tags(Resources=colon, Tags=[{"Key": "novacron:group", "Value": "web"}])
    ec2.create_tags(Resources=underscore, Tags=[{"Key": "novacron_group", "Value": "batch"}])
    raw = {
        "type": "aws",
        "account": "123456789012",
        "regions": [REGION],
        "endpoint_url": url,
        "discovery": {"tags": {"env": "grp"}},
        "concurrency": 1,
    }
    provider = parse_config({"providers": [raw]}, {"aws": AwsProvider}).providers[0]
    refresher = TargetRefresher(
        provider,
        provider.targets()[0],
        prices={},
        backoff=Backoff(base=0.01, cap=0.05, attempts=3),
        breaker=CircuitBreaker(threshold=2, reset_after=3600),
        stale_after=10_000,
        sleep=lambda _s: None,
        rng=random.Random(1),
    )
    assert refresher.refresh()
    info = _info(refresher)
    assert {vm: info[vm]["novacron_group"] for vm in colon + underscore + none} == {
        **dict.fromkeys(colon, "web"),
        **dict.fromkeys(underscore, "batch"),
        **dict.fromkeys(none, ""),
    }
    assert set(info[colon[0]]) == set(VM_INFO_LABELS)  # the shared label set, the same as libvirt's
    assert info[colon[0]]["flavor"] == info[colon[0]]["instance_type"] == "t3.micro"


def test_azure_tags_and_gcp_user_labels_fill_the_group() -> None:
    azure: Any = parse_config(
        {"providers": [{"type": "azure", "subscriptions": ["s1"], "regions": ["westeurope"]}]},
        {"azure": AzureProvider},
    ).providers[0]
    vm = {
        "id": "/subscriptions/s1/vm/a",
        "name": "a",
        "location": "westeurope",
        "tags": {"novacron:group": "api"},
    }
    assert azure._vm(vm, Target("azure", "s1", "westeurope"), {}).group == "api"
    assert azure._vm({**vm, "tags": {}}, Target("azure", "s1", "westeurope"), {}).group == ""
    gcp: Any = parse_config(
        {"providers": [{"type": "gcp", "projects": ["p1"], "regions": ["europe-west1"]}]},
        {"gcp": GcpProvider},
    ).providers[0]
    series = _Series("42", {"zone": "europe-west1-b", "user:novacron_group": "etl"}, 0.0, 0.1)
    assert gcp._vm(series, Target("gcp", "p1", "europe-west1")).group == "etl"


def test_group_tag_lookup_prefers_the_namespaced_key() -> None:
    assert group_of({"novacron:group": "a", "novacron_group": "b"}) == "a"
    assert group_of({"novacron:group": "", "novacron_group": "b"}) == "b"
    assert group_of({"user:novacron_group": "c"}, "user:") == "c"
    assert group_of({"group": "x"}) == ""
