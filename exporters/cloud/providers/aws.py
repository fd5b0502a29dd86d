"""AWS: EC2 discovery by tags and filters, CloudWatch GetMetricData in batches of 500 queries, paginated."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from exporters.cloud.config import parse_mapping, parse_str_list
from exporters.cloud.model import (
    STATE_RUNNING,
    STATE_SHUTOFF,
    STATE_SHUTTING_DOWN,
    VM,
    ApiCaller,
    LatePolicy,
    MetricSpec,
    Provider,
    Sample,
    Target,
)
from exporters.cloud.providers import (
    COMMON_KEYS,
    MAX_LIST_PAGES,
    CommonSettings,
    TooManyPages,
    chunked,
    group_of,
    merge_samples,
    parse_common,
    parse_tags,
)
from exporters.common.config import ConfigError, check_keys

MAX_QUERIES_PER_CALL = 500  # GetMetricData's limit
DEFAULT_POLICY = LatePolicy(period=300, delay=300, window=1200)  # basic monitoring publishes 5-min data late
THROTTLE_CODES = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
}
# CloudWatch: $0.01 per 1,000 metrics requested (GetMetricData) or per 1,000 requests (GetMetricStatistics).
DEFAULT_PRICES = {"GetMetricData": 0.00001, "GetMetricStatistics": 0.00001, "ListMetrics": 0.00001}

_EC2, _AGENT, _EBS = "AWS/EC2", "CWAgent", "AWS/EBS"


def _spec(source: str, normalised: str, stat: str, namespace: str = _EC2, **kw: Any) -> MetricSpec:
    return MetricSpec(
        source=source, normalised=normalised, statistic=stat, namespace=namespace, policy=DEFAULT_POLICY, **kw
    )


CATALOGUE: dict[str, MetricSpec] = {
    "CPUUtilization": _spec("CPUUtilization", "novacron_vm_cpu_utilisation_ratio", "Average", scale=0.01),
    "NetworkIn": _spec("NetworkIn", "novacron_vm_network_receive_bytes_per_second", "Sum", per_period=True),
    "NetworkOut": _spec(
        "NetworkOut", "novacron_vm_network_transmit_bytes_per_second", "Sum", per_period=True
    ),
    "NetworkPacketsIn": _spec(
        "NetworkPacketsIn", "novacron_vm_network_receive_packets_per_second", "Sum", per_period=True
    ),
    "NetworkPacketsOut": _spec(
        "NetworkPacketsOut", "novacron_vm_network_transmit_packets_per_second", "Sum", per_period=True
    ),
    "DiskReadBytes": _spec("DiskReadBytes", "novacron_vm_disk_read_bytes_per_second", "Sum", per_period=True),
    "DiskWriteBytes": _spec(
        "DiskWriteBytes", "novacron_vm_disk_write_bytes_per_second", "Sum", per_period=True
    ),
    "DiskReadOps": _spec("DiskReadOps", "novacron_vm_disk_read_ops_per_second", "Sum", per_period=True),
    "DiskWriteOps": _spec("DiskWriteOps", "novacron_vm_disk_write_ops_per_second", "Sum", per_period=True),
    "StatusCheckFailed_Instance": _spec(
        "StatusCheckFailed_Instance",
        "novacron_vm_status_check_failed",
        "Maximum",
        labels=(("check", "instance"),),
    ),
    "StatusCheckFailed_System": _spec(
        "StatusCheckFailed_System",
        "novacron_vm_status_check_failed",
        "Maximum",
        labels=(("check", "system"),),
    ),
    # CloudWatch agent (extra namespace): memory is only visible from inside the guest.
    "mem_used_percent": _spec(
        "mem_used_percent", "novacron_vm_memory_utilisation_ratio", "Average", namespace=_AGENT, scale=0.01
    ),
    # EBS (extra namespace): summed per instance into the disk metrics (on Nitro, EC2 Disk* is local only).
    "VolumeReadBytes": _spec(
        "VolumeReadBytes", "novacron_vm_disk_read_bytes_per_second", "Sum", namespace=_EBS, per_period=True
    ),
    "VolumeWriteBytes": _spec(
        "VolumeWriteBytes", "novacron_vm_disk_write_bytes_per_second", "Sum", namespace=_EBS, per_period=True
    ),
    "VolumeReadOps": _spec(
        "VolumeReadOps", "novacron_vm_disk_read_ops_per_second", "Sum", namespace=_EBS, per_period=True
    ),
    "VolumeWriteOps": _spec(
        "VolumeWriteOps", "novacron_vm_disk_write_ops_per_second", "Sum", namespace=_EBS, per_period=True
    ),
}
DEFAULT_METRICS = (
    "CPUUtilization",
    "NetworkIn",
    "NetworkOut",
    "DiskReadBytes",
    "DiskWriteBytes",
    "DiskReadOps",
    "DiskWriteOps",
    "StatusCheckFailed_Instance",
    "StatusCheckFailed_System",
)
EXTRA_NAMESPACES = {
    "CWAgent": ("mem_used_percent",),
    "EBS": ("VolumeReadBytes", "VolumeWriteBytes", "VolumeReadOps", "VolumeWriteOps"),
}
_STATES = {
    "running": STATE_RUNNING,
    "stopped": STATE_SHUTOFF,
    "pending": STATE_SHUTTING_DOWN,
    "stopping": STATE_SHUTTING_DOWN,
    "shutting-down": STATE_SHUTTING_DOWN,
}
_KEYS = COMMON_KEYS | {"account", "regions", "profile", "discovery", "extra_namespaces"}


@dataclass
class _Clients:
    ec2: Any
    cloudwatch: Any


@dataclass(frozen=True)
class _Query:
    vm_id: str
    spec: MetricSpec
    dimension: tuple[str, str]


class AwsProvider(Provider):
    """EC2 instances of one account in several regions; credentials from boto3's standard chain only."""

    name = "aws"

    def __init__(
        self,
        account: str,
        regions: Sequence[str],
        settings: CommonSettings,
        tags: Mapping[str, tuple[str, ...]],
        filters: Sequence[Mapping[str, Any]],
        profile: str | None = None,
        session: Any = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.account, self.regions, self.settings = account, tuple(regions), settings
        self.specs = settings.specs
        self.tags, self.filters = dict(tags), list(filters)
        self.session = session or boto3.session.Session(profile_name=profile)
        # One try per SDK call: our own backoff counts and prices every attempt.
        cfg = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=max(10, settings.concurrency * 2),
        )
        # Clients are built here, on one thread: boto3 sessions are not thread-safe for client creation.
        self.clients = {
            r: _Clients(
                ec2=self.session.client("ec2", region_name=r, endpoint_url=settings.endpoint_url, config=cfg),
                cloudwatch=self.session.client(
                    "cloudwatch", region_name=r, endpoint_url=settings.endpoint_url, config=cfg
                ),
            )
            for r in self.regions
        }
        self._types: dict[str, dict[str, tuple[float, float]]] = {r: {} for r in self.regions}
        self._volumes: dict[str, dict[str, str]] = {r: {} for r in self.regions}

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], key: str, defaults: Mapping[str, Any]) -> AwsProvider:
        check_keys(raw, _KEYS, key)
        account = raw.get("account")
        if not isinstance(account, str | int) or isinstance(account, bool) or not str(account):
            raise ConfigError(f"{key}.account", "is required: the AWS account id used as the `account` label")
        regions = parse_str_list(raw.get("regions"), f"{key}.regions", required=True)
        catalogue_names = list(DEFAULT_METRICS)
        for i, ns in enumerate(parse_str_list(raw.get("extra_namespaces"), f"{key}.extra_namespaces")):
            if ns not in EXTRA_NAMESPACES:
                raise ConfigError(
                    f"{key}.extra_namespaces[{i}]", f"unknown namespace {ns!r} (known: CWAgent, EBS)"
                )
            catalogue_names.extend(EXTRA_NAMESPACES[ns])
        settings = parse_common(raw, key, CATALOGUE, catalogue_names, DEFAULT_POLICY)
        discovery = parse_mapping(raw.get("discovery"), f"{key}.discovery")
        check_keys(discovery, {"tags", "filters"}, f"{key}.discovery")
        tags = parse_tags(discovery.get("tags"), f"{key}.discovery.tags")
        filters = _parse_filters(discovery.get("filters"), f"{key}.discovery.filters")
        profile = raw.get("profile")
        if profile is not None and not isinstance(profile, str):
            raise ConfigError(f"{key}.profile", "must be a profile name")
        try:
            return cls(str(account), regions, settings, tags, filters, profile)
        except Exception as exc:  # botocore's ProfileNotFound and friends: a config problem, not a crash
            raise ConfigError(f"{key}.profile", f"cannot set up the AWS session: {exc}") from None

    def targets(self) -> Sequence[Target]:
        return [Target("aws", self.account, r) for r in self.regions]

    def default_prices(self) -> Mapping[str, float]:
        return DEFAULT_PRICES

    def is_throttled(self, exc: BaseException) -> bool:
        response = getattr(exc, "response", None)
        code = (response or {}).get("Error", {}).get("Code", "") if isinstance(response, dict) else ""
        return code in THROTTLE_CODES

    # -- discovery ---------------------------------------------------------------------------------------

    def discover(self, target: Target, now: float, api: ApiCaller) -> list[VM]:
        ec2 = self.clients[target.region].ec2
        filters = [{"Name": f"tag:{k}", "Values": list(v)} for k, v in self.tags.items()] + self.filters
        if not any(f["Name"] == "instance-state-name" for f in filters):
            filters.append({"Name": "instance-state-name", "Values": list(_STATES)})
        instances: list[dict[str, Any]] = []
        token: str | None = None
        for _page in range(MAX_LIST_PAGES):
            kwargs: dict[str, Any] = {"Filters": filters, "MaxResults": 1000}
            if token:
                kwargs["NextToken"] = token
            page: dict[str, Any] = api.call("DescribeInstances", partial(ec2.describe_instances, **kwargs))
            for reservation in page.get("Reservations", []):
                instances.extend(reservation.get("Instances", []))
            token = page.get("NextToken")
            if not token:
                break
        else:
            raise TooManyPages("DescribeInstances")
        self._learn_types(target.region, {i.get("InstanceType", "") for i in instances} - {""}, api)
        self._volumes[target.region] = {
            m["Ebs"]["VolumeId"]: i["InstanceId"]
            for i in instances
            for m in i.get("BlockDeviceMappings", [])
            if m.get("Ebs", {}).get("VolumeId")
        }
        return [self._vm(i, target) for i in instances if i.get("State", {}).get("Name") in _STATES]

    def _learn_types(self, region: str, types: set[str], api: ApiCaller) -> None:
        """(vCPUs, memory bytes) per instance type, asked once per type and cached (types do not change)."""
        known = self._types[region]
        missing = sorted(types - set(known))
        ec2 = self.clients[region].ec2
        for batch in chunked(missing, 100):
            page = api.call(
                "DescribeInstanceTypes", partial(ec2.describe_instance_types, InstanceTypes=list(batch))
            )
            for t in page.get("InstanceTypes", []):
                vcpus = float(t.get("VCpuInfo", {}).get("DefaultVCpus", 0))
                known[t["InstanceType"]] = (
                    vcpus,
                    float(t.get("MemoryInfo", {}).get("SizeInMiB", 0)) * 1024 * 1024,
                )

    def _vm(self, inst: Mapping[str, Any], target: Target) -> VM:
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        itype = inst.get("InstanceType", "")
        type_vcpus, memory = self._types[target.region].get(itype, (0.0, 0.0))
        cpu = inst.get("CpuOptions") or {}
        # CpuOptions reflects a customised core count; the type's default applies otherwise.
        vcpus = cpu.get("CoreCount", 0) * cpu.get("ThreadsPerCore", 1) or type_vcpus
        return VM(
            vm_id=inst["InstanceId"],
            vm_name=tags.get("Name", inst["InstanceId"]),
            account=self.account,
            region=target.region,
            zone=inst.get("Placement", {}).get("AvailabilityZone", ""),
            instance_type=itype,
            state=_STATES[inst["State"]["Name"]],
            vcpus=float(vcpus) or None,
            memory_bytes=memory or None,
            tenant=tags.get(self.settings.tenant_tag, ""),
            project=tags.get(self.settings.project_tag, ""),
            group=group_of(tags),
        )

    # -- metrics -----------------------------------------------------------------------------------------

    def queries(self, target: Target, vms: Sequence[VM]) -> list[_Query]:
        """One query per (VM or its EBS volume, metric); stopped VMs publish nothing, so skip them."""
        running = {vm.vm_id for vm in vms if vm.state != STATE_SHUTOFF}
        out: list[_Query] = []
        for spec in self.specs:
            if spec.namespace == _EBS:
                for volume, vm_id in sorted(self._volumes[target.region].items()):
                    if vm_id in running:
                        out.append(_Query(vm_id, spec, ("VolumeId", volume)))
            else:
                out.extend(
                    _Query(vm.vm_id, spec, ("InstanceId", vm.vm_id)) for vm in vms if vm.vm_id in running
                )
        return out

    def fetch(self, target: Target, vms: Sequence[VM], now: float, api: ApiCaller) -> list[Sample]:
        cw = self.clients[target.region].cloudwatch
        by_policy: dict[LatePolicy, list[_Query]] = {}
        for q in self.queries(target, vms):
            by_policy.setdefault(q.spec.policy, []).append(q)
        batches = [(p, b) for p, qs in by_policy.items() for b in chunked(qs, MAX_QUERIES_PER_CALL)]
        if self.settings.concurrency > 1 and len(batches) > 1:
            with ThreadPoolExecutor(self.settings.concurrency) as pool:
                parts = list(pool.map(lambda pb: self._fetch_batch(cw, pb[0], pb[1], now, api), batches))
        else:
            parts = [self._fetch_batch(cw, p, b, now, api) for p, b in batches]
        return merge_samples([s for part in parts for s in part])

    def _fetch_batch(
        self, cw: Any, policy: LatePolicy, batch: Sequence[_Query], now: float, api: ApiCaller
    ) -> list[Sample]:
        start, end = policy.query_range(now)
        request = {
            "MetricDataQueries": [_query_body(f"q{i}", q, policy.period) for i, q in enumerate(batch)],
            "StartTime": datetime.fromtimestamp(start, UTC),
            "EndTime": datetime.fromtimestamp(end, UTC),
            "ScanBy": "TimestampDescending",
        }
        newest: dict[str, tuple[float, float]] = {}
        token: str | None = None
        for _page in range(MAX_LIST_PAGES):
            kwargs = dict(request, NextToken=token) if token else request
            page = api.call("GetMetricData", partial(cw.get_metric_data, **kwargs), units=len(batch))
            for result in page.get("MetricDataResults", []):
                _keep_newest(newest, result["Id"], result.get("Timestamps", []), result.get("Values", []))
            token = page.get("NextToken")
            if not token:
                break
        else:  # a server that never stops paging must not keep a refresh (and the bill) running
            raise TooManyPages("GetMetricData")
        return [
            Sample(
                q.spec.normalised,
                q.vm_id,
                q.spec.convert(value, policy.period),
                ts + policy.period,
                q.spec.labels,
            )
            for i, q in enumerate(batch)
            if (hit := newest.get(f"q{i}")) is not None
            for ts, value in [hit]
        ]

    def close(self) -> None:
        for c in self.clients.values():
            c.ec2.close()
            c.cloudwatch.close()


