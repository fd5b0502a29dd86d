"""Forecasting: a robust seasonal model with prediction intervals, and time to exhaustion of a capacity.

Model (fitted on the history before a cut-off, on a grid of `step` seconds anchored on UTC days):

    forecast(t) = level + slope * (t - t_level) + alpha * profile(slot(t))

- `level`: median of the last 24 hours (medians, because usage is spiky and the error measure is MAE-like);
- `profile`: per time-of-day slot, the median over the last `profile_days` days of each sample's
  deviation from its day's median, smoothed over neighbouring slots; weekly (slot of the week, deviation
  from the week's median) when the weekly seasonal strength beats the daily one and two weeks are known;
- `alpha`: the seasonal strength (Hyndman's F_s, 0..1): a weak pattern is shrunk towards the level;
- `slope`: the Theil-Sen slope of daily medians, used only when Mann-Kendall finds it significant;
- combination: the result is blended with the last period's value at the same slot (seasonal naive) with
  weight `naive_weight` (0.25), because an equal-time spike that the medians smooth away is often real
  (a nightly job), and averaging forecasts of different kinds lowers the error of either (Bates & Granger);
- intervals: empirical quantiles of in-sample one-day-ahead errors, widened over the horizon by the
  Theil-Sen slope's 95 % confidence bounds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from analytics_sidecar.patterns import HOUR, seasonal_strength, trend_of
from analytics_sidecar.series import DAY, WEEK, Series, nanmedian, regularise


@dataclass(frozen=True)
class ForecastPolicy:
    step: float = 300.0
    history_days: int = 28
    profile_days: int = 14
    smooth_slots: int = 3  # width of the circular moving median over the profile (odd)
    coverage: float = 0.80  # nominal coverage of the prediction interval
    trend_p_value_max: float = 0.01
    weekly_margin: float = 0.10  # weekly strength must beat daily strength by this much
    nonnegative: bool = True
    level_window: float = DAY / 4  # 6 h: the newest level that is still a median of 72 samples
    naive_weight: float = 0.25  # weight of the last period's value in the combined point forecast


@dataclass(frozen=True)
class SeasonalModel:
    step: float
    period_seconds: float
    level: float
    t_level: float
    slope: float
    slope_low: float
    slope_high: float
    alpha: float
    profile: np.ndarray
    q_low: float
    q_high: float
    cutoff: float
    nonnegative: bool
    last_period: np.ndarray | None = None  # last observed value per slot (NaN where missing)
    naive_weight: float = 0.0

    def predict(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point forecast and lower/upper bounds at the given times."""
        ts = np.atleast_1d(np.asarray(t, dtype=float))
        slot = (np.floor(np.mod(ts, self.period_seconds) / self.step)).astype(np.int64) % self.profile.size
        point = self.level + self.slope * (ts - self.t_level) + self.alpha * self.profile[slot]
        if self.last_period is not None and self.naive_weight > 0:
            naive = self.last_period[slot]
            blend = (1.0 - self.naive_weight) * point + self.naive_weight * naive
            point = np.where(np.isfinite(naive), blend, point)
        h = np.clip(ts - self.cutoff, 0.0, None)
        lower = point + self.q_low + np.minimum(0.0, (self.slope_low - self.slope) * h)
        upper = point + self.q_high + np.maximum(0.0, (self.slope_high - self.slope) * h)
        if self.nonnegative:
            point, lower, upper = (np.clip(a, 0.0, None) for a in (point, lower, upper))
        return point, lower, upper

    def peak_offset(self) -> float:
        """Highest seasonal excursion above the level."""
        return float(self.alpha * max(0.0, float(np.max(self.profile))))


