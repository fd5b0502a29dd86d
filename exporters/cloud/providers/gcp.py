"""GCP: Cloud Monitoring `ListTimeSeries` with aligners, one paginated call per metric type and target.

Instances are discovered from the labels of the same time series (resource.labels.instance_id, zone,
metric.labels.instance_name, metadata.system_labels.machine_type, metadata.user_labels), so discovery costs
no extra API call; an instance with no CPU data in the window is not listed. vCPUs and memory are parsed
from the machine type name (gcp_machine_types.py), with the config's `machine_types` first: no call either.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from exporters.cloud.config import parse_mapping, parse_positive_int, parse_str_list
from exporters.cloud.model import (
    STATE_RUNNING,
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
    group_of,
    merge_samples,
    parse_common,
    parse_tags,
)
from exporters.cloud.providers.gcp_machine_types import MachineSize, resolve
from exporters.common.config import ConfigError, check_keys

DEFAULT_POLICY = LatePolicy(period=60, delay=240, window=600)  # GCE metrics are visible up to 240 s late
GLOBAL = "global"
# Cloud Monitoring read calls: priced per call here ($0.01 per 1,000); configurable in api_prices.
DEFAULT_PRICES = {"ListTimeSeries": 0.00001}
_CE = "compute.googleapis.com/instance/"


def _spec(source: str, normalised: str, aligner: str, **kw: Any) -> MetricSpec:
    return MetricSpec(source, normalised, aligner, namespace="gce_instance", policy=DEFAULT_POLICY, **kw)


CATALOGUE: dict[str, MetricSpec] = {
    "cpu/utilization": _spec(_CE + "cpu/utilization", "novacron_vm_cpu_utilisation_ratio", "ALIGN_MEAN"),
    "network/received_bytes_count": _spec(
        _CE + "network/received_bytes_count", "novacron_vm_network_receive_bytes_per_second", "ALIGN_RATE"
    ),
    "network/sent_bytes_count": _spec(
        _CE + "network/sent_bytes_count", "novacron_vm_network_transmit_bytes_per_second", "ALIGN_RATE"
    ),
    "network/received_packets_count": _spec(
        _CE + "network/received_packets_count", "novacron_vm_network_receive_packets_per_second", "ALIGN_RATE"
    ),
    "network/sent_packets_count": _spec(
        _CE + "network/sent_packets_count", "novacron_vm_network_transmit_packets_per_second", "ALIGN_RATE"
    ),
    "disk/read_bytes_count": _spec(
        _CE + "disk/read_bytes_count", "novacron_vm_disk_read_bytes_per_second", "ALIGN_RATE"
    ),
    "disk/write_bytes_count": _spec(
        _CE + "disk/write_bytes_count", "novacron_vm_disk_write_bytes_per_second", "ALIGN_RATE"
    ),
    "disk/read_ops_count": _spec(
        _CE + "disk/read_ops_count", "novacron_vm_disk_read_ops_per_second", "ALIGN_RATE"
    ),
    "disk/write_ops_count": _spec(
        _CE + "disk/write_ops_count", "novacron_vm_disk_write_ops_per_second", "ALIGN_RATE"
    ),
    # Ops Agent (guest): memory in use, state="used" only.
    "memory/percent_used": _spec(
        "agent.googleapis.com/memory/percent_used",
        "novacron_vm_memory_utilisation_ratio",
        "ALIGN_MEAN",
        scale=0.01,
    ),
}
DEFAULT_METRICS = tuple(n for n in CATALOGUE if not n.startswith("memory/") and "packets" not in n)
DISCOVERY_METRIC = "cpu/utilization"
_KEYS = COMMON_KEYS | {"projects", "regions", "tags", "filter", "page_size", "machine_types"}


@dataclass(frozen=True)
class _Series:
    instance_id: str
    labels: Mapping[str, str]  # instance_name, zone, machine_type, user labels (prefixed "user:")
    end: float
    value: float


class GcpProvider(Provider):
    """GCE instances of some projects; credentials from google-auth's default chain (ADC)."""

    name = "gcp"

    def __init__(
        self,
        projects: Sequence[str],
        regions: Sequence[str],
        settings: CommonSettings,
        tags: Mapping[str, tuple[str, ...]] | None = None,
        extra_filter: str = "",
        page_size: int = 1000,
        client: Any = None,
        machine_types: Mapping[str, MachineSize] | None = None,
    ) -> None:
        self.projects, self.regions = tuple(projects), tuple(regions) or (GLOBAL,)
        self.settings, self.specs = settings, settings.specs
        if not any(s.source.endswith(DISCOVERY_METRIC) for s in self.specs):
            # CPU drives discovery even when not exported.
            self._discovery_spec = CATALOGUE[DISCOVERY_METRIC]
        else:
            self._discovery_spec = next(s for s in self.specs if s.source.endswith(DISCOVERY_METRIC))
        self.tags, self.extra_filter, self.page_size = dict(tags or {}), extra_filter, page_size
        self.machine_types = dict(machine_types or {})
        self._client = client
        self._client_lock = threading.Lock()
        self._fetched: dict[Target, dict[str, list[_Series]]] = {}

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], key: str, defaults: Mapping[str, Any]) -> GcpProvider:
        check_keys(raw, _KEYS, key)
        settings = parse_common(raw, key, CATALOGUE, DEFAULT_METRICS, DEFAULT_POLICY)
        endpoint = settings.endpoint_url
        if endpoint and "://" in endpoint and not endpoint.startswith(("grpc://", "https://")):
            raise ConfigError(
                f"{key}.endpoint_url", "must be host:port, https://host or grpc://host:port (plaintext)"
            )
        extra = raw.get("filter", "")
        if not isinstance(extra, str):
            raise ConfigError(f"{key}.filter", "must be a Cloud Monitoring filter string")
        return cls(
            parse_str_list(raw.get("projects"), f"{key}.projects", required=True),
            parse_str_list(raw.get("regions"), f"{key}.regions"),
            settings,
            tags=parse_tags(raw.get("tags"), f"{key}.tags"),
            extra_filter=extra,
            page_size=parse_positive_int(raw.get("page_size", 1000), f"{key}.page_size"),
            machine_types=parse_machine_types(raw.get("machine_types"), f"{key}.machine_types"),
        )

    def targets(self) -> Sequence[Target]:
        return [Target("gcp", p, r) for p in self.projects for r in self.regions]

    def default_prices(self) -> Mapping[str, float]:
        return DEFAULT_PRICES

    def is_throttled(self, exc: BaseException) -> bool:
        from google.api_core import exceptions

        return isinstance(exc, exceptions.ResourceExhausted | exceptions.TooManyRequests)

    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = _make_client(self.settings.endpoint_url)
            return self._client

    # -- discovery and fetch -----------------------------------------------------------------------------

    def discover(self, target: Target, now: float, api: ApiCaller) -> list[VM]:
        """List every metric type once; instances come from the CPU series' labels."""
        specs = list(dict.fromkeys([self._discovery_spec, *self.specs]))
        if self.settings.concurrency > 1 and len(specs) > 1:
            with ThreadPoolExecutor(self.settings.concurrency) as pool:
                lists = list(pool.map(lambda s: self._list(target, s, now, api), specs))
        else:
            lists = [self._list(target, s, now, api) for s in specs]
        self._fetched[target] = {s.source: series for s, series in zip(specs, lists, strict=True)}
        seen: dict[str, VM] = {}
        for series in self._fetched[target][self._discovery_spec.source]:
            if series.instance_id not in seen:
                seen[series.instance_id] = self._vm(series, target)
        return list(seen.values())

    def fetch(self, target: Target, vms: Sequence[VM], now: float, api: ApiCaller) -> list[Sample]:
        wanted = {vm.vm_id for vm in vms}
        fetched = self._fetched.pop(target, {})
        samples = [
            Sample(
                spec.normalised, s.instance_id, spec.convert(s.value, spec.policy.period), s.end, spec.labels
            )
            for spec in self.specs
            for s in fetched.get(spec.source, [])
            if s.instance_id in wanted
        ]
        # Several series per instance (per device, per load-balanced flag) add up to the VM's rate.
        return merge_samples(samples)

    def _filter(self, target: Target, spec: MetricSpec) -> str:
        parts = [f'metric.type = "{spec.source}"', 'resource.type = "gce_instance"']
        if target.region != GLOBAL:
            parts.append(f'resource.labels.zone = starts_with("{target.region}")')
        if spec.source.endswith("memory/percent_used"):
            parts.append('metric.labels.state = "used"')
        for key, values in sorted(self.tags.items()):
            quoted = ", ".join(f'"{v}"' for v in values)
            parts.append(f'metadata.user_labels."{key}" = one_of({quoted})')
        if self.extra_filter:
            parts.append(f"({self.extra_filter})")
        return " AND ".join(parts)

    def _list(self, target: Target, spec: MetricSpec, now: float, api: ApiCaller) -> list[_Series]:
        from google.cloud import monitoring_v3

        policy = spec.policy
        start, end = policy.query_range(now)
        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{target.account}",
            filter=self._filter(target, spec),
            interval=monitoring_v3.TimeInterval(
                start_time={"seconds": int(start)}, end_time={"seconds": int(end)}
            ),
            aggregation=monitoring_v3.Aggregation(
                alignment_period={"seconds": policy.period},
                per_series_aligner=getattr(monitoring_v3.Aggregation.Aligner, spec.statistic),
            ),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
            page_size=self.page_size,
        )
        out: list[_Series] = []
        client = self.client()
        for _page in range(MAX_LIST_PAGES):
            # retry=None: our backoff retries and counts; the first page comes with the call, no extra RPC.
            pager = api.call("ListTimeSeries", partial(client.list_time_series, request=request, retry=None))
            page = next(iter(pager.pages))
            out.extend(s for ts in page.time_series if (s := _newest(ts)) is not None)
            if not page.next_page_token:
                return out
            request.page_token = page.next_page_token
        raise TooManyPages("ListTimeSeries")

    def _vm(self, s: _Series, target: Target) -> VM:
        zone = s.labels.get("zone", "")
        machine_type = s.labels.get("machine_type", "")
        # Parsed from the type name (no API call); unknown types stay unknown and are counted, not guessed.
        size = resolve(machine_type, self.machine_types) if machine_type else None
        return VM(
            vm_id=s.instance_id,
            vm_name=s.labels.get("instance_name", s.instance_id),
            account=target.account,
            region=zone.rsplit("-", 1)[0] if zone.count("-") >= 2 else target.region,
            zone=zone,
            instance_type=machine_type,
            state=STATE_RUNNING,  # it reported CPU in the window
            vcpus=float(size.vcpus) if size else None,
            memory_bytes=size.memory_bytes if size else None,
            tenant=s.labels.get(f"user:{self.settings.tenant_tag}", ""),
            project=s.labels.get(f"user:{self.settings.project_tag}", ""),
            group=group_of(s.labels, "user:"),
        )

    def close(self) -> None:
        transport = getattr(self._client, "transport", None)
        if transport is not None:
            transport.close()


