"""Right-sizing backtest: fit on July, replay August-September; sidecar vs KRR simple vs VPA recipe.

Runs the production command `novacron-analytics backtest rightsizing` for each shipped risk level, then
scores every method on the same VMs (those every method gives a recommendation for): capacity saved
against what is provisioned (CPU in vCPUs, memory in KiB) and the share of 5-minute samples after the
cut-off whose usage is above the recommendation. All methods recommend whole vCPUs (at least one) and see
the same input: the samples where the VM runs (see `backtest.running`).

A sweep of risk parameters (in process, the same production function) then prints the sidecar's
savings/risk frontier per resource and, for each anchor, the best saving of the sweep at a risk no higher
than the anchor's, next to the anchor's, in the same run.

    .venv/bin/python bench/analytics_rightsizing.py [TRACE_DIR] [--fit-until TS] [--split K/N] [--no-sweep]

`--split K/N` scores only the VMs with crc32(vm id) % N == K (e.g. 0/2 and 1/2: two disjoint halves).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from analytics_anchors import krr_simple, vpa, whole_vcpus  # noqa: E402

from analytics_sidecar.backtest import recommend_vm, running  # noqa: E402
from analytics_sidecar.rightsizing import DEFAULT_RISK, RISK_LEVELS, RiskLevel  # noqa: E402
from analytics_sidecar.trace import TraceVM, read_trace  # noqa: E402

AUG_1_2013 = 1375315200
Recs = dict[str, tuple[int, float]]

# The sweep: CPU (percentile floor, need) and memory (percentile floor, need, headroom) grids, zipped so
# one pass over the VMs scores a CPU point and a memory point.
CPU_GRID = list(itertools.product((99.0, 95.0, 90.0, 80.0, 70.0), (0.0, 0.005, 0.01, 0.02, 0.03, 0.05)))
MEM_GRID = list(itertools.product((99.9, 99.0, 95.0), (0.0, 0.0005, 0.001, 0.005, 0.02), (0.0, 0.05, 0.10)))


def score(vms: list[TraceVM], recs: Recs, fit_until: float, only: set[str]) -> dict[str, float]:
    prov_cpu = used_cpu = prov_mem = used_mem = 0.0
    over_cpu = over_mem = n = 0
    for vm in vms:
        if vm.vm not in only:
            continue
        cores, mem_kb = recs[vm.vm]
        after = vm.t >= fit_until
        per_core = vm.mhz_per_core_before(fit_until)
        prov_cpu += float(vm.cores[after].mean()) if after.any() else 0.0
        prov_mem += float(vm.mem_capacity_kb[after].mean()) if after.any() else 0.0
        used_cpu += cores
        used_mem += mem_kb
        over_cpu += int((vm.cpu_mhz[after] > cores * per_core).sum())
        over_mem += int((vm.mem_kb[after] > mem_kb).sum())
        n += int(after.sum())
    return {
        "cpu_saved": 1 - used_cpu / prov_cpu,
        "cpu_risk": over_cpu / max(n, 1),
        "mem_saved": 1 - used_mem / prov_mem,
        "mem_risk": over_mem / max(n, 1),
        "vms": float(len(only)),
    }


def sidecar_recs(trace_dir: str, fit_until: float, risk: str) -> Recs:
    """The production command's CSV, exactly as an operator would run it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recs.csv"
        cmd = [
            sys.executable,
            "-m",
            "analytics_sidecar.main",
            "backtest",
            "rightsizing",
            trace_dir,
            "--fit-until",
            str(fit_until),
            "--out",
            str(out),
            "--risk",
            risk,
        ]
        subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parent.parent)
        with out.open() as fh:
            return {r["vm"]: (int(r["cpu_cores"]), float(r["memory_kb"])) for r in csv.DictReader(fh)}


def anchor_recs(vms: list[TraceVM], fit_until: float, fn: object) -> Recs:
    recs: Recs = {}
    for vm0 in vms:
        vm = running(vm0)
        per_core = vm.mhz_per_core_before(fit_until)
        if not np.isfinite(per_core) or not (vm.t < fit_until).any():
            continue
        c, m = fn(vm.cpu_cores_used(per_core), vm.memory_bytes_used(), fit_until)  # type: ignore[operator]
        if np.isfinite(c) and np.isfinite(m):
            recs[vm.vm] = (whole_vcpus(c), m / 1024)
    return recs


def sweep(vms: list[TraceVM], fit_until: float, only: set[str]) -> list[tuple[RiskLevel, dict[str, float]]]:
    out = []
    for (cp, cn), (mp, mn, mh) in zip(CPU_GRID, itertools.cycle(MEM_GRID), strict=False):
        level = RiskLevel("sweep", cp, 0.0, mp, mh, cpu_need=cn, memory_need=mn)
        out.append((level, _score_level(vms, fit_until, only, level)))
    for (mp, mn, mh), (cp, cn) in zip(MEM_GRID[len(CPU_GRID) :], itertools.cycle(CPU_GRID), strict=False):
        level = RiskLevel("sweep", cp, 0.0, mp, mh, cpu_need=cn, memory_need=mn)
        out.append((level, _score_level(vms, fit_until, only, level)))
    return out


def _score_level(vms: list[TraceVM], fit_until: float, only: set[str], level: RiskLevel) -> dict[str, float]:
    recs: Recs = {}
    for vm in vms:
        if vm.vm in only:
            rec = recommend_vm(vm, fit_until, level)
            assert rec is not None
            recs[vm.vm] = (rec[0], float(rec[1]))
    return score(vms, recs, fit_until, only)


