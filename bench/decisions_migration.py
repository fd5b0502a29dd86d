"""Migration planner vs greedy first-fit on the Bitbrains VMs replayed over months on simulated hosts.

The trace's VMs start on `--hosts` identical hosts (32 CPUs, 128 GiB by default), placed first-fit by their
provisioned vCPUs at 2:1 overcommit and memory 1:1 (as a scheduler would) or round-robin. Every hour of
the replay each strategy sees only the past (per VM: CPU cores = max of the p95 over the last 7 days and the
last sample; memory = the maximum over the last day) and may move VMs; the next hour's real 5-minute usage
is then summed per host:

- `static`: never moves (the reference for overloads);
- `greedy first-fit` (baseline): re-packs every VM from scratch each hour, VMs in id order, each on the first
  host where it fits under the same headroom (75 % CPU, 85 % memory), like a scheduler that re-places all;
- `planner`: `analytics_sidecar.decisions.migration.plan` with its defaults (relieve hot hosts, else drain
  one lightly used host; at most 10 moves an hour; anti-affinity and headroom respected).

Reported: moves and GiB copied, mean hosts in use (hosts freed = hosts - that), and overloaded host-hours
(5-minute samples where a host's summed usage exceeds its CPUs or memory, / 12), and overloads avoided
(static's minus the strategy's).

    .venv/bin/python bench/decisions_migration.py [TRACE_DIR] [--hosts 20] [--days 92]
        [--initial first-fit|round-robin] [--overcommit 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]
from analytics_sidecar.decisions import migration  # noqa: E402
from analytics_sidecar.series import Series, regularise  # noqa: E402
from analytics_sidecar.trace import read_trace  # noqa: E402

STEP = 300
HOUR = 12  # samples
JUL_1_2013 = 1372636800
GIB = float(1 << 30)


def grid(
    trace_dir: str, start: float, end: float
) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, tuple[float, float]]]:
    """VM ids, CPU cores and memory bytes used on the 5-minute grid (VM x sample; gaps are 0), and each
    VM's provisioned (vCPUs, memory bytes) at the start."""
    ids, cpu, mem, size = [], [], [], {}
    for vm in read_trace(trace_dir):
        if not np.isfinite(vm.mhz_per_core):
            continue
        ids.append(vm.vm)
        first = int(np.searchsorted(vm.t, start))
        first = min(first, len(vm.t) - 1)
        size[vm.vm] = (float(vm.cores[first]), float(vm.mem_capacity_kb[first]) * 1024.0)
        cpu.append(np.nan_to_num(regularise(Series(vm.t, vm.cpu_mhz / vm.mhz_per_core), STEP, end, start)))
        mem.append(np.nan_to_num(regularise(Series(vm.t, vm.mem_kb * 1024.0), STEP, end, start)))
    return ids, np.array(cpu), np.array(mem), size


def greedy_first_fit(
    ids: list[str],
    demand: dict[str, tuple[float, float]],
    hosts: list[migration.Host],
    p: migration.MigrationPolicy,
) -> dict[str, str]:
    used = {h.name: [0.0, 0.0] for h in hosts}
    out = {}
    for vm in ids:
        c, m = demand[vm]
        for h in hosts:
            u = used[h.name]
            if (u[0] + c) / h.cpus <= p.target_cpu_max and (u[1] + m) / h.memory_bytes <= p.target_memory_max:
                u[0] += c
                u[1] += m
                out[vm] = h.name
                break
        else:  # fits nowhere under the headroom: the least loaded host
            h = min(hosts, key=lambda x: used[x.name][0] / x.cpus)
            used[h.name][0] += c
            used[h.name][1] += m
            out[vm] = h.name
    return out


