"""Right-sizing: the smallest size whose risk is worth its saving over a decaying history; idle detection.

Every sample's weight halves every `half_life` (as the VPA's histogram decays); the *exceedance* of a size is
the weighted share of samples above it. A risk level sets, per resource, a percentile (the size never goes
below it, so the exceedance never passes `1 - percentile/100`), a headroom, and a *need*: above the
percentile, the size `x` minimising `x / unit + exceedance(x) / need` is chosen, i.e. capacity is kept only
where it was needed at least `need` of the time per unit it costs. For CPU the unit is one whole vCPU (so the
risk budget is not wasted on rounding up); for memory it is the VM's own peak (so a one-off spike is cut
when the memory it holds is worth less than the time above the cut). `need = 0` is the plain percentile.
Status follows AWS Compute Optimizer's words: over_provisioned, under_provisioned, optimized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analytics_sidecar.series import DAY, Series, decay_weights, weighted_percentile


@dataclass(frozen=True)
class RiskLevel:
    """How much usage may exceed the recommendation, per resource: a percentile floor, headroom and need."""

    name: str
    cpu_percentile: float
    cpu_headroom: float
    memory_percentile: float
    memory_headroom: float
    # Above the percentile, keep a vCPU only if it was needed at least this share of the time (0: off).
    cpu_need: float = 0.0
    # Above the percentile, keep memory (per share of the VM's peak) only if needed this share of the time.
    memory_need: float = 0.0


# Fixed presets, reasoned in docs/analytics.md ("Right-sizing"). CPU gets no headroom: whole vCPUs already
# are one, and CPU overload slows a VM down while memory overload swaps or kills it, so memory keeps a
# margin and a need one to two orders of magnitude stricter than CPU's.
RISK_LEVELS: dict[str, RiskLevel] = {
    "conservative": RiskLevel("conservative", 99.0, 0.0, 99.9, 0.10, cpu_need=0.005, memory_need=0.0005),
    "balanced": RiskLevel("balanced", 90.0, 0.0, 99.0, 0.05, cpu_need=0.02, memory_need=0.001),
    "aggressive": RiskLevel("aggressive", 80.0, 0.0, 99.0, 0.0, cpu_need=0.025, memory_need=0.02),
}
DEFAULT_RISK = "balanced"


@dataclass(frozen=True)
class RightsizingPolicy:
    risk: RiskLevel = RISK_LEVELS[DEFAULT_RISK]
    half_life_seconds: float = 7 * DAY
    min_history_seconds: float = 1 * DAY  # less history than this: no recommendation
    min_vcpus: int = 1
    memory_granularity_bytes: int = 1  # backtests need exact KiB; the sidecar rounds to 64 MiB
    memory_min_bytes: int = 0
    # A recommendation within this share of the allocation counts as optimized (avoids churn).
    tolerance: float = 0.10


@dataclass(frozen=True)
class Recommendation:
    cpu_cores: float  # the CPU percentile + headroom, in cores (fractional): the floor of `vcpus`
    vcpus: int  # whole vCPUs, at least min_vcpus
    memory_bytes: int
    cpu_status: str
    memory_status: str

    @property
    def status(self) -> str:
        states = {self.cpu_status, self.memory_status}
        if "under_provisioned" in states:
            return "under_provisioned"
        if "over_provisioned" in states:
            return "over_provisioned"
        return "optimized"


def recommend_value(
    series: Series, now: float, percentile: float, headroom: float, half_life: float
) -> float:
    """Decayed weighted percentile of the usage plus headroom; NaN without data."""
    s = series.finite()
    if not len(s):
        return float("nan")
    w = decay_weights(s.t, now, half_life)
    return weighted_percentile(s.v, w, percentile) * (1.0 + headroom)


def exceedance(values: np.ndarray, weights: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Weighted share of `values` strictly above each of `sizes`."""
    order = np.argsort(values, kind="stable")
    v, cum = values[order], np.cumsum(weights[order])
    total = float(cum[-1]) if cum.size else 0.0
    if total <= 0:
        return np.zeros(np.shape(sizes))
    at_or_below = np.searchsorted(v, sizes, side="right")
    covered = np.where(at_or_below > 0, cum[np.clip(at_or_below - 1, 0, None)], 0.0)
    return np.clip((total - covered) / total, 0.0, 1.0)


