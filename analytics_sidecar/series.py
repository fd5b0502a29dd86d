"""Time-series helpers shared by every analysis: regular grids, weighted percentiles, daily reshaping."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY = 86400.0
WEEK = 7 * DAY


@dataclass(frozen=True)
class Series:
    """Samples of one quantity: `t` Unix seconds (ascending), `v` values; NaN marks a gap."""

    t: np.ndarray
    v: np.ndarray

    @staticmethod
    def of(t: object, v: object) -> Series:
        ta = np.asarray(t, dtype=float)
        va = np.asarray(v, dtype=float)
        order = np.argsort(ta, kind="stable")
        return Series(ta[order], va[order])

    def __len__(self) -> int:
        return int(self.t.size)

    def before(self, cutoff: float) -> Series:
        """Only samples strictly before `cutoff` (backtests must not see the future)."""
        keep = self.t < cutoff
        return Series(self.t[keep], self.v[keep])

    def since(self, start: float) -> Series:
        keep = self.t >= start
        return Series(self.t[keep], self.v[keep])

    def finite(self) -> Series:
        keep = np.isfinite(self.v)
        return Series(self.t[keep], self.v[keep])


def regularise(
    series: Series, step: float, end: float | None = None, start: float | None = None
) -> np.ndarray:
    """Mean of the samples in each `step` bin of the grid [start, end); NaN where a bin is empty.

    The grid is anchored on multiples of `step` (UTC), so a slot index maps to the same time of day on
    every day and a daily profile can be read by reshaping.
    """
    s = series.finite()
    if end is None:
        end = float(s.t[-1]) + step if len(s) else 0.0
    end = float(np.ceil(end / step) * step)
    if start is None:
        start = float(s.t[0]) if len(s) else end - step
    start = float(np.floor(start / step) * step)
    n = max(1, int(round((end - start) / step)))
    idx = np.floor((s.t - start) / step).astype(np.int64)
    ok = (idx >= 0) & (idx < n)
    sums = np.bincount(idx[ok], weights=s.v[ok], minlength=n)
    counts = np.bincount(idx[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sums / counts
    out[counts == 0] = np.nan
    return out


def grid_start(end: float, step: float, n: int) -> float:
    """Start time of a grid of `n` bins that ends at `end` rounded up to a multiple of `step`."""
    return float(np.ceil(end / step) * step) - n * step


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value whose cumulative weight reaches q percent of the total (q=100 is the max)."""
    ok = np.isfinite(values) & (weights > 0)
    if not ok.any():
        return float("nan")
    v, w = values[ok], weights[ok]
    if q >= 100:
        return float(v.max())
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    i = int(np.searchsorted(cum, q / 100.0 * cum[-1], side="left"))
    return float(v[order][min(i, v.size - 1)])


def decay_weights(t: np.ndarray, now: float, half_life: float) -> np.ndarray:
    """Exponential decay: weight halves every `half_life` seconds of age (as in the VPA)."""
    if half_life <= 0:
        return np.ones_like(t, dtype=float)
    return np.power(0.5, np.clip(now - t, 0, None) / half_life)


def nan_fill(x: np.ndarray) -> np.ndarray:
    """Fill gaps by linear interpolation (edges by the nearest value); all-NaN stays all-NaN."""
    ok = np.isfinite(x)
    if ok.all() or not ok.any():
        return x.copy()
    idx = np.arange(x.size)
    return np.interp(idx, idx[ok], x[ok])


def nanmedian(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Median ignoring NaN along `axis` (NaN where a slice is empty), without numpy's masked-array path.

    np.nanmedian on small 2-D arrays goes through masked arrays and costs milliseconds per call.
    """
    if not np.isnan(a).any():
        return np.median(a, axis=axis)
    moved = np.moveaxis(a, axis, -1)
    ordered = np.sort(moved, axis=-1)  # NaN sorts last
    n = (~np.isnan(ordered)).sum(axis=-1)
    lo = np.clip((n - 1) // 2, 0, None)[..., None]
    hi = np.clip(n // 2, 0, None)[..., None]
    with np.errstate(invalid="ignore"):
        out = (
            np.take_along_axis(ordered, lo, -1)[..., 0] + np.take_along_axis(ordered, hi, -1)[..., 0]
        ) / 2.0
    return np.where(n == 0, np.nan, out)