def overloaded(
    place: dict[str, str], ids: list[str], cpu: np.ndarray, mem: np.ndarray, hosts: list[migration.Host]
) -> int:
    """5-minute samples (summed over hosts) where a host's usage exceeds its CPUs or memory."""
    index = {h.name: i for i, h in enumerate(hosts)}
    rows = np.array([index[place[v]] for v in ids])
    c = np.zeros((len(hosts), cpu.shape[1]))
    m = np.zeros_like(c)
    np.add.at(c, rows, cpu)
    np.add.at(m, rows, mem)
    caps_c = np.array([h.cpus for h in hosts])[:, None]
    caps_m = np.array([h.memory_bytes for h in hosts])[:, None]
    return int(((c > caps_c) | (m > caps_m)).sum())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("trace_dir", nargs="?", default="/work/shared/data/bitbrains/rnd")
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--host-cpus", type=float, default=32)
    ap.add_argument("--host-memory-gib", type=float, default=128)
    ap.add_argument("--days", type=float, default=92)
    ap.add_argument(
        "--initial",
        choices=("first-fit", "round-robin"),
        default="first-fit",
        help="first-fit: provisioned vCPUs at --overcommit:1 and memory 1:1, as a scheduler placed them",
    )
    ap.add_argument("--overcommit", type=float, default=2.0)
    args = ap.parse_args()
    start, warm = float(JUL_1_2013), 7 * 86400
    end = start + args.days * 86400
    ids, cpu, mem, size = grid(args.trace_dir, start, end)
    hosts = [
        migration.Host(f"h{i:02d}", args.host_cpus, args.host_memory_gib * GIB) for i in range(args.hosts)
    ]
    p = migration.MigrationPolicy()
    if args.initial == "round-robin":
        initial = {vm: hosts[i % len(hosts)].name for i, vm in enumerate(ids)}
    else:
        packed = migration.MigrationPolicy(target_cpu_max=args.overcommit, target_memory_max=1.0)
        initial = greedy_first_fit(ids, size, hosts, packed)
    names = ("static", "greedy first-fit", "planner")
    place = {n: dict(initial) for n in names}
    moves = dict.fromkeys(names, 0)
    gib = dict.fromkeys(names, 0.0)
    over = dict.fromkeys(names, 0)
    in_use = dict.fromkeys(names, 0.0)
    seconds = dict.fromkeys(names, 0.0)
    hours = 0
    n = cpu.shape[1]
    for t in range(warm // STEP, n - HOUR + 1, HOUR):
        week = cpu[:, max(0, t - 7 * 288) : t]
        c_need = np.maximum(np.percentile(week, 95, axis=1), cpu[:, t - 1])
        m_need = mem[:, max(0, t - 288) : t].max(axis=1)
        demand = {vm: (float(c_need[i]), float(m_need[i])) for i, vm in enumerate(ids)}
        for name in names:
            t0 = time.perf_counter()
            old = place[name]
            if name == "greedy first-fit":
                new = greedy_first_fit(ids, demand, hosts, p)
            elif name == "planner":
                vms = [migration.Vm(vm, old[vm], *demand[vm]) for vm in ids]
                plan = migration.plan(hosts, vms, p)
                new = dict(old)
                for mv in plan.moves:
                    new[mv.vm_id] = mv.target
            else:
                new = old
            seconds[name] += time.perf_counter() - t0
            changed = [vm for vm in ids if new[vm] != old[vm]]
            moves[name] += len(changed)
            gib[name] += sum(demand[vm][1] for vm in changed) / GIB
            place[name] = new
            over[name] += overloaded(new, ids, cpu[:, t : t + HOUR], mem[:, t : t + HOUR], hosts)
            in_use[name] += len(set(new.values()))
        hours += 1
    print(
        f"{len(ids)} Bitbrains VMs, {args.hosts} hosts of {args.host_cpus:.0f} CPUs / "
        f"{args.host_memory_gib:.0f} GiB, initial placement {args.initial}, "
        f"{hours} hourly decisions ({hours / 24:.0f} days after a 7-day warm-up)"
    )
    print(
        "| strategy | moves | GiB copied | mean hosts in use | hosts freed | overloaded host-hours "
        "| overloads avoided vs static | decision time (total) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        mean_used = in_use[name] / hours
        print(
            f"| {name} | {moves[name]} | {gib[name]:.0f} | {mean_used:.1f} | {args.hosts - mean_used:.1f} "
            f"| {over[name] / HOUR:.1f} | {(over['static'] - over[name]) / HOUR:.1f} "
            f"| {seconds[name]:.1f} s |"
        )
    g, pl = "greedy first-fit", "planner"
    if moves[pl]:
        print(f"\nmoves: planner / greedy = {moves[pl] / max(moves[g], 1):.3f}; ", end="")
    print(f"overloaded host-hours: planner {over[pl] / HOUR:.1f} vs greedy {over[g] / HOUR:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