def fit(series: Series, cutoff: float, policy: ForecastPolicy = ForecastPolicy()) -> SeasonalModel | None:
    """Fit on samples strictly before `cutoff`; None without any data in the history window."""
    hist = series.before(cutoff).since(cutoff - policy.history_days * DAY).finite()
    if len(hist) < 2:
        return None
    step = policy.step
    start = math.floor(float(hist.t[0]) / DAY) * DAY
    end = math.ceil(cutoff / DAY) * DAY
    x = regularise(hist, step, end=end, start=start)
    slots = int(round(DAY / step))
    days = x.reshape(-1, slots)

    hourly = regularise(hist, HOUR, end=end, start=start)
    daily_strength = seasonal_strength(hourly, 24)
    weekly_strength = seasonal_strength(hourly, 168)
    use_weekly = days.shape[0] >= 14 and weekly_strength >= daily_strength + policy.weekly_margin
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slots (gaps) are expected
        day_medians = nanmedian(days, axis=1)
        if use_weekly:
            period, alpha = WEEK, weekly_strength
            profile = _weekly_profile(hist, step, cutoff, policy)
        else:
            period, alpha = DAY, daily_strength
            dev = days[-policy.profile_days :] - day_medians[-policy.profile_days :, None]
            profile = nanmedian(dev, axis=0)
    profile = _smooth_circular(np.nan_to_num(profile, nan=0.0), policy.smooth_slots)

    # Level: median of the last `level_window` of de-seasonalised samples (the newest level, without the
    # time-of-day bias a part of a day would bring).
    recent = hist.since(cutoff - policy.level_window)
    if not len(recent):
        recent = hist
    r_slot = (np.floor(np.mod(recent.t, period) / step)).astype(np.int64) % profile.size
    level = float(np.median(recent.v - alpha * profile[r_slot]))
    t_level = cutoff - policy.level_window / 2
    tr = trend_of(hist)
    slope = tr.slope_per_second if tr.p_value <= policy.trend_p_value_max else 0.0
    q_low, q_high = _residual_quantiles(
        days, day_medians, profile if not use_weekly else None, alpha, slope * DAY, policy
    )
    return SeasonalModel(
        last_period=_last_period(x, start, cutoff, step, period),
        naive_weight=policy.naive_weight,
        step=step,
        period_seconds=period,
        level=level,
        t_level=t_level,
        slope=slope,
        slope_low=tr.slope_low,
        slope_high=tr.slope_high,
        alpha=float(alpha),
        profile=profile,
        q_low=q_low,
        q_high=q_high,
        cutoff=cutoff,
        nonnegative=policy.nonnegative,
    )


def _last_period(x: np.ndarray, start: float, cutoff: float, step: float, period: float) -> np.ndarray:
    """The last `period` of the grid before the cut-off, indexed by slot as `predict` looks it up."""
    n = int(round(period / step))
    k = min(x.size, int(math.ceil((cutoff - start) / step)))
    idx = np.arange(max(0, k - n), k)
    out = np.full(n, np.nan)
    slots = (np.floor(np.mod(start + idx * step, period) / step)).astype(np.int64) % n
    out[slots] = x[idx]
    return out


def _weekly_profile(hist: Series, step: float, cutoff: float, policy: ForecastPolicy) -> np.ndarray:
    start = math.floor(float(hist.t[0]) / WEEK) * WEEK
    end = math.ceil(cutoff / WEEK) * WEEK
    x = regularise(hist, step, end=end, start=start)
    weeks = x.reshape(-1, int(round(WEEK / step)))
    n_weeks = max(1, int(math.ceil(policy.profile_days / 7)))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slots (gaps) are expected
        w = weeks[-(n_weeks + 1) :]
        return nanmedian(w - nanmedian(w, axis=1)[:, None], axis=0)


def _smooth_circular(profile: np.ndarray, width: int) -> np.ndarray:
    if width <= 1 or profile.size < width:
        return profile
    half = width // 2
    padded = np.concatenate([profile[-half:], profile, profile[:half]])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    return np.median(windows, axis=1)


def _residual_quantiles(
    days: np.ndarray,
    day_medians: np.ndarray,
    profile: np.ndarray | None,
    alpha: float,
    daily_growth: float,
    policy: ForecastPolicy,
) -> tuple[float, float]:
    """Errors of forecasting each day from the previous day's median, the trend and the profile.

    The interval always contains the point forecast (lower <= 0 <= upper).
    """
    tail = days[-(policy.profile_days + 1) :]
    meds = day_medians[-(policy.profile_days + 1) :]
    if tail.shape[0] < 2:
        flat = tail[np.isfinite(tail)]
        if flat.size < 2:
            return 0.0, 0.0
        c = flat - np.median(flat)
    else:
        seasonal = alpha * profile if profile is not None else 0.0
        pred = meds[:-1, None] + daily_growth + seasonal
        err = tail[1:] - pred
        c = err[np.isfinite(err)]
        if c.size < 2:
            return 0.0, 0.0
    lo = (1.0 - policy.coverage) / 2.0
    return min(0.0, float(np.quantile(c, lo))), max(0.0, float(np.quantile(c, 1.0 - lo)))


def time_to_exhaustion(model: SeasonalModel, capacity: float, now: float) -> float:
    """Seconds from `now` until the forecast peak reaches `capacity`: 0 if already there, +Inf if never."""
    if not math.isfinite(capacity) or capacity <= 0:
        return math.inf
    peak_now = model.level + model.slope * (now - model.t_level) + model.peak_offset()
    if peak_now >= capacity:
        return 0.0
    if model.slope <= 0:
        return math.inf
    return (capacity - peak_now) / model.slope
