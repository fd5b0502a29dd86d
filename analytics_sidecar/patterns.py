"""Usage patterns per VM: seasonal strength (daily, weekly), trend (Theil-Sen, Mann-Kendall), outliers, class.

Workload classes, checked in this order (thresholds in `PatternPolicy`, documented in docs/analytics.md):
idle (detected by `idle.py` rules), growing (significant upward trend), diurnal (strong daily or weekly
seasonality), bursty (high peak-to-median ratio), steady (everything else).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from analytics_sidecar.series import DAY, WEEK, Series, nan_fill, nanmedian, regularise

CLASSES = ("idle", "steady", "diurnal", "bursty", "growing")
HOUR = 3600.0


@dataclass(frozen=True)
class PatternPolicy:
    """Thresholds of the classifier (general values, not tuned to any trace)."""

    seasonal_strength_min: float = 0.5  # Hyndman's F_s at or above this: diurnal
    trend_p_value_max: float = 0.01  # Mann-Kendall significance for "growing"
    trend_growth_per_week_min: float = 0.10  # growth per week relative to the median level
    bursty_peak_to_median_min: float = 4.0  # p99 / median at or above this: bursty
    outlier_z: float = 3.5  # robust z-score (median/MAD) that flags an outlier


@dataclass(frozen=True)
class Trend:
    slope_per_second: float  # Theil-Sen slope of daily medians
    slope_low: float  # 95 % confidence bounds of the slope
    slope_high: float
    tau: float  # Mann-Kendall tau
    p_value: float


@dataclass(frozen=True)
class Patterns:
    daily_strength: float
    weekly_strength: float
    trend: Trend
    outlier_ratio: float
    median: float
    p95: float
    p99: float
    workload_class: str


def seasonal_strength(x: np.ndarray, period: int) -> float:
    """Hyndman & Athanasopoulos' strength of seasonality: max(0, 1 - Var(R) / Var(S + R)); 0 if too short.

    Needs three full periods: with two, the seasonal means of pure noise already explain half its variance.
    """
    if period < 2 or np.isfinite(x).sum() < 3 * period:
        return 0.0
    y = nan_fill(x)
    n_full = (y.size // period) * period
    y = y[-n_full:]
    kernel = np.ones(period) / period
    if period % 2 == 0:  # 2xm centred moving average for an even period
        kernel = np.convolve(kernel, [0.5, 0.5])
    trend = np.convolve(y, kernel, mode="same")
    half = kernel.size // 2
    trend[:half] = trend[half]
    trend[-half:] = trend[-half - 1]
    detrended = y - trend
    seasonal = detrended.reshape(-1, period).mean(axis=0)
    seasonal -= seasonal.mean()
    s_full = np.tile(seasonal, y.size // period)
    resid = detrended - s_full
    denom = float(np.var(s_full + resid))
    if denom <= 0:
        return 0.0
    return float(max(0.0, 1.0 - np.var(resid) / denom))


def trend_of(series: Series) -> Trend:
    """Theil-Sen slope and Mann-Kendall test on daily medians (robust to spikes, cheap: one point a day)."""
    s = series.finite()
    if len(s) < 2:
        return Trend(0.0, 0.0, 0.0, 0.0, 1.0)
    # Daily medians rather than means: one burst must not look like growth.
    daily = _daily_medians(s)
    days = np.arange(daily.size, dtype=float)
    ok = np.isfinite(daily)
    if ok.sum() < 4:
        return Trend(0.0, 0.0, 0.0, 0.0, 1.0)
    slope, low, high, tau, p = theil_sen_mann_kendall(days[ok], daily[ok])
    return Trend(slope / DAY, low / DAY, high / DAY, tau, p)


def theil_sen_mann_kendall(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, float]:
    """Theil-Sen slope with its 95 % bounds (Sen 1968) and the Mann-Kendall test (tau, two-sided p).

    The same formulas as scipy.stats.theilslopes and the tie-corrected Kendall test, vectorised once for
    both: the scipy.stats wrappers cost milliseconds of argument checking per call, which at a thousand
    VMs and three series each is most of a cycle. The normal distribution comes from scipy.special.
    """
    n = x.size
    i, j = np.triu_indices(n, k=1)
    dx, dy = x[j] - x[i], y[j] - y[i]
    slopes = dy[dx != 0] / dx[dx != 0]
    slope = float(np.median(slopes))
    s = float(np.sign(dy).sum())  # Mann-Kendall S (x is strictly increasing)
    _, ties = np.unique(y, return_counts=True)
    var_s = (n * (n - 1) * (2 * n + 5) - float((ties * (ties - 1) * (2 * ties + 5)).sum())) / 18.0
    n_pairs = n * (n - 1) / 2
    tau = s / n_pairs
    if var_s <= 0:
        return slope, slope, slope, 0.0, 1.0
    z = (s - np.sign(s)) / math.sqrt(var_s)  # continuity correction
    p = float(2 * special.ndtr(-abs(z)))
    # Sen's confidence interval: ranks of the sorted slopes around the median.
    c = 1.959963984540054 * math.sqrt(var_s)
    m = slopes.size
    lo_rank = int(np.clip(np.round((m - c) / 2.0) - 1, 0, m - 1))
    hi_rank = int(np.clip(np.round((m + c) / 2.0), 0, m - 1))
    ordered = np.sort(slopes)
    return slope, float(ordered[lo_rank]), float(ordered[hi_rank]), float(tau), p


def _daily_medians(s: Series) -> np.ndarray:
    day_idx = np.floor(s.t / DAY).astype(np.int64)
    first, last = int(day_idx[0]), int(day_idx[-1])
    n = last - first + 1
    out = np.full(n, np.nan)
    bounds = np.searchsorted(day_idx, np.arange(first, last + 2))  # s.t is sorted, so day_idx is too
    for i in range(n):
        chunk = s.v[bounds[i] : bounds[i + 1]]
        if chunk.size:
            out[i] = np.median(chunk)
    return out


def outlier_ratio(x: np.ndarray, z: float) -> float:
    """Share of samples whose robust z-score (against the daily profile's residual) exceeds `z`."""
    ok = np.isfinite(x)
    if ok.sum() < 10:
        return 0.0
    v = x[ok]
    med = np.median(v)
    mad = np.median(np.abs(v - med))
    if mad <= 0:
        mad = np.mean(np.abs(v - med)) or 0.0
        if mad <= 0:
            return 0.0
    score = 0.6745 * np.abs(v - med) / mad
    return float((score > z).mean())


def analyse(series: Series, idle: bool, policy: PatternPolicy = PatternPolicy()) -> Patterns:
    """Patterns of one usage series (any unit); `idle` comes from the idle detector."""
    s = series.finite()
    hourly = regularise(s, HOUR) if len(s) else np.array([np.nan])
    daily_strength = seasonal_strength(hourly, int(DAY / HOUR))
    weekly_strength = seasonal_strength(hourly, int(WEEK / HOUR))
    trend = trend_of(s)
    vals = s.v if len(s) else np.array([0.0])
    median, p95, p99 = (float(np.percentile(vals, q)) for q in (50, 95, 99))
    # Outliers against the daily profile: a peak that happens every day at nine is not an outlier. With two
    # weeks of data, the smaller share of that and of the one against the weekly profile: quiet weekends are
    # not outliers either, and a weekly profile's few samples per hour do not make new outliers of noise.
    ratio = outlier_ratio(_deseasonalised(hourly, int(DAY / HOUR)), policy.outlier_z)
    if np.isfinite(hourly).sum() >= 2 * WEEK / HOUR:
        ratio = min(ratio, outlier_ratio(_deseasonalised(hourly, int(WEEK / HOUR)), policy.outlier_z))
    growth_per_week = trend.slope_per_second * WEEK / max(abs(median), 1e-9)
    if idle:
        cls = "idle"
    elif trend.p_value <= policy.trend_p_value_max and growth_per_week >= policy.trend_growth_per_week_min:
        cls = "growing"
    elif max(daily_strength, weekly_strength) >= policy.seasonal_strength_min:
        cls = "diurnal"
    elif p99 >= policy.bursty_peak_to_median_min * max(median, 1e-9):
        cls = "bursty"
    else:
        cls = "steady"
    return Patterns(daily_strength, weekly_strength, trend, ratio, median, p95, p99, cls)


def _deseasonalised(hourly: np.ndarray, period: int) -> np.ndarray:
    if np.isfinite(hourly).sum() < 2 * period:
        return hourly
    n_full = (hourly.size // period) * period
    y = hourly[-n_full:].reshape(-1, period)
    with np.errstate(all="ignore"):
        profile = nanmedian(y, axis=0)
    return (y - profile).ravel()


def neighbour_correlations(
    usage: dict[str, np.ndarray], min_r: float, max_per_vm: int
) -> list[tuple[str, str, float]]:
    """Pearson correlation of CPU usage between VMs on one host, on a shared grid: pairs with r >= min_r.

    Strongly correlated neighbours peak together: they contend for the same cores at the same time.
    """
    ids = sorted(usage)
    if len(ids) < 2:
        return []
    m = np.vstack([nan_fill(usage[i]) for i in ids])
    ok = np.isfinite(m).all(axis=0)
    if ok.sum() < 10:
        return []
    m = m[:, ok]
    sd = m.std(axis=1)
    varying = sd > 0
    with np.errstate(all="ignore"):
        r = np.corrcoef(m)
    r[~varying, :] = 0.0
    r[:, ~varying] = 0.0
    out: list[tuple[str, str, float]] = []
    for i, vm in enumerate(ids):
        row = [(float(r[i, j]), ids[j]) for j in range(len(ids)) if j != i and r[i, j] >= min_r]
        row.sort(reverse=True)
        out.extend((vm, other, val) for val, other in row[:max_per_vm])
    return out