def interpolated_at(points: list[tuple[float, float, str]], risk: float) -> float:
    """Saving of the Pareto frontier at `risk`, linear between its points; NaN below its lowest risk."""
    front = frontier(points)
    if not front or risk < front[0][1]:
        return float("nan")
    return float(np.interp(risk, [p[1] for p in front], [p[0] for p in front]))


def best_at(points: list[tuple[float, float, str]], risk: float) -> tuple[float, float, str] | None:
    """The point saving most among those whose risk is at most `risk`: (saved, risk, label)."""
    ok = [p for p in points if p[1] <= risk + 1e-12]
    return max(ok, key=lambda p: p[0]) if ok else None


def frontier(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Pareto points: no other point saves more at lower-or-equal risk."""
    out: list[tuple[float, float, str]] = []
    for p in sorted(points, key=lambda p: (p[1], -p[0])):
        if not out or p[0] > out[-1][0]:
            out.append(p)
    return out


def print_table(rows: list[tuple[str, dict[str, float]]]) -> None:
    print("| method | VMs | CPU saved | CPU risk | memory saved | memory risk |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in rows:
        print(
            f"| {name} | {int(r['vms'])} | {r['cpu_saved']:.1%} | {r['cpu_risk']:.3%} | "
            f"{r['mem_saved']:.1%} | {r['mem_risk']:.3%} |"
        )


def print_sweep(
    results: list[tuple[RiskLevel, dict[str, float]]],
    anchors: list[tuple[str, dict[str, float]]],
    shipped: list[tuple[str, dict[str, float]]],
) -> None:
    for res, key in (("CPU", "cpu"), ("memory", "mem")):
        points = []
        for level, r in results:
            label = (
                f"p{level.cpu_percentile:g} need {level.cpu_need:g}"
                if key == "cpu"
                else f"p{level.memory_percentile:g} need {level.memory_need:g} +{level.memory_headroom:.0%}"
            )
            points.append((r[f"{key}_saved"], r[f"{key}_risk"], label))
        points = sorted(set(points), key=lambda p: p[1])
        print(f"\n{res} frontier of the sweep (saved / risk):")
        for saved, risk, label in frontier(points):
            print(f"  {saved:6.1%} / {risk:6.3%}  {label}")
        print(
            f"\n| {res}: anchor | anchor saved / risk | frontier at its risk "
            "| best swept point at <= its risk | shipped levels saving more at <= its risk |"
        )
        print("| --- | --- | --- | --- | --- |")
        ship = [(r[f"{key}_saved"], r[f"{key}_risk"], name) for name, r in shipped]
        for name, r in anchors:
            a_saved, a_risk = r[f"{key}_saved"], r[f"{key}_risk"]
            b = best_at(points, a_risk)
            wins = [p for p in ship if p[1] <= a_risk and p[0] > a_saved]
            b_txt = f"{b[0]:.1%} / {b[1]:.3%} ({b[2]})" if b else "none"
            s_txt = ", ".join(f"{p[2]}: {p[0]:.1%} / {p[1]:.3%}" for p in wins) or "**none**"
            f_txt = f"{interpolated_at(points, a_risk):.1%}"
            print(f"| {name} | {a_saved:.1%} / {a_risk:.3%} | {f_txt} | {b_txt} | {s_txt} |")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("trace_dir", nargs="?", default="/work/shared/data/bitbrains/rnd")
    parser.add_argument("--fit-until", type=float, default=AUG_1_2013)
    parser.add_argument("--no-sweep", action="store_true", help="only the shipped levels and the anchors")
    parser.add_argument("--split", default="0/1", metavar="K/N", help="only VMs with crc32(id) %% N == K")
    args = parser.parse_args()
    k, n = (int(x) for x in args.split.split("/"))
    vms = list(read_trace(args.trace_dir))
    methods: list[tuple[str, Recs]] = []
    for risk in RISK_LEVELS:
        t0 = time.perf_counter()
        name = f"sidecar {risk}" + (" (default)" if risk == DEFAULT_RISK else "")
        methods.append((name, sidecar_recs(args.trace_dir, args.fit_until, risk)))
        print(f"# {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    anchors = [
        ("KRR simple", anchor_recs(vms, args.fit_until, krr_simple)),
        ("VPA p90+15%", anchor_recs(vms, args.fit_until, vpa)),
    ]
    provisioned: Recs = {}
    for vm in vms:
        before = vm.t < args.fit_until
        if before.any():
            provisioned[vm.vm] = (int(vm.cores[before][-1]), float(vm.mem_capacity_kb[before][-1]))
    # Every method is scored on the VMs that all of them recommend (the sidecar declines VMs with less
    # than a day of running history; an anchor would size them from nothing).
    only = set.intersection(*(set(r) for _, r in methods + anchors))
    only = {vm for vm in only if zlib.crc32(vm.encode()) % n == k}
    rows = [(name, score(vms, recs, args.fit_until, only)) for name, recs in methods]
    # Reference: keep what is provisioned (the trace's usage exceeds it sometimes, so its risk is not 0).
    rows.append(("provisioned (unchanged)", score(vms, provisioned, args.fit_until, only)))
    anchor_rows = [(name, score(vms, recs, args.fit_until, only)) for name, recs in anchors]
    print_table(rows + anchor_rows)
    if not args.no_sweep:
        t0 = time.perf_counter()
        results = sweep(vms, args.fit_until, only)
        print(f"# sweep of {len(results)} levels: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        print_sweep(results, anchor_rows, rows[: len(methods)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
