"""Right-sizing: a percentile plus headroom over a decaying history, at a named risk level; idle detection.

The recommendation for a resource is `weighted_percentile(usage, decay) * (1 + headroom)`, where a sample's
weight halves every `half_life` (as the VPA's histogram decays). vCPUs are whole (at least one);
memory is rounded up to `memory_granularity_bytes`. Status follows AWS Compute Optimizer's words:
over_provisioned, under_provisioned, optimized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analytics_sidecar.series import DAY, Series, decay_weights, weighted_percentile


@dataclass(frozen=True)
class RiskLevel:
    """How much usage may exceed the recommendation: a percentile and a headroom per resource."""

    name: str
    cpu_percentile: float
    cpu_headroom: float
    memory_percentile: float
    memory_headroom: float


# Fixed presets (general choices documented in docs/analytics.md; not fitted to any trace). CPU gets no
# headroom: rounding up to whole vCPUs already is one, and CPU overload slows a VM down while memory
# overload swaps or kills it, so memory keeps a 5 % margin over a higher percentile.
RISK_LEVELS: dict[str, RiskLevel] = {
    "conservative": RiskLevel("conservative", 99.5, 0.0, 100.0, 0.05),
    "balanced": RiskLevel("balanced", 99.0, 0.0, 99.9, 0.05),
    "aggressive": RiskLevel("aggressive", 95.0, 0.0, 99.5, 0.05),
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
    cpu_cores: float  # percentile + headroom, in cores (fractional)
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
    r = policy.risk
    cores = recommend_value(c, now, r.cpu_percentile, r.cpu_headroom, policy.half_life_seconds)
    mem = recommend_value(m, now, r.memory_percentile, r.memory_headroom, policy.half_life_seconds)
    vcpus = max(policy.min_vcpus, math.ceil(cores - 1e-9))
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
