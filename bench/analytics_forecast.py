"""Forecast accuracy: one-day-ahead CPU forecasts of the sidecar vs seasonal-naive and predict_linear.

Runs the production command `novacron-analytics backtest forecast` (every day boundary of the test period,
horizon one day), then per VM computes MASE = MAE(method) / MAE(in-sample seasonal-naive, period one day,
over the fit period) for the sidecar, seasonal-naive and predict_linear(v[1d]), and the relative MAE
(sidecar over seasonal-naive on the same points). Prints medians over VMs.

    .venv/bin/python bench/analytics_forecast.py [TRACE_DIR] [--start TS] [--end TS] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from analytics_anchors import predict_linear, seasonal_naive  # noqa: E402

from analytics_sidecar.series import DAY, Series  # noqa: E402
from analytics_sidecar.trace import TraceVM, read_trace, trace_files  # noqa: E402

AUG_1_2013 = 1375315200
SEP_1_2013 = 1377993600


def in_sample_scale(vm: TraceVM, until: float) -> float:
    """MAE of the seasonal-naive forecast (lag one day) over the fit period: MASE's denominator."""
    s = Series(vm.t, vm.cpu_mhz).before(until).finite()
    lagged = np.interp(s.t - DAY, s.t, s.v, left=np.nan)
    ok = np.isfinite(lagged) & (s.t - DAY >= s.t[0])
    return float(np.mean(np.abs(s.v[ok] - lagged[ok]))) if ok.any() else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("trace_dir", nargs="?", default="/work/shared/data/bitbrains/rnd")
    parser.add_argument("--start", type=float, default=AUG_1_2013)
    parser.add_argument("--end", type=float, default=SEP_1_2013)
    parser.add_argument("--limit", type=int, default=0, help="only the first N VMs (0: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace = args.trace_dir
        if args.limit:
            trace = str(Path(tmp) / "trace")
            Path(trace).mkdir()
            for f in trace_files(args.trace_dir)[: args.limit]:
                shutil.copy(f, trace)
        out = Path(tmp) / "f.csv"
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "analytics_sidecar.main",
                "backtest",
                "forecast",
                trace,
                "--start",
                str(args.start),
                "--end",
                str(args.end),
                "--horizon",
                str(DAY),
                "--out",
                str(out),
            ],
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        elapsed = time.perf_counter() - t0
        fc: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
        with out.open() as fh:
            for r in csv.DictReader(fh):
                fc[r["vm"]][int(r["cutoff"])].append((float(r["timestamp"]), float(r["forecast_mhz"])))
        vms = list(read_trace(trace))
    mase_s, mase_sn, mase_pl, rel_sn, rel_pl = [], [], [], [], []
    for vm in vms:
        scale = in_sample_scale(vm, args.start)
        series = Series(vm.t, vm.cpu_mhz)
        actual_by_t = dict(zip(vm.t.tolist(), vm.cpu_mhz.tolist(), strict=True))
        err_s, err_sn, err_pl = [], [], []
        for cutoff, pts in fc[vm.vm].items():
            ts = np.array([p[0] for p in pts])
            ours = np.array([p[1] for p in pts])
            actual = np.array([actual_by_t[t] for t in ts])
            sn = seasonal_naive(series, ts, cutoff)
            pl = predict_linear(series, cutoff, ts)
            ok = np.isfinite(sn) & np.isfinite(pl) & np.isfinite(ours) & np.isfinite(actual)
            err_s.append(np.abs(actual - ours)[ok])
            err_sn.append(np.abs(actual - sn)[ok])
            err_pl.append(np.abs(actual - pl)[ok])
        if not err_s or not np.concatenate(err_s).size or not np.isfinite(scale) or scale <= 0:
            continue
        es, esn, epl = (float(np.mean(np.concatenate(e))) for e in (err_s, err_sn, err_pl))
        mase_s.append(es / scale)
        mase_sn.append(esn / scale)
        mase_pl.append(epl / scale)
        rel_sn.append(es / esn if esn > 0 else np.nan)
        rel_pl.append(es / epl if epl > 0 else np.nan)
    print(f"VMs scored: {len(mase_s)}; forecast command took {elapsed:.1f}s")
    print("| method | median MASE | mean MASE |")
    print("| --- | --- | --- |")
    for name, vals in (
        ("sidecar", mase_s),
        ("seasonal-naive (1 day)", mase_sn),
        ("predict_linear(v[1d])", mase_pl),
    ):
        print(f"| {name} | {np.nanmedian(vals):.3f} | {np.nanmean(vals):.3f} |")
    print(
        f"median MAE ratio sidecar / seasonal-naive: {np.nanmedian(rel_sn):.3f} (goal < 0.9); "
        f"share of VMs below 1: {np.nanmean(np.array(rel_sn) < 1):.0%}"
    )
    print(f"median MAE ratio sidecar / predict_linear: {np.nanmedian(rel_pl):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
