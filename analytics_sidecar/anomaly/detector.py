"""Online causal anomaly detector for one series: robust, EWMA, seasonal, change-point, half-space trees.

Every `update(t, x)` uses only points up to t. Each component's surprise becomes a raw score in [0, 1] that is
calibrated by its own anomaly-likelihood step (how unusual the recent raw scores are against their history, in
the manner of Numenta's anomaly likelihood); a value beyond the whole range seen so far (by a tolerance)
scores 1 (range novelty, as in Numenta's NAB detector); the score is the largest of these. A likelihood alarm
stands only when the shape of the last hours (a window of downsampled values) fits no category a fuzzy ART
network has learned closely (the shape gate); range novelty is not gated. The score is made sparse: after
an alarm (score at or above `threshold`) scores are held below the threshold for `suppress_s` seconds. The
whole object pickles, so per-series state survives restarts.
"""

from __future__ import annotations

import functools
import math
from array import array
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field

import numpy as np

DAY = 86400.0
WEEK = 7 * DAY
LOG_LIKELIHOOD_DENOM = math.log(1.0 - 0.9999999999)


@dataclass(frozen=True)
class DetectorParams:
    """General parameters, fixed before any scoring (never tuned per series)."""

    window: int = 512  # rolling median / MAD window (points)
    mad_every: int = 8  # recompute the MAD every N points (it needs a second sort)
    ewma_alpha: float = 0.1
    season_buckets: int = 48  # phase buckets per day and per week period
    season_alpha: float = 0.1
    season_min_periods: int = 2
    band_k: float = 3.0  # baseline band = seasonal mean ± band_k * seasonal deviation
    cusum_drift: float = 0.5
    cusum_h: float = 8.0
    hst_trees: int = 10
    hst_height: int = 6
    hst_window: int = 128
    hst_standardise: bool = False  # score the trees in robust sigmas of their own recent scores
    hst_lags: int = 0  # previous points (squashed robust z) given to the trees as a shape
    z_scale: float = 5.0  # surprise z of z_offset + z_scale maps to raw ≈ 0.63
    z_offset: float = 2.5  # surprises below this many robust sigmas count as nothing
    short_window: int = 10  # likelihood: mean of the recent raw scores ...
    history: int = 2000  # ... against this many past raw scores
    learning: int = 300  # no likelihood before this many points
    mean_floor: float = 0.03  # likelihood: lower bounds of the history's mean and variance
    var_floor: float = 0.0003
    threshold: float = 0.5  # declared alarm threshold of the final score
    suppress: int = 150  # points after an alarm without a new one (only when suppress_s is 0)
    seed: int = 7
    spike_z: float = 0.0  # a point this many sigmas off its (seasonal) baseline alarms by itself; 0 disables
    spatial_tol: float = 0.05  # beyond the range seen so far by this fraction of it: alarm; 0 disables
    spatial_warmup: int = 150  # points before the range check speaks
    suppress_s: float = 64800.0  # >0: the suppression window in seconds (18 h) instead of points
    use: str = "rcesh"  # components: r robust, c change point, e EWMA, s seasonal, h half-space trees
    # Shape gate: fuzzy ART over windows of the last shape_k downsampled values; shape_k 0 disables the gate.
    shape_k: int = 16
    shape_bin_s: float = 1800.0  # downsampling: one value (the bin's extreme) per this many seconds
    # Vigilance: a window joins (and widens) a category matching it at least this well; above 1 - 1/shape_k,
    # so a window off a category by the whole range in a single bin (a spike) never joins it.
    shape_rho: float = 0.95
    shape_alpha: float = 0.001  # choice parameter
    shape_beta: float = 1.0  # learning rate (1: fast learning)
    shape_warmup: int = 100  # bins learned before the gate applies
    shape_gate: float = 0.025  # a likelihood alarm needs a window matching no category better than 1 - this
    shape_gate_s: float = 7200.0  # ... within this many seconds of the likelihood's crossing
    shape_cap: int = 512  # at most this many categories (then new windows stay novel, learned no more)


