"""Turn the refreshers' cached snapshots into metric families; a scrape never calls a cloud.

Sample output (abridged):

    novacron_vm_info{account="123456789012",flavor="t3.micro",host="",instance_type="t3.micro",
        novacron_group="web",project="",provider="aws",region="eu-west-1",tenant="acme",vm_id="i-0abc",
        vm_name="web-1",zone="eu-west-1a"} 1.0
    novacron_vm_state{vm_id="i-0abc"} 1.0
    novacron_vm_cpu_utilisation_ratio{vm_id="i-0abc"} 0.42
    novacron_vm_status_check_failed{check="instance",vm_id="i-0abc"} 0.0
    novacron_cloud_up{account="123456789012",provider="aws",region="eu-west-1"} 1.0
    novacron_cloud_data_age_seconds{account="123456789012",metric="novacron_vm_cpu_utilisation_ratio",
        provider="aws",region="eu-west-1"} 612.0
    novacron_cloud_api_calls_total{account="123456789012",operation="GetMetricData",provider="aws",
        region="eu-west-1"} 24.0
    novacron_cloud_refresh_cost_dollars{account="123456789012",provider="aws",region="eu-west-1"} 0.12
    novacron_cloud_vms_size_unknown{account="my-project",instance_type="m1-megamem-96",provider="gcp",
        region="europe-west1"} 2.0
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporters.cloud.model import VM, Sample
from exporters.cloud.refresh import Snapshot, TargetRefresher
from exporters.cloud.schema import INFO_LABELS, VM_METRICS

TARGET_LABELS = ["provider", "account", "region"]


def _info_value(provider: str, vm: VM, label: str) -> str:
    """One `novacron_vm_info` label of a cloud VM: clouds have no host, the instance type is the flavor."""
    special = {"provider": provider, "host": "", "flavor": vm.instance_type, "novacron_group": vm.group}
    return special[label] if label in special else str(getattr(vm, label))


class CloudCollector:
    """prometheus_client collector over a set of TargetRefreshers."""

    def __init__(self, refreshers: Sequence[TargetRefresher], clock: Callable[[], float] = time.time) -> None:
        self.refreshers, self.clock = refreshers, clock

    def describe(self) -> list[Metric]:
        return []  # collected lazily; no describe-time work

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        snaps = [(r, r.current()) for r in self.refreshers]
        yield from self._vm_families([(r.target.provider, s.vms) for r, s in snaps if s is not None])
        yield from self._sample_families([s.samples for _, s in snaps if s is not None])
        yield from self._policy_family()
        yield from self._self_families(snaps)
        duration = GaugeMetricFamily(
            "novacron_cloud_scrape_duration_seconds", "Time this scrape took (it reads the cache only)."
        )
        duration.add_metric([], time.monotonic() - started)
        yield duration

    def _vm_families(self, groups: list[tuple[str, tuple[VM, ...]]]) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "novacron_vm_info", "VM identity and metadata (value 1).", labels=INFO_LABELS
        )
        state = GaugeMetricFamily(
            "novacron_vm_state",
            "VM state as libvirt's code (1 running, 4 shutting down, 5 shut off).",
            labels=["vm_id"],
        )
        vcpus = GaugeMetricFamily("novacron_vm_vcpus", "Virtual CPUs of the VM.", labels=["vm_id"])
        memory = GaugeMetricFamily("novacron_vm_memory_bytes", "Memory of the VM in bytes.", labels=["vm_id"])
        for provider, vms in groups:
            for vm in vms:
                info.add_metric([_info_value(provider, vm, name) for name in INFO_LABELS], 1.0)
                state.add_metric([vm.vm_id], vm.state)
                if vm.vcpus is not None:
                    vcpus.add_metric([vm.vm_id], vm.vcpus)
                if vm.memory_bytes is not None:
                    memory.add_metric([vm.vm_id], vm.memory_bytes)
        yield from (info, state, vcpus, memory)

    def _sample_families(self, groups: Sequence[Sequence[Sample]]) -> Iterator[Metric]:
        by_metric: dict[str, list[Sample]] = {}
        for samples in groups:
            for s in samples:
                by_metric.setdefault(s.metric, []).append(s)
        for name, series in sorted(by_metric.items()):
            extra = [k for k, _ in series[0].labels]
            fam = GaugeMetricFamily(name, VM_METRICS.get(name, name), labels=["vm_id", *extra])
            for s in series:
                fam.add_metric([s.vm_id, *(v for _, v in s.labels)], s.value)
            yield fam

    def _policy_family(self) -> Iterator[Metric]:
        fam = GaugeMetricFamily(
            "novacron_cloud_metric_info",
            "Which provider metric and statistic feeds each normalised metric, with its late-data policy.",
            labels=[
                "provider",
                "metric",
                "source",
                "statistic",
                "period_seconds",
                "delay_seconds",
                "window_seconds",
            ],
        )
        seen: set[tuple[str, ...]] = set()
        for r in self.refreshers:
            for spec in r.provider.specs:
                p = spec.policy
                labels = (
                    r.provider.name,
                    spec.normalised,
                    spec.source,
                    spec.statistic,
                    str(p.period),
                    str(p.delay),
                    str(p.window),
                )
                if labels not in seen:
                    seen.add(labels)
                    fam.add_metric(list(labels), 1.0)
        yield fam

    def _self_families(self, snaps: list[tuple[TargetRefresher, Snapshot | None]]) -> Iterator[Metric]:
        g = _GaugeSet()
        calls = CounterMetricFamily(
            "novacron_cloud_api_calls",
            "Cloud API calls by operation (retries included).",
            labels=[*TARGET_LABELS, "operation"],
        )
        throttled = CounterMetricFamily(
            "novacron_cloud_api_throttled",
            "Cloud API calls answered with throttling.",
            labels=[*TARGET_LABELS, "operation"],
        )
        errors = CounterMetricFamily(
            "novacron_cloud_api_errors",
            "Cloud API calls that failed (not throttling).",
            labels=[*TARGET_LABELS, "operation"],
        )
        cost = CounterMetricFamily(
            "novacron_cloud_api_cost_dollars", "Estimated cloud API cost since start.", labels=TARGET_LABELS
        )
        refreshes = CounterMetricFamily(
            "novacron_cloud_refreshes",
            "Refreshes by result (success, failure, skipped).",
            labels=[*TARGET_LABELS, "result"],
        )
        unknown = GaugeMetricFamily(
            "novacron_cloud_vms_size_unknown",
            "VMs of the last refresh whose instance type's vCPUs and memory could not be resolved.",
            labels=[*TARGET_LABELS, "instance_type"],
        )
        ages = GaugeMetricFamily(
            "novacron_cloud_data_age_seconds",
            "Age of the oldest value exposed for a metric: now minus its period end.",
            labels=[*TARGET_LABELS, "metric"],
        )
        now = self.clock()
        for r, snap in snaps:
            t = list(r.target.labels())
            g.add("up", t, 1.0 if r.up else 0.0)
            g.add("circuit_breaker_open", t, 1.0 if r.breaker.state == "open" else 0.0)
            g.add("refresh_duration_seconds", t, r.last_duration)
            g.add("refresh_api_calls", t, r.last_calls)
            g.add("refresh_cost_dollars", t, r.last_cost)
            if r.last_success is not None:
                g.add("last_refresh_success_timestamp_seconds", t, r.last_success)
            if snap is not None:
                g.add("vms", t, len(snap.vms))
                for itype, n in sorted(
                    Counter(vm.instance_type for vm in snap.vms if vm.vcpus is None).items()
                ):
                    unknown.add_metric([*t, itype], n)
                oldest: dict[str, float] = {}
                for s in snap.samples:
                    oldest[s.metric] = min(oldest.get(s.metric, s.timestamp), s.timestamp)
                for metric, ts in sorted(oldest.items()):
                    ages.add_metric([*t, metric], max(0.0, now - ts))
            for op, n in sorted(r.stats.calls.items()):
                calls.add_metric([*t, op], n)
                throttled.add_metric([*t, op], r.stats.throttled.get(op, 0))
                errors.add_metric([*t, op], r.stats.errors.get(op, 0))
            cost.add_metric(t, r.stats.cost_total)
            for result in ("success", "failure", "skipped"):
                refreshes.add_metric([*t, result], r.refreshes.get(result, 0))
        yield from g.families()
        yield from (calls, throttled, errors, cost, refreshes, ages, unknown)


_GAUGE_HELP = {
    "up": "1 when the last refresh of this provider/account/region succeeded.",
    "circuit_breaker_open": "1 while the circuit breaker skips refreshes after repeated failures.",
    "refresh_duration_seconds": "Wall time of the last refresh.",
    "refresh_api_calls": "API calls the last refresh made (retries included).",
    "refresh_cost_dollars": "Estimated API cost of the last refresh (configurable prices).",
    "last_refresh_success_timestamp_seconds": "Unix time the last successful refresh finished.",
    "vms": "VMs discovered by the last successful refresh.",
}


class _GaugeSet:
    """Per-target gauges named novacron_cloud_<suffix>, created in a fixed order."""

    def __init__(self) -> None:
        self._fams = {
            k: GaugeMetricFamily(f"novacron_cloud_{k}", h, labels=TARGET_LABELS)
            for k, h in _GAUGE_HELP.items()
        }

    def add(self, suffix: str, labels: list[str], value: float) -> None:
        self._fams[suffix].add_metric(labels, value)

    def families(self) -> Iterator[Metric]:
        yield from self._fams.values()
