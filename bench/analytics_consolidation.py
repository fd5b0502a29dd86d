"""Consolidation: hosts needed for the trace's VMs, sidecar plan vs first-fit on provisioned sizes.

Both use the production packer (`analytics_sidecar.consolidation.pack`). The anchor places every VM at its
provisioned vCPUs and memory with plain first-fit in file order; the sidecar places the July right-sizing
recommendation (default risk) with first-fit decreasing. Identical hosts of 64 logical CPUs and 768 GiB
(a two-socket server; large enough for the trace's biggest VM), at CPU overcommit 1:1 and 4:1.
Replaying August-September, it also reports how often a host's summed real usage exceeded its capacity.

    .venv/bin/python bench/analytics_consolidation.py [TRACE_DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]
from analytics_sidecar.backtest import recommend_vm  # noqa: E402
from analytics_sidecar.consolidation import Bin, Item, Plan, pack  # noqa: E402
from analytics_sidecar.series import Series, regularise  # noqa: E402
from analytics_sidecar.trace import TraceVM, read_trace  # noqa: E402

AUG_1_2013 = 1375315200
OCT_1_2013 = 1380585600
HOST_CPUS = 64
HOST_MEM_KB = 768 * 1024 * 1024


def overload_share(vms: dict[str, TraceVM], plan: Plan, cpu_cap: float, start: float, end: float) -> float:
    """Share of (host, 5-minute interval) pairs whose summed CPU cores or memory exceed the host."""
    over = total = 0
    for host in plan.hosts_used:
        members = [vms[v] for v, h in plan.placement.items() if h == host]
        cpu = sum(
            np.nan_to_num(regularise(Series(m.t, m.cpu_mhz / m.mhz_per_core), 300, end, start))
            for m in members
        )
        mem = sum(np.nan_to_num(regularise(Series(m.t, m.mem_kb), 300, end, start)) for m in members)
        over += int(((cpu > cpu_cap) | (mem > HOST_MEM_KB)).sum())
        total += cpu.size
    return over / max(total, 1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("trace_dir", nargs="?", default="/work/shared/data/bitbrains/rnd")
    parser.add_argument("--fit-until", type=float, default=AUG_1_2013)
    args = parser.parse_args()
    vms = {vm.vm: vm for vm in read_trace(args.trace_dir)}
    provisioned, recommended = [], []
    for vm in vms.values():
        before = vm.t < args.fit_until
        if not before.any() or not np.isfinite(vm.mhz_per_core):
            continue
        provisioned.append(Item(vm.vm, float(vm.cores[before][-1]), float(vm.mem_capacity_kb[before][-1])))
        rec = recommend_vm(vm, args.fit_until, "balanced")
        if rec is not None:
            recommended.append(Item(vm.vm, float(rec[0]), float(rec[1])))
    print(
        f"VMs: {len(provisioned)} provisioned, {len(recommended)} with a recommendation; "
        f"hosts {HOST_CPUS} CPUs / {HOST_MEM_KB // 2**20} GiB"
    )
    print(
        "| CPU overcommit | first-fit, provisioned | sidecar FFD, recommended | hosts saved | "
        "overload share (first-fit) | overload share (sidecar) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for overcommit in (1.0, 4.0):
        hosts = [Bin(f"h{i:03d}", HOST_CPUS * overcommit, HOST_MEM_KB) for i in range(len(vms))]
        ff = pack(provisioned, hosts, sort=False)
        ours = pack(recommended, hosts)
        assert not ff.unplaced and not ours.unplaced, (ff.unplaced, ours.unplaced)
        cap = HOST_CPUS  # real usage is measured against the physical CPUs
        o_ff = overload_share(vms, ff, cap, args.fit_until, OCT_1_2013)
        o_us = overload_share(vms, ours, cap, args.fit_until, OCT_1_2013)
        saved = 1 - ours.hosts_needed / ff.hosts_needed
        print(
            f"| {overcommit:.0f}:1 | {ff.hosts_needed} | {ours.hosts_needed} | {saved:.0%} "
            f"| {o_ff:.3%} | {o_us:.3%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
