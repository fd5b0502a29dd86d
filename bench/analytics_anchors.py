"""Anchors for the analytics benchmarks, written from their documented formulas (not from their code).

- KRR `simple` strategy (robusta-dev/krr): CPU request = 95th percentile of usage over the history
  (default 14 days); memory = peak over the history x 1.15.
- Kubernetes VPA recommender: usage samples in a histogram whose weights halve every 24 h
  (CPU half-life 24 h), target = 90th percentile, plus a 15 % safety margin; memory = peak-based
  histogram (memory peaks per aggregation interval, 24 h half-life), p90 + 15 %.
- Prometheus `predict_linear(v[1d], h)`: ordinary least squares over the window, extrapolated.
- Seasonal naive: the value one day earlier.
"""

from __future__ import annotations

import math

import numpy as np

from analytics_sidecar.series import DAY, Series, decay_weights, weighted_percentile


def krr_simple(
    cpu_cores: Series, mem_bytes: Series, fit_until: float, days: float = 14
) -> tuple[float, float]:
    c = cpu_cores.before(fit_until).since(fit_until - days * DAY).finite()
    m = mem_bytes.before(fit_until).since(fit_until - days * DAY).finite()
    if not len(c) or not len(m):
        return float("nan"), float("nan")  # nothing in the window: KRR has no recommendation
    return float(np.percentile(c.v, 95)), float(m.v.max() * 1.15)


def vpa(cpu_cores: Series, mem_bytes: Series, fit_until: float) -> tuple[float, float]:
    c = cpu_cores.before(fit_until).finite()
    m = mem_bytes.before(fit_until).finite()
    if not len(c) or not len(m):
        return float("nan"), float("nan")
    # Memory: the VPA records one peak per 24 h aggregation interval.
    day = np.floor(m.t / DAY)
    peaks_t, peaks_v = [], []
    for d in np.unique(day):
        sel = day == d
        peaks_t.append(float(m.t[sel].max()))
        peaks_v.append(float(m.v[sel].max()))
    pt, pv = np.array(peaks_t), np.array(peaks_v)
    cpu = weighted_percentile(c.v, decay_weights(c.t, fit_until, DAY), 90) * 1.15
    mem = weighted_percentile(pv, decay_weights(pt, fit_until, DAY), 90) * 1.15
    return cpu, mem


def whole_vcpus(cores: float) -> int:
    return max(1, math.ceil(cores - 1e-9))


def predict_linear(series: Series, cutoff: float, targets: np.ndarray, window: float = DAY) -> np.ndarray:
    s = series.before(cutoff).since(cutoff - window).finite()
    if len(s) < 2:
        return np.full(targets.size, np.nan)
    slope, intercept = np.polyfit(s.t - cutoff, s.v, 1)
    return intercept + slope * (targets - cutoff)


def seasonal_naive(series: Series, targets: np.ndarray, cutoff: float) -> np.ndarray:
    """Value one day before each target (the nearest sample within half a step), from history only."""
    s = series.before(cutoff).finite()
    want = targets - DAY
    # Targets more than a day after the cut-off repeat the last known day.
    while (want >= cutoff).any():
        want = np.where(want >= cutoff, want - DAY, want)
    idx = np.clip(np.searchsorted(s.t, want), 1, max(1, len(s) - 1))
    left, right = s.t[idx - 1], s.t[np.minimum(idx, len(s) - 1)]
    pick = np.where(np.abs(want - left) <= np.abs(right - want), idx - 1, np.minimum(idx, len(s) - 1))
    out = s.v[pick]
    out[np.abs(s.t[pick] - want) > 300] = np.nan
    return out