def whole_vcpus(cpu: Series, now: float, risk: RiskLevel, half_life: float, min_vcpus: int = 1) -> int:
    """vCPUs: the count k >= the percentile minimising `k + exceedance(k) / cpu_need` (whole vCPUs).

    With ceil(percentile) most VMs end far below their risk budget (a p99 of 1.05 cores costs a second
    vCPU that is used 1 % of the time); the need turns that budget into a price, per VM, so no fleet-wide
    pass is needed and a VM's recommendation does not depend on the others.
    """
    s = cpu.finite()
    if not len(s):
        return min_vcpus
    v = s.v * (1.0 + risk.cpu_headroom)
    w = decay_weights(s.t, now, half_life)
    floor = max(min_vcpus, math.ceil(weighted_percentile(v, w, risk.cpu_percentile) - 1e-9))
    top = max(floor, math.ceil(float(v.max()) - 1e-9))
    if risk.cpu_need <= 0 or top == floor:
        return floor
    sizes = np.arange(floor, top + 1, dtype=float)
    cost = sizes + exceedance(v, w, sizes) / risk.cpu_need
    return int(sizes[int(np.argmin(cost))])


def memory_size(mem: Series, now: float, risk: RiskLevel, half_life: float) -> float:
    """Memory: the level x >= the percentile minimising `x / peak + exceedance(x) / memory_need`, + headroom.

    Candidates are the observed values themselves (exact, no grid); relative to the VM's own peak so the
    rule means the same for a 1 GiB and a 256 GiB VM.
    """
    s = mem.finite()
    if not len(s):
        return float("nan")
    w = decay_weights(s.t, now, half_life)
    floor = weighted_percentile(s.v, w, risk.memory_percentile)
    peak = float(s.v.max())
    level = floor
    if risk.memory_need > 0 and peak > 0 and peak > floor:
        sizes = np.unique(s.v[s.v >= floor])
        cost = sizes / peak + exceedance(s.v, w, sizes) / risk.memory_need
        level = float(sizes[int(np.argmin(cost))])
    return level * (1.0 + risk.memory_headroom)


def recommend(
    cpu_cores: Series,
    memory_bytes: Series,
    now: float,
    current_vcpus: float | None = None,
    current_memory_bytes: float | None = None,
    policy: RightsizingPolicy = RightsizingPolicy(),
) -> Recommendation | None:
    """Recommend vCPUs and memory from usage in cores and bytes; None with too little history."""
    c, m = cpu_cores.finite(), memory_bytes.finite()
    if not _enough(c, policy) or not _enough(m, policy):
        return None
    r, hl = policy.risk, policy.half_life_seconds
    cores = recommend_value(c, now, r.cpu_percentile, r.cpu_headroom, hl)
    vcpus = whole_vcpus(c, now, r, hl, policy.min_vcpus)
    mem = memory_size(m, now, r, hl)
    g = max(1, policy.memory_granularity_bytes)
    mem_bytes = max(policy.memory_min_bytes, int(math.ceil(max(mem, 0.0) / g) * g))
    return Recommendation(
        cpu_cores=float(cores),
        vcpus=vcpus,
        memory_bytes=mem_bytes,
        cpu_status=_status(vcpus, current_vcpus, policy.tolerance),
        memory_status=_status(mem_bytes, current_memory_bytes, policy.tolerance),
    )


def _enough(s: Series, policy: RightsizingPolicy) -> bool:
    return len(s) >= 2 and float(s.t[-1] - s.t[0]) >= policy.min_history_seconds


def _status(recommended: float, current: float | None, tolerance: float) -> str:
    if current is None or not math.isfinite(current) or current <= 0:
        return "optimized"
    if recommended > current:
        return "under_provisioned"
    if recommended < current * (1.0 - tolerance):
        return "over_provisioned"
    return "optimized"


@dataclass(frozen=True)
class IdlePolicy:
    """A VM is idle when, over the whole window, CPU stays low and (when known) the network is quiet.

    Defaults follow AWS Compute Optimizer's idle rule (peak CPU under 5 %, network under 5 MB a day) but use
    the 95th percentile so one nightly backup does not keep a forgotten VM alive.
    """

    cpu_percentile: float = 95.0
    cpu_ratio_below: float = 0.05
    network_bytes_per_day_below: float = 5e6
    min_history_seconds: float = 2 * DAY


def is_idle(
    cpu_ratio: Series, network_bytes_per_second: Series | None, policy: IdlePolicy = IdlePolicy()
) -> bool:
    """True when the CPU utilisation percentile and the mean network traffic are under the thresholds."""
    c = cpu_ratio.finite()
    if len(c) < 2 or float(c.t[-1] - c.t[0]) < policy.min_history_seconds:
        return False
    if float(np.percentile(c.v, policy.cpu_percentile)) >= policy.cpu_ratio_below:
        return False
    if network_bytes_per_second is not None:
        n = network_bytes_per_second.finite()
        if len(n) and float(np.mean(n.v)) * DAY >= policy.network_bytes_per_day_below:
            return False
    return True
