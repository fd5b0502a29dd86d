"""Right-sizing backtest: fit on July, replay August-September; sidecar vs KRR simple vs VPA recipe.

Runs the production command `novacron-analytics backtest rightsizing` for each risk level, then scores
every method on the same VMs: capacity saved against what is provisioned (CPU in vCPUs, memory in KiB)
and the share of 5-minute samples after the cut-off whose usage is above the recommendation.
All methods recommend whole vCPUs (at least one): a VM cannot get 0.3 of a vCPU.

    .venv/bin/python bench/analytics_rightsizing.py [TRACE_DIR] [--fit-until TS]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from analytics_anchors import krr_simple, vpa, whole_vcpus  # noqa: E402

from analytics_sidecar.rightsizing import RISK_LEVELS  # noqa: E402
from analytics_sidecar.trace import TraceVM, read_trace  # noqa: E402

AUG_1_2013 = 1375315200


def score(vms: list[TraceVM], recs: dict[str, tuple[int, float]], fit_until: float) -> dict[str, float]:
    prov_cpu = used_cpu = prov_mem = used_mem = 0.0
    over_cpu = over_mem = n = 0
    for vm in vms:
        if vm.vm not in recs:
            continue
        cores, mem_kb = recs[vm.vm]
        after = vm.t >= fit_until
        per_core = vm.mhz_per_core
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
        "vms": float(len(recs)),
    }


def sidecar_recs(trace_dir: str, fit_until: float, risk: str) -> dict[str, tuple[int, float]]:
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("trace_dir", nargs="?", default="/work/shared/data/bitbrains/rnd")
    parser.add_argument("--fit-until", type=float, default=AUG_1_2013)
    args = parser.parse_args()
    vms = list(read_trace(args.trace_dir))
    rows: list[tuple[str, dict[str, float]]] = []
    for risk in RISK_LEVELS:
        t0 = time.perf_counter()
        recs = sidecar_recs(args.trace_dir, args.fit_until, risk)
        rows.append((f"sidecar {risk}", score(vms, recs, args.fit_until)))
        print(f"# sidecar {risk}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    provisioned = {}
    for vm in vms:
        before = vm.t < args.fit_until
        if before.any():
            provisioned[vm.vm] = (int(vm.cores[before][-1]), float(vm.mem_capacity_kb[before][-1]))
    # Reference: keep what is provisioned (the trace's usage exceeds it sometimes, so its risk is not 0).
    rows.append(("provisioned (unchanged)", score(vms, provisioned, args.fit_until)))
    for name, fn in (("KRR simple", krr_simple), ("VPA p90+15%", vpa)):
        recs = {}
        for vm in vms:
            used = vm.cpu_cores_used(vm.mhz_per_core_before(args.fit_until))
            c, m = fn(used, vm.memory_bytes_used(), args.fit_until)
            if np.isfinite(c) and np.isfinite(m):
                recs[vm.vm] = (whole_vcpus(c), m / 1024)
        rows.append((name, score(vms, recs, args.fit_until)))
    print("| method | VMs | CPU saved | CPU risk | memory saved | memory risk |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in rows:
        print(
            f"| {name} | {int(r['vms'])} | {r['cpu_saved']:.1%} | {r['cpu_risk']:.2%} | "
            f"{r['mem_saved']:.1%} | {r['mem_risk']:.2%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