def _query_body(qid: str, q: _Query, period: int) -> dict[str, Any]:
    return {
        "Id": qid,
        "MetricStat": {
            "Metric": {
                "Namespace": q.spec.namespace,
                "MetricName": q.spec.source,
                "Dimensions": [{"Name": q.dimension[0], "Value": q.dimension[1]}],
            },
            "Period": period,
            "Stat": q.spec.statistic,
        },
        "ReturnData": True,
    }


def _keep_newest(
    newest: dict[str, tuple[float, float]], qid: str, stamps: Iterable[datetime], values: Iterable[float]
) -> None:
    """Keep the newest finite datapoint of a query; pages may split one query's datapoints."""
    for ts, value in zip(stamps, values, strict=False):
        if value is None or not math.isfinite(value):
            continue
        t = ts.timestamp()
        if qid not in newest or t > newest[qid][0]:
            newest[qid] = (t, float(value))


def _parse_filters(raw: Any, key: str) -> list[dict[str, Any]]:
    """`filters: [{name: instance-type, values: [t3.micro]}]`, EC2 DescribeInstances filter syntax."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(key, "must be a list of {name, values}")
    out = []
    for i, item in enumerate(raw):
        entry = parse_mapping(item, f"{key}[{i}]")
        check_keys(entry, {"name", "values"}, f"{key}[{i}]")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{key}[{i}].name", "is required")
        out.append(
            {"Name": name, "Values": list(parse_str_list(entry.get("values"), f"{key}[{i}].values", True))}
        )
    return out
