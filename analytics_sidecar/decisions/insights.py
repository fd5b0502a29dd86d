"""Context for people and the scheduler: expected host load, analytics-based tags, threshold suggestions.

- Expected load: each host's CPU and memory forecast (upper bound) at the sidecar's horizons over capacity.
- Tags: workload class from the pattern analysis and a criticality guess: `high` for VMs in an
  anti-affinity group (someone asked for redundancy) or busy steady/diurnal VMs (p95 CPU >= 50 % of their
  vCPUs), `low` for idle VMs, `medium` otherwise.
- Threshold suggestions: the per-VM CPU alert threshold a VM's own normal load calls for, reported when it
  differs from the fleet default (`vm_cpu_threshold`, the 0.9 of NovaCronVMHighCPU): normal load p95 x
  (1 + margin), clipped to [default, 0.99], and, for a VM classed `growing`, the level its trend reaches
  within a week. A VM whose normal load has risen towards the default would otherwise page on its normal day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analytics_sidecar.engine import HostResult, VmResult


@dataclass(frozen=True)
class InsightPolicy:
    vm_cpu_threshold: float = 0.9
    margin: float = 0.15
    busy: float = 0.5


@dataclass(frozen=True)
class Tags:
    vm_id: str
    workload_class: str
    criticality: str


@dataclass(frozen=True)
class Suggestion:
    vm_id: str
    current: float
    suggested: float
    normal_p95: float
    reason: str


def expected_load(hosts: Mapping[str, HostResult]) -> dict[str, dict[str, dict[float, float]]]:
    """host -> resource -> horizon -> forecast upper bound / capacity."""
    out: dict[str, dict[str, dict[float, float]]] = {}
    for name, h in hosts.items():
        for resource, cap in (("cpu", h.cpus), ("memory", h.memory_bytes)):
            fc = h.forecasts.get("cpu_cores" if resource == "cpu" else "memory_bytes", {})
            if cap and fc:
                out.setdefault(name, {})[resource] = {hz: b[2] / cap for hz, b in fc.items()}
    return out


def tags(vm: VmResult, anti_affinity_label: str, p: InsightPolicy) -> Tags:
    cls = vm.patterns.workload_class if vm.patterns else ("idle" if vm.idle else "unknown")
    util = vm.cpu_p95_cores / vm.vcpus if vm.cpu_p95_cores is not None and vm.vcpus else 0.0
    if vm.idle:
        crit = "low"
    elif vm.labels.get(anti_affinity_label) or (cls in ("steady", "diurnal") and util >= p.busy):
        crit = "high"
    else:
        crit = "medium"
    return Tags(vm.vm_id, cls, crit)


def suggestion(vm: VmResult, p: InsightPolicy) -> Suggestion | None:
    if vm.cpu_p95_cores is None or not vm.vcpus or vm.idle:
        return None
    normal = vm.cpu_p95_cores / vm.vcpus
    want, reason = normal * (1 + p.margin), "normal load p95 near the threshold"
    pat = vm.patterns
    if pat is not None and pat.workload_class == "growing" and pat.trend is not None:
        weekly = pat.trend.slope_per_second * 7 * 86400 / vm.vcpus
        if normal + weekly > normal:
            want, reason = max(want, (normal + weekly) * (1 + p.margin)), "load growing"
    want = min(0.99, want)
    if want <= p.vm_cpu_threshold + 1e-9:
        return None
    return Suggestion(vm.vm_id, p.vm_cpu_threshold, round(want, 3), normal, reason)
