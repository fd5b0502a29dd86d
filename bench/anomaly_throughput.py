"""Throughput of the combined anomaly detector: points per second per core (CPU time of one process).

Runs the production detector (robust + EWMA + seasonal + change point + half-space trees + likelihood) over a
NAB file and over a synthetic seasonal series, through the engine's `update` path the sidecar uses, and prints
points per CPU-second; the goal is >= 10,000 points/s/core. CPU time is used (not wall time) so that other
load on a shared machine does not distort the figure; wall time is printed too.

    .venv/bin/python bench/anomaly_throughput.py [--points 50000]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import time
from pathlib import Path

from analytics_sidecar.anomaly.detector import AnomalyDetector
from analytics_sidecar.anomaly.engine import AnomalyEngine, SeriesKey
from analytics_sidecar.anomaly.nab_score import parse_time

NAB_DIR = Path(
    os.environ.get("NOVACRON_NAB_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "nab")
)
NAB_FILE = NAB_DIR / "data" / "realTweets" / "Twitter_volume_AAPL.csv"
GOAL = 10_000.0


def synthetic(n: int, step: float = 60.0) -> tuple[list[float], list[float]]:
    """A daily sine with noise, one point per `step` seconds."""
    rng = random.Random(0)
    ts = [1.7e9 + step * i for i in range(n)]
    xs = [50 + 30 * math.sin(2 * math.pi * i * step / 86400) + rng.gauss(0, 3) for i in range(n)]
    return ts, xs


def nab(n: int) -> tuple[list[float], list[float]]:
    with open(NAB_FILE, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return [parse_time(r["timestamp"]).timestamp() for r in rows], [float(r["value"]) for r in rows]


def bench_detector(ts: list[float], xs: list[float]) -> tuple[float, float]:
    det = AnomalyDetector()
    c0, w0 = time.process_time(), time.perf_counter()
    for t, x in zip(ts, xs, strict=True):
        det.update(t, x)
    return time.process_time() - c0, time.perf_counter() - w0


def bench_engine(ts: list[float], xs: list[float], n_series: int) -> tuple[float, float]:
    """The sidecar path: many series, each updated in cycles of 60 points."""
    engine = AnomalyEngine()
    per = len(ts) // n_series
    keys = [SeriesKey(f"vm-{i}", "cpu") for i in range(n_series)]
    c0, w0 = time.process_time(), time.perf_counter()
    for start in range(0, per, 60):
        for k in keys:
            engine.update(k, ts[start : start + 60], xs[start : start + 60])
    return time.process_time() - c0, time.perf_counter() - w0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=50_000)
    args = parser.parse_args()
    print(f"{'case':<34} {'points':>8} {'cpu s':>7} {'wall s':>7} {'points/s/core':>14} {'vs goal':>8}")
    cases = [
        ("detector, synthetic seasonal", synthetic(args.points)),
        ("detector, NAB Twitter_volume_AAPL", nab(args.points)),
        # The worst case of the shape gate: every point closes a half-hour bin and is categorised.
        ("detector, hourly (a bin per point)", synthetic(args.points, 3600.0)),
    ]
    for name, (ts, xs) in cases:
        cpu, wall = bench_detector(ts, xs)
        rate = len(ts) / cpu
        print(f"{name:<34} {len(ts):8d} {cpu:7.2f} {wall:7.2f} {rate:14,.0f} {rate / GOAL:7.2f}x")
    ts, xs = synthetic(args.points)
    cpu, wall = bench_engine(ts, xs, n_series=20)
    rate = (len(ts) // 20 // 60 * 60 * 20) / cpu
    name = "engine, 20 series x 60-pt cycles"
    print(f"{name:<34} {len(ts):8d} {cpu:7.2f} {wall:7.2f} {rate:14,.0f} {rate / GOAL:7.2f}x")


if __name__ == "__main__":
    main()