def parse_machine_types(raw: Any, key: str) -> dict[str, MachineSize]:
    """`machine_types: {name: {vcpus, memory_mb}}`: sizes for types the name parser does not know."""
    sizes: dict[str, MachineSize] = {}
    for name, entry in parse_mapping(raw, key).items():
        where = f"{key}.{name}"
        body = parse_mapping(entry, where)
        check_keys(body, {"vcpus", "memory_mb"}, where)
        vcpus = body.get("vcpus")
        if isinstance(vcpus, bool) or not isinstance(vcpus, int | float) or vcpus <= 0:
            raise ConfigError(f"{where}.vcpus", "must be a positive number")
        memory_mb = parse_positive_int(body.get("memory_mb"), f"{where}.memory_mb")
        sizes[str(name).lower()] = MachineSize(float(vcpus), memory_mb)
    return sizes


def _newest(ts: Any) -> _Series | None:
    """The newest point of one time series (the API returns points newest first) with its labels."""
    best = None
    for point in ts.points:
        end = point.interval.end_time.timestamp()
        value = _value(point.value)
        if value is not None and (best is None or end > best[0]):
            best = (end, value)
    if best is None:
        return None
    resource = dict(ts.resource.labels)
    labels = {
        "zone": resource.get("zone", ""),
        "instance_name": dict(ts.metric.labels).get("instance_name", ""),
    }
    if ts.metadata:
        labels["machine_type"] = str(dict(ts.metadata.system_labels).get("machine_type", ""))
        labels.update({f"user:{k}": v for k, v in dict(ts.metadata.user_labels).items()})
    return _Series(resource.get("instance_id", ""), labels, best[0], best[1])


def _value(v: Any) -> float | None:
    kind = v._pb.WhichOneof("value")
    if kind in ("double_value", "int64_value"):
        return float(getattr(v, kind))
    return None


def _make_client(endpoint: str | None) -> Any:
    """Default: monitoring.googleapis.com with ADC. `grpc://host:port`: plaintext (emulators, tests)."""
    from google.cloud import monitoring_v3

    if endpoint and endpoint.startswith("grpc://"):
        import grpc
        from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

        channel = grpc.insecure_channel(endpoint[len("grpc://") :])
        return monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))
    if endpoint:
        return monitoring_v3.MetricServiceClient(
            client_options={"api_endpoint": endpoint.removeprefix("https://")}
        )
    return monitoring_v3.MetricServiceClient()