@dataclass
class Output:
    """One scored point: final score in [0,1], baseline band, raw combined score, alarm flag."""

    score: float
    upper: float
    lower: float
    raw: float
    alarm: bool
    likelihood: float  # the calibrated score before suppression


class _Rolling:
    """Sorted rolling window: O(log n) median and quantiles, MAD refreshed periodically."""

    def __init__(self, size: int, mad_every: int) -> None:
        self.size = size
        self.mad_every = mad_every
        self.fifo: deque[float] = deque()
        self.sorted: list[float] = []
        self.mad = 0.0
        self._since = 0

    def push(self, x: float) -> None:
        self.fifo.append(x)
        insort(self.sorted, x)
        if len(self.fifo) > self.size:
            old = self.fifo.popleft()
            del self.sorted[bisect_left(self.sorted, old)]
        self._since += 1
        if self._since >= self.mad_every:
            self._since = 0
            med = self.median()
            dev = sorted(abs(v - med) for v in self.sorted)
            self.mad = dev[len(dev) // 2]

    def median(self) -> float:
        s = self.sorted
        return s[len(s) // 2] if s else 0.0

    def spread(self) -> float:
        s = self.sorted
        return s[-1] - s[0] if s else 0.0


class _Seasonal:
    """Per-phase EWMA mean and mean absolute deviation for one period (daily or weekly)."""

    def __init__(self, period: float, buckets: int, alpha: float) -> None:
        self.period = period
        self.buckets = buckets
        self.alpha = alpha
        self.mean = [0.0] * buckets
        self.dev = [0.0] * buckets
        self.count = [0] * buckets
        self.first_t: float | None = None

    def bucket(self, t: float) -> int:
        return int((t % self.period) / self.period * self.buckets) % self.buckets

    def periods_seen(self, t: float) -> float:
        return 0.0 if self.first_t is None else (t - self.first_t) / self.period

    def expect(self, b: int) -> tuple[float, float, int]:
        return self.mean[b], self.dev[b], self.count[b]

    def learn(self, t: float, b: int, x: float) -> None:
        if self.first_t is None:
            self.first_t = t
        n = self.count[b]
        if n == 0:
            self.mean[b] = x
        else:
            a = max(self.alpha, 1.0 / (n + 1))
            err = x - self.mean[b]
            self.mean[b] += a * err
            self.dev[b] += a * (abs(err) - self.dev[b])
        self.count[b] = n + 1


class _Likelihood:
    """Gaussian tail likelihood of the short-term mean raw score against the long history (Numenta-style).

    The history is a ring buffer of doubles (8 bytes a point, not a 32-byte float object), and its running
    sums are recomputed exactly each time the ring wraps so that rounding never accumulates.
    """

    def __init__(
        self, short: int, history: int, learning: int, mean_floor: float = 0.03, var_floor: float = 0.0003
    ) -> None:
        self.mean_floor = mean_floor
        self.var_floor = var_floor
        self.short: deque[float] = deque(maxlen=short)
        self.hist = array("d")
        self.size = history
        self.pos = 0
        self.learning = learning
        self.sum = 0.0
        self.sumsq = 0.0
        self.seen = 0

    def update(self, raw: float) -> float:
        self.short.append(raw)
        avg = sum(self.short) / len(self.short)
        self.seen += 1
        n = len(self.hist)
        score = 0.0
        if self.seen > self.learning and n > 1:
            # Floors as in Numenta's estimator: a nearly silent history must not make every blip "red".
            mean = max(self.sum / n, self.mean_floor)
            var = max(self.sumsq / n - (self.sum / n) ** 2, self.var_floor)
            likelihood = 1.0 - _tail(avg, mean, math.sqrt(var))
            score = math.log(1.0000000001 - likelihood) / LOG_LIKELIHOOD_DENOM
        if n < self.size:
            self.hist.append(avg)
            self.sum += avg
            self.sumsq += avg * avg
        else:
            old = self.hist[self.pos]
            self.hist[self.pos] = avg
            self.pos = (self.pos + 1) % self.size
            if self.pos == 0:
                self.sum = math.fsum(self.hist)
                self.sumsq = math.fsum(v * v for v in self.hist)
            else:
                self.sum += avg - old
                self.sumsq += avg * avg - old * old
        return min(max(score, 0.0), 1.0)


class _Shape:
    """Shape novelty: fuzzy ART over windows of the last k downsampled values, causal.

    Fuzzy ART (Carpenter, Grossberg & Rosen 1991, "Fuzzy ART: fast stable learning and categorization of
    analog patterns"): input I = (a, 1 - a) (complement coding, |I| = k), categories w_j; choice
    T_j = |I ^ w_j| / (alpha + |w_j|); resonance when the match |I ^ w_j| / |I| >= rho (vigilance), searching
    categories by decreasing T_j; learning w_j <- beta (I ^ w_j) + (1 - beta) w_j; no resonance: a new
    category w = I. With complement coding a category is a box [u_j, v_j] (w_j = (u_j, 1 - v_j)), so
    |w_j| = k - |v_j - u_j| and |I ^ w_j| = k - |max(v_j, a) - min(u_j, a)|; learning moves u_j toward
    min(u_j, a) and v_j toward max(v_j, a). The boxes are kept in raw units and measured in units of the range
    seen so far (running min/max of the downsampled values), so a widening range re-normalises every category
    at once: no knowledge of the series' future range or length (which ARTime's NAB wrapper passes in) is
    needed. Downsampling as ARTime: per bin of `bin_s` seconds (time, not points) the bin's value farthest
    from a moving average, so spikes survive.
    """

    def __init__(self, p: DetectorParams) -> None:
        self.k = p.shape_k
        self.p = p
        self.window: deque[float] = deque(maxlen=p.shape_k)
        self.bin: list[float] = []
        self.bin_start: float | None = None
        self.avg: float | None = None
        self.lo, self.hi = math.inf, -math.inf
        self.w = np.zeros((0, 2 * p.shape_k))  # categories, complement coded in raw units (below)
        self.wsum = np.zeros(0)
        self.n = 0  # categories in use
        self.bins = 0
        self.mismatch = 0.0  # last closed bin: 1 - the best match (0 before a full window)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["w"], state["wsum"] = self.w[: self.n].copy(), self.wsum[: self.n].copy()
        return state

    def update(self, t: float, x: float, dt: float) -> bool:
        """Add a point; when it closes a bin, categorise the window and return True."""
        p = self.p
        if self.bin_start is None:
            self.bin_start = t
        self.bin.append(x)
        if (t - self.bin_start) + dt < p.shape_bin_s * 0.999:
            return False
        vals = self.bin
        mean = sum(vals) / len(vals)
        self.avg = mean if self.avg is None else 0.5 * (self.avg + mean)
        hi, lo = max(vals), min(vals)
        b = hi if abs(hi - self.avg) >= abs(lo - self.avg) else lo
        self.bin = []
        self.bin_start = None
        self.lo, self.hi = min(self.lo, b), max(self.hi, b)
        rng = self.hi - self.lo
        self.window.append(b)
        self.bins += 1
        self.mismatch = 0.0
        if len(self.window) == self.k and rng > 0:
            self._categorise(np.fromiter(self.window, float, self.k), rng)
        return True

    def _categorise(self, a: np.ndarray, rng: float) -> None:
        p, k, n = self.p, self.k, self.n
        # Complement coding in raw units: W_j = (u_j, -v_j), I = (a, -a); in the normalised terms of the
        # docstring |I ^ w_j| = k + sum(min(W_j, I)) / range and |w_j| = k + sum(W_j) / range.
        inp = np.concatenate((a, -a))
        if n:
            w = self.w[:n]
            # Row sums as a product with ones: BLAS, about twice as fast as .sum(axis=1) on 32-wide rows.
            common = np.minimum(w, inp) @ _ones(2 * k)  # times the range, as wsum
            best = float(common.max())
            self.mismatch = -best / (k * rng)  # 1 - the best match |I ^ w_j| / |I|
            need = (p.shape_rho - 1.0) * k * rng  # resonance: the match is at least rho
            if best >= need:
                fit = np.flatnonzero(common >= need)
                j = int(fit[0])
                if len(fit) > 1:  # choice among the categories that resonate (times the range)
                    choice = (k * rng + common[fit]) / ((p.shape_alpha + k) * rng + self.wsum[fit])
                    j = int(fit[choice.argmax()])
                w[j] += p.shape_beta * (np.minimum(w[j], inp) - w[j])
                self.wsum[j] = w[j].sum()
                return
        else:
            self.mismatch = 1.0
        if n < p.shape_cap:
            if n == len(self.w):
                grow = min(max(16, n), p.shape_cap - n)  # double, up to the cap
                self.w = np.concatenate((self.w, np.zeros((grow, 2 * k))))
                self.wsum = np.concatenate((self.wsum, np.zeros(grow)))
            self.w[n] = inp
            self.wsum[n] = inp.sum()
            self.n = n + 1


@functools.cache
def _ones(size: int) -> np.ndarray:
    """A shared vector of ones (read only) for row sums by matrix product."""
    ones = np.ones(size)
    ones.flags.writeable = False
    return ones


def _tail(x: float, mean: float, std: float) -> float:
    """Upper tail probability of x under N(mean, std); values below the mean are not anomalous."""
    if x < mean:
        return 1.0 - _tail(2 * mean - x, mean, std)
    return 0.5 * math.erfc((x - mean) / (std * math.sqrt(2.0)))


@dataclass
class AnomalyDetector:
    """Combined online detector for one series; `update` returns an Output per point."""

    params: DetectorParams = field(default_factory=DetectorParams)

    def __post_init__(self) -> None:
        p = self.params
        self.roll = _Rolling(p.window, p.mad_every)
        self.ewma_mean: float | None = None
        self.ewma_var = 0.0
        self.daily = _Seasonal(DAY, p.season_buckets, p.season_alpha)
        self.weekly = _Seasonal(WEEK, p.season_buckets * 7, p.season_alpha)
        self.cusum_pos = 0.0
        self.cusum_neg = 0.0
        # Imported here: river pulls in scipy.stats (~0.9 s), which every CLI command would pay at start.
        from river import anomaly as river_anomaly

        self.hst = river_anomaly.HalfSpaceTrees(
            n_trees=p.hst_trees, height=p.hst_height, window_size=p.hst_window, seed=p.seed
        )
        self.hst_roll = _Rolling(p.window, p.mad_every)
        self.likelihood = {
            k: _Likelihood(p.short_window, p.history, p.learning, p.mean_floor, p.var_floor) for k in p.use
        }
        self.n = 0
        self.last_t: float | None = None
        self.last_x: float | None = None
        # Pre-filled: the trees fix their feature set from the first sample they see.
        self.lags: deque[float] = deque([0.5] * p.hst_lags, maxlen=p.hst_lags)
        self.min_x, self.max_x = math.inf, -math.inf
        self.quiet_until = -math.inf
        self.quiet = 0  # points left in the suppression window
        self.shape = _Shape(p) if p.shape_k > 0 else None
        self.armed_until = -math.inf  # shape gate: a likelihood alarm waits until then for a novel shape
        self.armed_score = 0.0

    def update(self, t: float, x: float) -> Output:
        """Score point (t, x) with state from earlier points only, then learn it."""
        p = self.params
        if x != x:  # NaN: report the baseline, learn nothing
            return self._no_value()
        z_parts, upper, lower = self._surprises(t, x)
        if self.shape is not None:
            self.shape.update(t, x, 0.0 if self.last_t is None else t - self.last_t)
        raw = 1.0 - math.exp(-max(z_parts.values()) / p.z_scale) if z_parts else 0.0
        # Each component is calibrated against its own history, so a component that is noisy on this series
        # calibrates itself away instead of drowning the others; the combined score is the largest.
        score = 0.0
        for k, z in z_parts.items():
            score = max(
                score, self.likelihood[k].update(1.0 - math.exp(-max(z - p.z_offset, 0.0) / p.z_scale))
            )
        if self.shape is not None and self.shape.bins > p.shape_warmup:
            score = self._gate(t, score)
        if p.spike_z > 0:
            ref = z_parts.get("s", z_parts.get("r", 0.0))
            if ref >= p.spike_z:
                # Extreme single points bypass the likelihood, which averages them away over its short window.
                score = max(score, 0.5 + 0.5 * (1.0 - math.exp(-(ref - p.spike_z) / p.spike_z)))
        if p.spatial_tol > 0:
            # A new level beyond everything seen is an anomaly however the likelihood has calibrated itself.
            score = max(score, self._spatial(x))
        self._learn(t, x)
        likelihood = score
        score, alarm = self._sparse(t, score)
        return Output(score, upper, lower, raw, alarm, likelihood)

    def _gate(self, t: float, score: float) -> float:
        """Shape gate: a likelihood alarm stands only once the recent shape fits no learned category well.

        The crossing arms the gate for `shape_gate_s` seconds; the alarm is raised (with the largest score
        since the crossing) at the first point in that time whose window of bins matches no category better
        than 1 - `shape_gate` (a second, upper vigilance, as in ARTime's dual-vigilance ART); otherwise the
        score is held just under the threshold. Range novelty is added afterwards and is not gated.
        """
        p = self.params
        if score >= p.threshold:
            if self.armed_until < t:
                self.armed_until, self.armed_score = t + p.shape_gate_s, score
            self.armed_score = max(self.armed_score, score)
        if t <= self.armed_until and self.shape is not None and self.shape.mismatch >= p.shape_gate:
            self.armed_until = -math.inf
            return max(self.armed_score, score)
        return min(score, p.threshold - 0.01)

    def _sparse(self, t: float, score: float) -> tuple[float, bool]:
        """Sparse alarming: after an alarm, hold scores below the threshold for the suppression window."""
        p = self.params
        if p.suppress_s > 0:
            # In time, not points: one episode is one alarm whatever the sampling interval of the series.
            if t < self.quiet_until:
                return min(score, p.threshold) * 0.1, False
            if score >= p.threshold:
                self.quiet_until = t + p.suppress_s
                return score, True
            return score, False
        if self.quiet > 0:
            self.quiet -= 1
            return min(score, p.threshold) * 0.1, False
        if score >= p.threshold:
            self.quiet = p.suppress
            return score, True
        return score, False

    def _spatial(self, x: float) -> float:
        """1 when x leaves the whole range seen so far by more than `spatial_tol` of it (a new level)."""
        lo, hi = self.min_x, self.max_x
        hit = 0.0
        if self.n >= self.params.spatial_warmup and hi > lo:
            tol = (hi - lo) * self.params.spatial_tol
            if x > hi + tol or x < lo - tol:
                hit = 1.0
        self.min_x, self.max_x = min(lo, x), max(hi, x)
        return hit

    def _no_value(self) -> Output:
        med = self.roll.median()
        return Output(0.0, med, med, 0.0, False, 0.0)

    def _scale(self) -> float:
        """Robust scale with a floor so flat series do not turn every blip into infinity."""
        r = self.roll
        return max(1.4826 * r.mad, 0.02 * r.spread(), 1e-6 * abs(r.median()), 1e-9)

    def _surprises(self, t: float, x: float) -> tuple[dict[str, float], float, float]:
        """Component surprises (z-like, >= 0) and the baseline band for point x, before learning it."""
        p = self.params
        parts: dict[str, float] = {}
        med = self.roll.median()
        scale = self._scale()
        upper = lower = med
        if self.n >= 16:
            z = (x - med) / scale
            if "r" in p.use:
                parts["r"] = abs(z)
            # Change point: two-sided CUSUM of the clipped robust z against a drift allowance.
            zc = max(min(z, 6.0), -6.0)
            self.cusum_pos = max(0.0, self.cusum_pos + zc - p.cusum_drift)
            self.cusum_neg = max(0.0, self.cusum_neg - zc - p.cusum_drift)
            cus = max(self.cusum_pos, self.cusum_neg)
            if "c" in p.use:
                parts["c"] = cus / p.cusum_h * 3.0
            if cus > p.cusum_h:
                self.cusum_pos = self.cusum_neg = 0.0
            if "e" in p.use and self.ewma_mean is not None and self.ewma_var > 0:
                parts["e"] = abs(x - self.ewma_mean) / max(math.sqrt(self.ewma_var), scale)
            upper, lower = med + p.band_k * scale, med - p.band_k * scale
            seasonal = self._seasonal_expect(t)
            if seasonal is not None and "s" in p.use:
                mean, dev = seasonal
                dev = max(dev * 1.2533, scale * 0.05)  # 1.2533: mean abs dev -> sigma
                parts["s"] = abs(x - mean) / dev
                upper, lower = mean + p.band_k * dev, mean - p.band_k * dev
            # Half-space trees on a squashed robust z and step change: learned density of recent behaviour.
            zs = 0.5 + 0.5 * math.tanh(z / 4.0)
            feat = {"z": zs, "d": self._delta_feature(x, scale)}
            # Shape: the squashed robust z of the previous points, so the trees learn recent patterns too.
            for i, past in enumerate(self.lags):
                feat[f"l{i}"] = past
            self.lags.appendleft(zs)
            hs = self.hst.score_one(feat)
            self.hst.learn_one(feat)
            if "h" in p.use:
                # The trees' scores crowd a narrow range that depends on the series: standardise them robustly
                # against their own recent history so they speak in the same sigmas as the other components.
                hr = self.hst_roll
                if not p.hst_standardise:
                    parts["h"] = hs * 4.0
                else:
                    if len(hr.sorted) >= 32:
                        parts["h"] = max(hs - hr.median(), 0.0) / max(1.4826 * hr.mad, 1e-3)
                    hr.push(hs)
        return parts, upper, lower

    def _delta_feature(self, x: float, scale: float) -> float:
        d = 0.0 if self.last_x is None else (x - self.last_x) / scale
        return 0.5 + 0.5 * math.tanh(d / 4.0)

    def _seasonal_expect(self, t: float) -> tuple[float, float] | None:
        """Weekly baseline once two weeks are seen, else daily once two days are seen."""
        p = self.params
        for season in (self.weekly, self.daily):
            if season.periods_seen(t) >= p.season_min_periods:
                mean, dev, count = season.expect(season.bucket(t))
                if count >= p.season_min_periods:
                    return mean, dev
        return None

    def _learn(self, t: float, x: float) -> None:
        a = self.params.ewma_alpha
        if self.ewma_mean is None:
            self.ewma_mean = x
        else:
            d = x - self.ewma_mean
            self.ewma_mean += a * d
            self.ewma_var = (1 - a) * (self.ewma_var + a * d * d)
        self.roll.push(x)
        self.daily.learn(t, self.daily.bucket(t), x)
        self.weekly.learn(t, self.weekly.bucket(t), x)
        self.n += 1
        self.last_t, self.last_x = t, x
