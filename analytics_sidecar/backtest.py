"""`novacron-analytics backtest rightsizing|forecast`: the sidecar's own models replayed on a VM trace."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from analytics_sidecar import forecast, rightsizing
from analytics_sidecar.series import DAY, Series
from analytics_sidecar.trace import TraceError, TraceVM, read_trace


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("backtest", help="replay the right-sizing or forecast model on a VM trace")
    sub = parser.add_subparsers(dest="backtest_kind", metavar="KIND", required=True)

    rs = sub.add_parser("rightsizing", help="recommend vCPUs and memory from samples before a cut-off")
    rs.add_argument("trace_dir", metavar="TRACE_DIR")
    rs.add_argument("--fit-until", type=float, required=True, metavar="UNIX_TS")
    rs.add_argument("--out", required=True, metavar="RECS.csv")
    rs.add_argument("--risk", default=rightsizing.DEFAULT_RISK, choices=sorted(rightsizing.RISK_LEVELS))
    rs.set_defaults(func=run_rightsizing)

    fc = sub.add_parser(
        "forecast", help="forecast CPU MHz after every day boundary from the samples before it"
    )
    fc.add_argument("trace_dir", metavar="TRACE_DIR")
    fc.add_argument("--start", type=float, required=True, metavar="UNIX_TS")
    fc.add_argument("--end", type=float, required=True, metavar="UNIX_TS")
    fc.add_argument("--horizon", type=float, required=True, metavar="SECONDS")
    fc.add_argument("--out", required=True, metavar="F.csv")
    fc.set_defaults(func=run_forecast)


def running(vm: TraceVM) -> TraceVM:
    """Only the samples where the VM is allocated CPU and memory.

    A trace row with 0 cores or 0 KiB is a VM that does not run: no usage was observed (Prometheus has no
    sample for a stopped VM either), so these rows must not count as zero usage.
    """
    on = (vm.cores > 0) & (vm.mem_capacity_kb > 0)
    if on.all():
        return vm
    return replace(
        vm,
        t=vm.t[on],
        cores=vm.cores[on],
        capacity_mhz=vm.capacity_mhz[on],
        cpu_mhz=vm.cpu_mhz[on],
        mem_capacity_kb=vm.mem_capacity_kb[on],
        mem_kb=vm.mem_kb[on],
    )


def recommend_vm(vm: TraceVM, fit_until: float, risk: str | rightsizing.RiskLevel) -> tuple[int, int] | None:
    """(vCPUs, memory KiB) for one VM from its running samples before `fit_until`; None without enough."""
    vm = running(vm)
    per_core = vm.mhz_per_core_before(fit_until)
    if not math.isfinite(per_core) or per_core <= 0:
        return None
    level = rightsizing.RISK_LEVELS[risk] if isinstance(risk, str) else risk
    policy = rightsizing.RightsizingPolicy(risk=level, memory_granularity_bytes=1024)
    cpu = vm.cpu_cores_used(per_core).before(fit_until)
    mem = vm.memory_bytes_used().before(fit_until)
    rec = rightsizing.recommend(cpu, mem, now=fit_until, policy=policy)
    if rec is None:
        return None
    return rec.vcpus, max(1, rec.memory_bytes // 1024)


def run_rightsizing(args: argparse.Namespace) -> int:
    try:
        with Path(args.out).open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["vm", "cpu_cores", "memory_kb"])
            for vm in read_trace(args.trace_dir):
                rec = recommend_vm(vm, args.fit_until, args.risk)
                if rec is not None:
                    out.writerow([vm.vm, rec[0], rec[1]])
    except (TraceError, OSError) as exc:
        print(f"novacron-analytics backtest: {exc}", file=sys.stderr)
        return 2
    return 0


def day_boundaries(start: float, end: float) -> list[float]:
    """UTC day boundaries d with start <= d < end."""
    first = math.ceil(start / DAY) * DAY
    return [float(d) for d in np.arange(first, end, DAY)]


def forecast_vm(vm: TraceVM, cutoff: float, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """Target time stamps in [cutoff, cutoff + horizon) and the point forecast of CPU MHz at each."""
    targets = vm.t[(vm.t >= cutoff) & (vm.t < cutoff + horizon)]
    if not targets.size:
        return targets, targets
    model = forecast.fit(Series(vm.t, vm.cpu_mhz), cutoff)
    if model is None:
        return targets, np.full(targets.size, np.nan)
    point, _, _ = model.predict(targets)
    return targets, point


def run_forecast(args: argparse.Namespace) -> int:
    if args.end <= args.start or args.horizon <= 0:
        print("novacron-analytics backtest: need --start < --end and --horizon > 0", file=sys.stderr)
        return 2
    cutoffs = day_boundaries(args.start, args.end)
    try:
        with Path(args.out).open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["vm", "cutoff", "timestamp", "forecast_mhz"])
            for vm in read_trace(args.trace_dir):
                for d in cutoffs:
                    ts, values = forecast_vm(vm, d, args.horizon)
                    for t, v in zip(ts, values, strict=True):
                        if math.isfinite(v):
                            out.writerow([vm.vm, int(d), int(t), f"{v:.4f}"])
    except (TraceError, OSError) as exc:
        print(f"novacron-analytics backtest: {exc}", file=sys.stderr)
        return 2
    return 0
