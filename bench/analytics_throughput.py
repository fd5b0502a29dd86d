"""Throughput: VMs analysed per second, N VMs x D days of 5-minute data read from a real Prometheus.

History is written as OpenMetrics (CPU and memory utilisation of each VM from the Bitbrains shapes, VM i
replaying trace VM i mod 100 with a per-VM scale), loaded by `promtool tsdb create-blocks-from openmetrics`,
and served by a real Prometheus. One sidecar cycle (the production Engine) then runs cold (empty chunk
cache) and warm (the next cycle: only the newest chunk is fetched again).

    .venv/bin/python bench/analytics_throughput.py [--vms 1000] [--days 14]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]
from analytics_sidecar.config import load_config  # noqa: E402
from analytics_sidecar.engine import Engine  # noqa: E402
from analytics_sidecar.source import PromSource  # noqa: E402
from analytics_sidecar.trace import read_trace  # noqa: E402
from stack.servers import Prometheus, prometheus_config  # noqa: E402

STEP = 300


def write_history(path: Path, n_vms: int, days: int, end: float, trace_dir: str) -> int:
    """VM i replays trace VM i mod 100 (the value text is formatted once per trace VM and reused)."""
    traces = list(read_trace(trace_dir))
    ts = np.arange(end - days * 86400, end + 1, STEP, dtype=float)
    hourly = ts[:: 3600 // STEP]
    suffix: dict[tuple[int, str], list[str]] = {}
    for k, tr in enumerate(traces):
        # The trace's last `days` days, on this grid.
        idx = np.clip(np.searchsorted(tr.t, tr.t[-1] - (end - ts)), 0, tr.t.size - 1)
        cpu = np.clip(tr.cpu_mhz[idx] / np.maximum(tr.capacity_mhz[idx], 1), 0, 1)
        mem = np.clip(tr.mem_kb[idx] / np.maximum(tr.mem_capacity_kb[idx], 1), 0, 1)
        suffix[(k, "cpu")] = [f" {v:.5g} {int(t)}" for t, v in zip(ts, cpu, strict=True)]
        suffix[(k, "mem")] = [f" {v:.5g} {int(t)}" for t, v in zip(ts, mem, strict=True)]
        suffix[(k, "vcpus")] = [f" {max(1.0, tr.cores[-1]):g} {int(t)}" for t in hourly]
        suffix[(k, "membytes")] = [f" {max(1.0, tr.mem_capacity_kb[-1]) * 1024:g} {int(t)}" for t in hourly]
    suffix[(-1, "one")] = [f" 1 {int(t)}" for t in hourly]
    families = (
        ("novacron_vm_cpu_utilisation_ratio", "cpu"),
        ("novacron_vm_memory_utilisation_ratio", "mem"),
        ("novacron_vm_info", "one"),
        ("novacron_vm_vcpus", "vcpus"),
        ("novacron_vm_memory_bytes", "membytes"),
    )
    samples = 0
    with path.open("w") as fh:
        for name, kind in families:
            fh.write(f"# TYPE {name} gauge\n")
            for i in range(n_vms):
                vm = f"vm-{i:05d}"
                if kind == "one":
                    prefix = (
                        f'{name}{{vm_id="{vm}",provider="kvm",host="kvm-{i // 40:03d}",tenant="t{i % 17}"}}'
                    )
                    lines = suffix[(-1, kind)]
                else:
                    prefix = f'{name}{{vm_id="{vm}"}}'
                    lines = suffix[(i % len(traces), kind)]
                fh.write("\n".join(prefix + s for s in lines) + "\n")
                samples += len(lines)
        fh.write("# EOF\n")
    return samples


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--trace", default="/work/shared/data/bitbrains/rnd")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        end = math.floor(time.time() / STEP) * STEP
        t0 = time.perf_counter()
        samples = write_history(tmp / "h.om", args.vms, args.days, end, args.trace)
        t1 = time.perf_counter()
        data = tmp / "prom" / "data"
        data.mkdir(parents=True)
        subprocess.run(
            [
                "promtool",
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                "--max-block-duration=720h",
                str(tmp / "h.om"),
                str(data),
            ],
            check=True,
            capture_output=True,
        )
        (tmp / "h.om").unlink()
        t2 = time.perf_counter()
        print(f"history: {samples:,} samples written in {t1 - t0:.0f}s, promtool {t2 - t1:.0f}s")
        cfg = load_config(None)
        cfg = replace(cfg, analysis=replace(cfg.analysis, lookback=args.days * 86400.0))
        with Prometheus(
            tmp / "prom", prometheus_config([]), extra_args=["--query.lookback-delta=2h"]
        ) as prom:
            cfg = replace(cfg, prometheus=replace(cfg.prometheus, url=prom.url, timeout=300.0))
            source = PromSource(cfg.prometheus, cfg.analysis.step, cfg.analysis.chunk, time.time)
            engine = Engine(cfg, source)
            t = time.perf_counter()
            engine.read_vms(time.time())
            read = time.perf_counter() - t
            source._cache.clear()
            rows = []
            for label in ("cold cache", "warm cache"):
                t = time.perf_counter()
                res = engine.run()
                dt = time.perf_counter() - t
                rows.append((label, len(res.vms), dt))
        print(f"reading alone (cold): {read:.1f}s for {args.vms} VMs x {args.days} days")
        print("| cycle | VMs | seconds | VMs/s |")
        print("| --- | --- | --- | --- |")
        for label, n, dt in rows:
            print(f"| {label} | {n} | {dt:.1f} | {n / dt:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
