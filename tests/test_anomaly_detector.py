"""Anomaly detector: causality, state round trip, injected anomalies caught, clean seasonal series quiet."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from analytics_sidecar.anomaly.detector import AnomalyDetector, DetectorParams

STEP = 300.0  # five-minute samples
DAY_POINTS = int(86400 / STEP)
T0 = 1_700_000_000.0 - (1_700_000_000.0 % 86400)


def seasonal(days: int, seed: int = 0, noise: float = 2.0, weekend: bool = True) -> list[tuple[float, float]]:
    """A daily sine (CPU-like, 20..80) with an optional weekend dip and Gaussian noise."""
    rng = random.Random(seed)
    out = []
    for i in range(days * DAY_POINTS):
        t = T0 + i * STEP
        phase = 2 * math.pi * (i % DAY_POINTS) / DAY_POINTS
        dip = 0.7 if weekend and (i // DAY_POINTS) % 7 in (5, 6) else 1.0
        out.append((t, (50 + 30 * math.sin(phase)) * dip + rng.gauss(0, noise)))
    return out


def run(points: list[tuple[float, float]], params: DetectorParams | None = None):
    det = AnomalyDetector(params or DetectorParams())
    return [det.update(t, x) for t, x in points]


def test_causal_score_at_t_ignores_future_points() -> None:
    base = seasonal(4, seed=1)
    cut = 3 * DAY_POINTS
    changed = base[:cut] + [(t, x * 5 + 100) for t, x in base[cut:]]
    a, b = run(base), run(changed)
    assert [o.score for o in a[:cut]] == [o.score for o in b[:cut]]
    assert [(o.upper, o.lower) for o in a[:cut]] == [(o.upper, o.lower) for o in b[:cut]]
    # and the future change does show up after the cut
    assert max(o.score for o in b[cut:]) > max(o.score for o in a[cut:])


def test_state_round_trip_continues_identically() -> None:
    pts = seasonal(5, seed=2)
    half = len(pts) // 2
    det = AnomalyDetector()
    for t, x in pts[:half]:
        det.update(t, x)
    clone = pickle.loads(pickle.dumps(det))
    rest_a = [det.update(t, x) for t, x in pts[half:]]
    rest_b = [clone.update(t, x) for t, x in pts[half:]]
    assert rest_a == rest_b


def test_clean_seasonal_series_stays_quiet() -> None:
    outs = run(seasonal(14, seed=3, weekend=False))
    learned = outs[3 * DAY_POINTS :]
    alarms = sum(o.alarm for o in learned)
    assert alarms <= 1, f"{alarms} alarms on a clean series"
    assert sum(o.score >= 0.5 for o in learned) <= 1


@pytest.mark.parametrize(
    "kind",
    ["burst", "level_shift", "dropout", "flat"],
)
def test_injected_anomaly_is_caught_quickly(kind: str) -> None:
    pts = seasonal(14, seed=4, weekend=False)
    at = 10 * DAY_POINTS + DAY_POINTS // 3
    if (
        kind == "burst"
    ):  # fifteen minutes far above the band (a lone one-sample spike is left to threshold alerts)
        pts[at : at + 3] = [(t, x + 60) for t, x in pts[at : at + 3]]
    elif kind == "level_shift":
        pts[at:] = [(t, x + 40) for t, x in pts[at:]]
    elif kind == "dropout":
        pts[at : at + 24] = [(t, 0.0) for t, _ in pts[at : at + 24]]
    else:  # the daily cycle stops: flat at the daily mean for six hours
        pts[at : at + 72] = [(t, 50.0) for t, _ in pts[at : at + 72]]
    outs = run(pts)
    before = outs[3 * DAY_POINTS : at]
    assert sum(o.alarm for o in before) <= 1
    hits = [i for i in range(at, min(at + 72, len(outs))) if outs[i].alarm]
    assert hits, f"{kind} not caught within six hours"
    assert hits[0] - at <= 36


def test_band_tracks_the_daily_cycle() -> None:
    pts = seasonal(9, seed=5, weekend=False)
    outs = run(pts)
    last_day = range(8 * DAY_POINTS, 9 * DAY_POINTS)
    inside = sum(outs[i].lower <= pts[i][1] <= outs[i].upper for i in last_day)
    assert inside / DAY_POINTS > 0.95
    widths = [outs[i].upper - outs[i].lower for i in last_day]
    # the band follows the season: far narrower than the daily swing of 60
    assert sum(widths) / len(widths) < 30


def test_nan_points_are_skipped_and_scores_stay_in_unit_interval() -> None:
    pts = seasonal(3, seed=6)
    pts[400] = (pts[400][0], float("nan"))
    outs = run(pts)
    assert outs[400].score == 0.0
    assert all(0.0 <= o.score <= 1.0 for o in outs)


def test_weekly_pattern_is_learned_after_two_weeks() -> None:
    pts = seasonal(22, seed=8)  # weekdays and a 30 % lower weekend
    outs = run(pts)
    alarms = [i / DAY_POINTS for i, o in enumerate(outs) if o.alarm]
    # the first weekend is new behaviour; later weekends are expected ones
    assert all(day < 7 for day in alarms), alarms
    weekend3 = range(19 * DAY_POINTS, 21 * DAY_POINTS)
    inside = sum(outs[i].lower <= pts[i][1] <= outs[i].upper for i in weekend3)
    assert inside / len(weekend3) > 0.95


def test_a_value_beyond_the_range_seen_alarms_at_once() -> None:
    pts = seasonal(4, seed=9, weekend=False)
    at = 3 * DAY_POINTS + 10
    pts[at] = (pts[at][0], 130.0)  # one sample far above anything seen (range is about 20..80)
    outs = run(pts)
    assert outs[at].alarm and outs[at].score == 1.0
    assert not any(o.alarm for o in outs[2 * DAY_POINTS : at])


def test_no_second_alarm_inside_the_suppression_window_in_time() -> None:
    params = DetectorParams()
    pts = seasonal(6, seed=10, weekend=False)
    first, second = 3 * DAY_POINTS, 3 * DAY_POINTS + DAY_POINTS // 2  # twelve hours apart
    third = first + int(params.suppress_s / STEP) + 12  # an hour after the window ends
    for at, level in ((first, 130.0), (second, 160.0), (third, 190.0)):
        pts[at] = (pts[at][0], level)
    outs = run(pts, params)
    assert outs[first].alarm
    assert not outs[second].alarm and outs[second].score < params.threshold
    assert outs[third].alarm


def spiky(days: int, seed: int = 12) -> list[tuple[float, float]]:
    """Tweet-like counts: a low noisy level (10 ± 1); a burst to 200 on the first day sets the range."""
    rng = random.Random(seed)
    out = [(T0 + i * STEP, 10.0 + rng.gauss(0, 1.0)) for i in range(days * DAY_POINTS)]
    burst = DAY_POINTS // 2
    out[burst : burst + 3] = [(t, 200.0) for t, _ in out[burst : burst + 3]]
    return out


def test_shape_categories_know_the_usual_window_and_flag_a_new_shape() -> None:
    from analytics_sidecar.anomaly.detector import _Shape

    params = DetectorParams()
    pts = spiky(6)
    at = 5 * DAY_POINTS
    pts[at : at + 36] = [(t, 40.0) for t, _ in pts[at : at + 36]]  # three hours at a level inside the range
    shape, last, seen = _Shape(params), None, []
    for i, (t, x) in enumerate(pts):
        if shape.update(t, x, 0.0 if last is None else t - last):
            seen.append((i, shape.mismatch))
        last = t
    usual = [m for i, m in seen if 3 * DAY_POINTS <= i < at]
    new = [m for i, m in seen if at <= i < at + 36]
    assert max(usual) < params.shape_gate  # windows of the usual level fit a learned category closely
    assert max(new) >= params.shape_gate  # the plateau fits none: the gate lets an alarm through
    assert shape.n < 100  # one category per distinct shape, not per window


def test_shape_gate_holds_a_small_bump_of_a_familiar_shape_and_passes_a_new_one() -> None:
    pts = spiky(8)
    bump, plateau = 5 * DAY_POINTS, 7 * DAY_POINTS
    pts[bump : bump + 12] = [
        (t, x + 8.0) for t, x in pts[bump : bump + 12]
    ]  # an hour 8 sigma up, 4 % of range
    pts[plateau : plateau + 36] = [(t, 40.0) for t, _ in pts[plateau : plateau + 36]]
    ungated = run(pts, DetectorParams(shape_k=0))
    gated = run(pts)
    assert any(o.alarm for o in ungated[bump : bump + 36])  # the likelihood does alarm on the bump
    assert not any(o.alarm for o in gated[bump : bump + 36])
    hits = [i - plateau for i in range(plateau, plateau + 60) if gated[i].alarm]
    assert hits and hits[0] <= 24  # within two hours of the start: the armed alarm waits for the shape
