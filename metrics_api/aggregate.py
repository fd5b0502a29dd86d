"""PromQL for the REST endpoints: VM inventory, per-VM summaries, fleet and host aggregates.

Per-VM series carry only `vm_id` (docs/metrics.md), and `tenant` lives on `novacron_vm_info`; so these queries
scope by joining on `vm_id` with `novacron_vm_info{tenant=~...}`, which works with the exporters as they are.
The API builds this PromQL itself, so the join cannot be edited away by a caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from metrics_api.promql import quote

INFO = "novacron_vm_info"
# Labels of novacron_vm_info a caller may filter and group by.
INFO_LABELS = (
    "provider",
    "account",
    "region",
    "zone",
    "host",
    "tenant",
    "project",
    "flavor",
    "instance_type",
    "novacron_group",
)
GROUP_LABELS = (*INFO_LABELS, "vm_id")
AGGS = {"avg": "avg", "max": "max", "min": "min", "sum": "sum", "count": "count", "p95": "quantile"}

# Each metric: a per-VM instant vector (one series per vm_id) built from the normalised schema; `{s}` is the
# selector's matchers, `{w}` the rate window. KVM counters and cloud gauges are combined with `or`.
METRICS: Mapping[str, str] = {
    "cpu_utilisation_ratio": (
        "(sum by (vm_id) (rate(novacron_vm_cpu_seconds_total{{{s}}}[{w}])) / on(vm_id) "
        "max by (vm_id) (novacron_vm_vcpus{{{s}}})) "
        "or max by (vm_id) (novacron_vm_cpu_utilisation_ratio{{{s}}})"
    ),
    "memory_bytes": "max by (vm_id) (novacron_vm_memory_bytes{{{s}}})",
    "memory_utilisation_ratio": "max by (vm_id) (novacron_vm_memory_utilisation_ratio{{{s}}})",
    "vcpus": "max by (vm_id) (novacron_vm_vcpus{{{s}}})",
    "network_receive_bytes_per_second": (
        "sum by (vm_id) (rate(novacron_vm_network_receive_bytes_total{{{s}}}[{w}])) "
        "or sum by (vm_id) (novacron_vm_network_receive_bytes_per_second{{{s}}})"
    ),
    "network_transmit_bytes_per_second": (
        "sum by (vm_id) (rate(novacron_vm_network_transmit_bytes_total{{{s}}}[{w}])) "
        "or sum by (vm_id) (novacron_vm_network_transmit_bytes_per_second{{{s}}})"
    ),
    "disk_read_bytes_per_second": (
        "sum by (vm_id) (rate(novacron_vm_disk_read_bytes_total{{{s}}}[{w}])) "
        "or sum by (vm_id) (novacron_vm_disk_read_bytes_per_second{{{s}}})"
    ),
    "disk_write_bytes_per_second": (
        "sum by (vm_id) (rate(novacron_vm_disk_write_bytes_total{{{s}}}[{w}])) "
        "or sum by (vm_id) (novacron_vm_disk_write_bytes_per_second{{{s}}})"
    ),
}


def matchers(filters: Mapping[str, str], scope: str | None, extra: Sequence[str] = ()) -> str:
    """`label="value",...` from validated filters, plus the tenant scope matcher and any extra matchers."""
    parts = [f"{label}={quote(value)}" for label, value in sorted(filters.items())]
    if scope:
        parts.append(scope)
    parts.extend(extra)
    return ",".join(parts)


def inventory_query(filters: Mapping[str, str], scope: str | None) -> str:
    return f"{INFO}{{{matchers(filters, scope)}}}"


def state_query(filters: Mapping[str, str], scope: str | None) -> str:
    return f"novacron_vm_state and on(vm_id) {INFO}{{{matchers(filters, scope)}}}"


def per_vm(metric: str, selector: str, window: str) -> str:
    return METRICS[metric].format(s=selector, w=window)


def summary_query(vm_id: str, window: str, range_: str, step: str) -> str:
    """One query: avg/max/p95/last of every metric of one VM, tagged with `metric` and `stat` labels."""
    sel = f"vm_id={quote(vm_id)}"
    branches = []
    for metric in METRICS:
        expr = per_vm(metric, sel, window)
        sub = f"({expr})[{range_}:{step}]"
        stats = {
            "avg": f"avg_over_time({sub})",
            "max": f"max_over_time({sub})",
            "p95": f"quantile_over_time(0.95, {sub})",
            "last": f"({expr})",
        }
        for stat, body in stats.items():
            tagged = f'label_replace({body}, "stat", "{stat}", "", "")'
            branches.append(f'label_replace({tagged}, "metric", "{metric}", "", "")')
    return " or ".join(branches)


def aggregate_query(
    metric: str,
    agg: str,
    group_by: Sequence[str],
    filters: Mapping[str, str],
    scope: str | None,
    window: str,
    extra: Sequence[str] = (),
) -> str:
    """`agg by (group_by)` of a per-VM metric, joined to the (scoped, filtered) inventory for its labels."""
    info_labels = [g for g in group_by if g != "vm_id"]
    keep = ", ".join(["vm_id", *info_labels])
    info = f"max by ({keep}) ({INFO}{{{matchers(filters, scope, extra)}}})"
    joined = f"({per_vm(metric, '', window)}) * on(vm_id) group_left({', '.join(info_labels)}) {info}"
    by = f" by ({', '.join(group_by)})"
    if agg == "p95":
        return f"quantile{by} (0.95, {joined})"
    return f"{AGGS[agg]}{by} ({joined})"
