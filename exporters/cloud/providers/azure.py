"""Azure: VMs from Resource Manager (subscriptions, groups, tags); metrics via the MetricsClient batch.

Sizes (vCPUs, memory) come from ARM's "Virtual Machine Sizes - List" of the target's location, asked once
per subscription and region and cached for `size_cache_ttl` (sizes do not change): no call per refresh.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlencode

from exporters.cloud.config import parse_str_list
from exporters.cloud.model import (
    STATE_NOSTATE,
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
    tags_match,
)
from exporters.common.config import ConfigError, check_keys, parse_duration

log = logging.getLogger(__name__)

MAX_RESOURCES_PER_CALL = 50  # metrics:getBatch limit
MAX_METRICS_PER_CALL = 20
NAMESPACE = "Microsoft.Compute/virtualMachines"
DEFAULT_POLICY = LatePolicy(period=60, delay=180, window=600)  # platform metrics land 1-3 minutes late
MANAGEMENT_URL = "https://management.azure.com"
COMPUTE_API_VERSION = "2024-07-01"
SIZE_CACHE_TTL = 6 * 3600.0  # a location's size list only grows when Azure launches a new series
SIZE_RETRY_AFTER = 900.0  # after a failed size listing: metrics go on, sizes are asked again later
# Azure Monitor bills metric queries per API call ($0.01 per 1,000 beyond the free grant); ARM reads are free.
DEFAULT_PRICES = {"MetricsBatch": 0.00001}
_AGG_FIELD = {
    "Average": "average",
    "Total": "total",
    "Maximum": "maximum",
    "Minimum": "minimum",
    "Count": "count",
}


def _spec(source: str, normalised: str, agg: str, **kw: Any) -> MetricSpec:
    return MetricSpec(source, normalised, agg, namespace=NAMESPACE, policy=DEFAULT_POLICY, **kw)


CATALOGUE: dict[str, MetricSpec] = {
    "Percentage CPU": _spec("Percentage CPU", "novacron_vm_cpu_utilisation_ratio", "Average", scale=0.01),
    "Network In Total": _spec(
        "Network In Total", "novacron_vm_network_receive_bytes_per_second", "Total", per_period=True
    ),
    "Network Out Total": _spec(
        "Network Out Total", "novacron_vm_network_transmit_bytes_per_second", "Total", per_period=True
    ),
    "Disk Read Bytes": _spec(
        "Disk Read Bytes", "novacron_vm_disk_read_bytes_per_second", "Total", per_period=True
    ),
    "Disk Write Bytes": _spec(
        "Disk Write Bytes", "novacron_vm_disk_write_bytes_per_second", "Total", per_period=True
    ),
    "Disk Read Operations/Sec": _spec(
        "Disk Read Operations/Sec", "novacron_vm_disk_read_ops_per_second", "Average"
    ),
    "Disk Write Operations/Sec": _spec(
        "Disk Write Operations/Sec", "novacron_vm_disk_write_ops_per_second", "Average"
    ),
    "Available Memory Bytes": _spec(
        "Available Memory Bytes", "novacron_vm_memory_available_bytes", "Average"
    ),
    "Available Memory Percentage": _spec(
        "Available Memory Percentage",
        "novacron_vm_memory_utilisation_ratio",
        "Average",
        scale=-0.01,
        offset=1.0,
    ),
    # VM availability is 1 when the platform sees the VM healthy: failed = 1 - availability.
    "VmAvailabilityMetric": _spec(
        "VmAvailabilityMetric",
        "novacron_vm_status_check_failed",
        "Average",
        scale=-1.0,
        offset=1.0,
        labels=(("check", "availability"),),
    ),
}
DEFAULT_METRICS = tuple(n for n in CATALOGUE if n != "Available Memory Percentage")
_POWER = {
    "running": STATE_RUNNING,
    "stopped": STATE_SHUTOFF,
    "deallocated": STATE_SHUTOFF,
    "starting": STATE_SHUTTING_DOWN,
    "stopping": STATE_SHUTTING_DOWN,
    "deallocating": STATE_SHUTTING_DOWN,
}
_KEYS = COMMON_KEYS | {
    "subscriptions",
    "resource_groups",
    "regions",
    "tags",
    "management_endpoint_url",
    "size_cache_ttl",
}
_Sizes = dict[str, tuple[float, float]]  # lower-case size name -> (vCPUs, memory bytes)


class AzureProvider(Provider):
    """Azure VMs of some subscriptions in some regions; credentials from azure-identity's default chain."""

    name = "azure"

    def __init__(
        self,
        subscriptions: Sequence[str],
        regions: Sequence[str],
        settings: CommonSettings,
        resource_groups: Sequence[str] = (),
        tags: Mapping[str, tuple[str, ...]] | None = None,
        management_url: str = MANAGEMENT_URL,
        credential: Any = None,
        size_cache_ttl: float = SIZE_CACHE_TTL,
    ) -> None:
        self.subscriptions, self.regions = tuple(subscriptions), tuple(regions)
        self.settings, self.specs = settings, settings.specs
        self.resource_groups, self.tags = tuple(resource_groups), dict(tags or {})
        self.management_url = management_url.rstrip("/")
        self._credential = credential
        self._arm: Any = None
        self._metrics: dict[str, Any] = {}
        self._lock = threading.RLock()  # target threads share the lazily built SDK clients
        self.size_cache_ttl = size_cache_ttl
        self._sizes: dict[tuple[str, str], tuple[float, _Sizes]] = {}  # (sub, location) -> (expires, sizes)

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], key: str, defaults: Mapping[str, Any]) -> AzureProvider:
        check_keys(raw, _KEYS, key)
        subs = parse_str_list(raw.get("subscriptions"), f"{key}.subscriptions", required=True)
        regions = parse_str_list(raw.get("regions"), f"{key}.regions", required=True)
        settings = parse_common(raw, key, CATALOGUE, DEFAULT_METRICS, DEFAULT_POLICY)
        mgmt = raw.get("management_endpoint_url", MANAGEMENT_URL)
        if not isinstance(mgmt, str) or not mgmt.startswith(("http://", "https://")):
            raise ConfigError(f"{key}.management_endpoint_url", "must be an http(s) URL")
        return cls(
            subs,
            regions,
            settings,
            resource_groups=parse_str_list(raw.get("resource_groups"), f"{key}.resource_groups"),
            tags=parse_tags(raw.get("tags"), f"{key}.tags"),
            management_url=mgmt,
            size_cache_ttl=parse_duration(
                raw.get("size_cache_ttl", SIZE_CACHE_TTL), f"{key}.size_cache_ttl", 60
            ),
        )

    def targets(self) -> Sequence[Target]:
        return [Target("azure", s, r) for s in self.subscriptions for r in self.regions]

    def default_prices(self) -> Mapping[str, float]:
        return DEFAULT_PRICES

    def is_throttled(self, exc: BaseException) -> bool:
        return getattr(exc, "status_code", None) == 429

    # -- clients -----------------------------------------------------------------------------------------

    def credential(self) -> Any:
        with self._lock:
            return self._credential_locked()

    def _credential_locked(self) -> Any:
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        return self._credential

    def _https_opts(self, url: str) -> dict[str, Any]:
        # Plain HTTP is only a local fake or private test endpoint; the SDK refuses tokens over it otherwise.
        return {"enforce_https": False} if url.startswith("http://") else {}

    def arm(self) -> Any:
        with self._lock:
            return self._arm_locked()

    def _arm_locked(self) -> Any:
        if self._arm is None:
            from azure.core import PipelineClient
            from azure.core.pipeline import policies

            self._arm = PipelineClient(
                self.management_url,
                policies=[
                    policies.HeadersPolicy(),
                    policies.UserAgentPolicy("novacron-cloud-exporter"),
                    policies.RetryPolicy(retry_total=0),  # our own backoff retries and counts
                    policies.BearerTokenCredentialPolicy(
                        self.credential(), f"{self.management_url}/.default"
                    ),
                    policies.HttpLoggingPolicy(),
                ],
            )
        return self._arm

    def metrics_client(self, region: str) -> Any:
        with self._lock:
            return self._metrics_locked(region)

    def _metrics_locked(self, region: str) -> Any:
        if region not in self._metrics:
            from azure.monitor.querymetrics import MetricsClient

            endpoint = self.settings.endpoint_url or f"https://{region}.metrics.monitor.azure.com"
            self._metrics[region] = MetricsClient(endpoint, self.credential(), retry_total=0)
        return self._metrics[region]

    # -- discovery ---------------------------------------------------------------------------------------

    def discover(self, target: Target, now: float, api: ApiCaller) -> list[VM]:
        sub = target.account
        if self.resource_groups:
            urls = [
                f"{self.management_url}/subscriptions/{sub}/resourceGroups/{rg}/providers/{NAMESPACE}?"
                + urlencode({"api-version": COMPUTE_API_VERSION, "$expand": "instanceView"})
                for rg in self.resource_groups
            ]
        else:
            urls = [
                f"{self.management_url}/subscriptions/{sub}/providers/{NAMESPACE}?"
                + urlencode({"api-version": COMPUTE_API_VERSION, "statusOnly": "true"})
            ]
        raw: list[dict[str, Any]] = []
        for url in urls:
            raw.extend(self._list_all(url, api))
        chosen = [
            v
            for v in raw
            if _norm_region(v.get("location", "")) == _norm_region(target.region)
            and tags_match(self.tags, v.get("tags") or {})
        ]
        sizes = self._sizes_of(target, now, api) if chosen else {}
        return [self._vm(v, target, sizes) for v in chosen]

    def _sizes_of(self, target: Target, now: float, api: ApiCaller) -> _Sizes:
        """The location's VM sizes, from the cache while fresh; one ARM call per subscription and region."""
        key = (target.account, _norm_region(target.region))
        with self._lock:
            cached = self._sizes.get(key)
        if cached is not None and now < cached[0]:
            return cached[1]
        url = (
            f"{self.management_url}/subscriptions/{target.account}/providers/Microsoft.Compute/locations/"
            f"{key[1]}/vmSizes?" + urlencode({"api-version": COMPUTE_API_VERSION})
        )
        try:
            sizes = _parse_sizes(self._list_all(url, api, "ListVirtualMachineSizes"))
            expires = now + self.size_cache_ttl
        except Exception as exc:  # sizes are metadata: without them the VMs' metrics still flow
            log.warning("listing VM sizes of %s/%s failed: %s", *key, type(exc).__name__)
            sizes, expires = (cached[1] if cached else {}), now + SIZE_RETRY_AFTER
        with self._lock:
            self._sizes[key] = (expires, sizes)
        return sizes

    def _list_all(
        self, url: str, api: ApiCaller, operation: str = "ListVirtualMachines"
    ) -> list[dict[str, Any]]:
        """Follow `nextLink` pages of an ARM list."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        items: list[dict[str, Any]] = []
        next_url: str | None = url
        for _page in range(MAX_LIST_PAGES):
            if not next_url:
                return items
            request = HttpRequest("GET", next_url)

            def send(req: Any = request) -> Any:
                response = self.arm().send_request(req, **self._https_opts(req.url))
                if response.status_code >= 400:
                    raise HttpResponseError(response=response)
                return response.json()

            page = api.call(operation, send)
            items.extend(page.get("value", []))
            next_url = page.get("nextLink")
        raise TooManyPages(operation)

    def _vm(self, v: Mapping[str, Any], target: Target, sizes: _Sizes) -> VM:
        props = v.get("properties") or {}
        tags = v.get("tags") or {}
        statuses = (props.get("instanceView") or {}).get("statuses", [])
        power = next(
            (s["code"].split("/", 1)[1] for s in statuses if s.get("code", "").startswith("PowerState/")), ""
        )
        zones = v.get("zones") or []
        size = str((props.get("hardwareProfile") or {}).get("vmSize", ""))
        vcpus, memory = sizes.get(size.lower(), (None, None))
        return VM(
            vm_id=str(v["id"]).lower(),
            vm_name=str(v.get("name", "")),
            account=target.account,
            region=target.region,
            zone=f"{_norm_region(v.get('location', ''))}-{zones[0]}" if zones else "",
            instance_type=size,
            state=_POWER.get(power, STATE_NOSTATE),
            vcpus=vcpus,
            memory_bytes=memory,
            tenant=str(tags.get(self.settings.tenant_tag, "")),
            project=str(tags.get(self.settings.project_tag, "")),
            group=group_of(tags),
        )

    # -- metrics -----------------------------------------------------------------------------------------

    def fetch(self, target: Target, vms: Sequence[VM], now: float, api: ApiCaller) -> list[Sample]:
        ids = [vm.vm_id for vm in vms if vm.state != STATE_SHUTOFF]
        by_policy: dict[LatePolicy, list[MetricSpec]] = {}
        for spec in self.specs:
            by_policy.setdefault(spec.policy, []).append(spec)
        jobs = [
            (policy, list(specs), list(batch))
            for policy, all_specs in by_policy.items()
            for specs in chunked(all_specs, MAX_METRICS_PER_CALL)
            for batch in chunked(ids, MAX_RESOURCES_PER_CALL)
        ]
        client = self.metrics_client(target.region)
        run = partial(self._fetch_batch, client, now=now, api=api)
        if self.settings.concurrency > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(self.settings.concurrency) as pool:
                parts = list(pool.map(lambda j: run(*j), jobs))
        else:
            parts = [run(*j) for j in jobs]
        return merge_samples([s for part in parts for s in part])

    def _fetch_batch(
        self,
        client: Any,
        policy: LatePolicy,
        specs: Sequence[MetricSpec],
        resource_ids: Sequence[str],
        *,
        now: float,
        api: ApiCaller,
    ) -> list[Sample]:
        start, end = policy.query_range(now)
        by_name = {s.source: s for s in specs}
        aggregations = sorted({s.statistic for s in specs})
        results = api.call(
            "MetricsBatch",
            partial(
                client.query_resources,
                resource_ids=list(resource_ids),
                metric_namespace=NAMESPACE,
                metric_names=list(by_name),
                timespan=(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)),
                granularity=timedelta(seconds=policy.period),
                aggregations=aggregations,
                **self._https_opts(getattr(client, "_endpoint", "")),
            ),
        )
        samples: list[Sample] = []
        for result in results:
            for metric in result.metrics:
                spec = by_name.get(metric.name)
                if spec is None:
                    continue
                vm_id = _resource_of(metric.id)
                newest = _newest(metric, _AGG_FIELD[spec.statistic])
                if newest is not None:
                    ts, value = newest
                    samples.append(
                        Sample(
                            spec.normalised,
                            vm_id,
                            spec.convert(value, policy.period),
                            ts + policy.period,
                            spec.labels,
                        )
                    )
        return samples

    def close(self) -> None:
        for client in self._metrics.values():
            client.close()
        if self._arm is not None:
            self._arm.close()


def _parse_sizes(items: Sequence[Mapping[str, Any]]) -> _Sizes:
    """`{"name", "numberOfCores", "memoryInMB", ...}` entries -> sizes; malformed entries are skipped."""
    sizes: _Sizes = {}
    for item in items:
        try:
            cores, memory_mb = float(item["numberOfCores"]), float(item["memoryInMB"])
            name = str(item["name"]).lower()
        except (KeyError, TypeError, ValueError):
            continue
        if cores > 0 and memory_mb > 0:
            sizes[name] = (cores, memory_mb * 1024 * 1024)
    return sizes


def _norm_region(name: str) -> str:
    return name.replace(" ", "").lower()


def _resource_of(metric_id: str) -> str:
    """`<resource id>/providers/Microsoft.Insights/metrics/<name>` -> lower-case resource id."""
    marker = "/providers/microsoft.insights/metrics/"
    lowered = metric_id.lower()
    cut = lowered.find(marker)
    return lowered[:cut] if cut >= 0 else lowered


def _newest(metric: Any, field: str) -> tuple[float, float] | None:
    best: tuple[float, float] | None = None
    for series in metric.timeseries:
        for point in series.data:
            value = getattr(point, field, None)
            if value is None:
                continue
            ts = point.timestamp.timestamp()
            if best is None or ts > best[0]:
                best = (ts, float(value))
    return best
