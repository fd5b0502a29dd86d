"""Benchmark: ingest capacity of one Prometheus scraping the project's libvirt exporters, and of two shards.

Fleets on libvirt's test driver (H hosts x V VMs, one real novacron-libvirt-exporter process per host) are
scraped by a real Prometheus 2.42 every --interval. For growing V the run measures, over a steady window:
head series, samples appended per second, the slowest scrape (max_over_time(scrape_duration_seconds)) and
Prometheus' CPU. Capacity is the largest fleet whose slowest scrape stays under the interval with every
target up. The same largest fleet is then scraped by two hashmod shards (stack/scale.py) to show how the
per-Prometheus load splits. Everything shares this machine's cores, exporters included.

    .venv/bin/python bench/ingest_capacity.py [--hosts 4] [--sizes 100,250,500,1000] [--interval 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack.fleet import write_fleet
from stack.plan import console_script
from stack.processes import ManagedProcess, free_port
from stack.scale import hashmod, shard_config
from stack.servers import Prometheus, prometheus_config

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    label: str
    vms: int
    series: int
    samples_per_s: float
    max_scrape_s: float
    targets_up: int
    targets: int
    prom_cpu: float  # cores used by the Prometheus process(es) over the window


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@contextlib.contextmanager
def exporters(workdir: Path, hosts: int, vms: int) -> Iterator[list[str]]:
    procs, addrs = [], []
    try:
        for h in range(hosts):
            uri = write_fleet(workdir / f"fleet-{vms}-{h}" / "node.xml", vms, seed=h, host=f"kvm{h:02d}")
            port = free_port()
            addr = f"127.0.0.1:{port}"
            proc = ManagedProcess(
                f"libvirt-{h}",
                [
                    console_script("novacron-libvirt-exporter"),
                    f"--libvirt.uri={uri}",
                    f"--web.listen-address={addr}",
                ],
                workdir / f"libvirt-{vms}-{h}.log",
                ready_url=f"http://{addr}/-/healthy",
            )
            procs.append(proc.start(60))
            addrs.append(addr)
        yield addrs
    finally:
        for proc in procs:
            proc.stop()


def measure(label: str, proms: list[Prometheus], vms: int, interval: float, window: float) -> Run:
    """Let the scrapes settle for two intervals, then measure over `window` seconds."""
    time.sleep(2 * interval + 2)
    cpu0 = sum(cpu_seconds(p.proc.pid) for p in proms if p.proc)
    t0 = time.monotonic()
    time.sleep(window)
    cpu = (sum(cpu_seconds(p.proc.pid) for p in proms if p.proc) - cpu0) / (time.monotonic() - t0)
    rng = f"{int(window)}s"
    series = samples = worst = 0.0
    up = total = 0
    for p in proms:
        series += _scalar(p, 'sum(prometheus_tsdb_head_series{job="self"})')
        samples += _scalar(p, f'sum(rate(prometheus_tsdb_head_samples_appended_total{{job="self"}}[{rng}]))')
        worst = max(worst, _scalar(p, f'max(max_over_time(scrape_duration_seconds{{job="libvirt"}}[{rng}]))'))
        up += int(_scalar(p, 'sum(up{job="libvirt"})'))
        total += int(_scalar(p, 'count(up{job="libvirt"})'))
    return Run(label, vms, int(series), samples, worst, up, total, cpu)


def _scalar(prom: Prometheus, expr: str) -> float:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else 0.0


def single(workdir: Path, addrs: list[str], interval: int) -> Prometheus:
    port = free_port()
    jobs = [
        {"job_name": "libvirt", "scrape_timeout": f"{interval}s", "static_configs": [{"targets": addrs}]},
        {"job_name": "self", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
    ]
    config = prometheus_config(jobs, scrape_interval=f"{interval}s", evaluation_interval=f"{interval}s")
    return Prometheus(workdir / f"prom-{port}", config, port=port).start(60)


def sharded(workdir: Path, addrs: list[str], interval: int) -> list[Prometheus]:
    proms = []
    for i in range(2):
        port = free_port()
        config = shard_config({"libvirt": addrs}, i, 2, "http://127.0.0.1:9", scrape_interval=f"{interval}s")
        del config["remote_write"]  # the ingest of the shards alone (the global view is measured elsewhere)
        config["scrape_configs"][0]["scrape_timeout"] = f"{interval}s"
        config["scrape_configs"].append(
            {"job_name": "self", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
        )
        proms.append(Prometheus(workdir / f"shard-{i}-{port}", config, port=port).start(60))
    return proms


def print_table(runs: list[Run], interval: int) -> None:
    print(
        "\n| setup | VMs | head series | samples/s | slowest scrape (s) | targets up "
        f"| Prometheus CPU (cores) | fits {interval}s? |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        ok = "yes" if r.max_scrape_s < interval and r.targets_up == r.targets else "NO"
        print(
            f"| {r.label} | {r.vms} | {r.series} | {r.samples_per_s:.0f} | {r.max_scrape_s:.2f} | "
            f"{r.targets_up}/{r.targets} | {r.prom_cpu:.3f} | {ok} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--sizes", default="100,250,500,1000", help="VMs per host, growing")
    parser.add_argument("--interval", type=int, default=5, help="scrape interval, seconds")
    parser.add_argument("--window", type=float, default=15.0, help="measurement window, seconds")
    args = parser.parse_args()
    runs: list[Run] = []
    best: int | None = None
    with tempfile.TemporaryDirectory(prefix="ingest-") as tmp:
        workdir = Path(tmp)
        for vms in (int(s) for s in args.sizes.split(",")):
            total = vms * args.hosts
            with exporters(workdir, args.hosts, vms) as addrs, single(workdir, addrs, args.interval) as prom:
                run = measure(
                    f"1 Prometheus, {args.hosts} exporters", [prom], total, args.interval, args.window
                )
            runs.append(run)
            print(run, flush=True)
            if run.max_scrape_s >= args.interval or run.targets_up < run.targets:
                break
            best = vms
        if best is not None:
            with exporters(workdir, args.hosts, best) as addrs:
                split = sorted(hashmod(a, 2) for a in addrs)
                proms = sharded(workdir, addrs, args.interval)
                try:
                    run = measure(
                        f"2 shards (targets {split.count(0)}+{split.count(1)})",
                        proms,
                        best * args.hosts,
                        args.interval,
                        args.window,
                    )
                finally:
                    for p in proms:
                        p.stop()
            runs.append(run)
            print(run, flush=True)
    print_table(runs, args.interval)
    single_runs = [r for r in runs if r.label.startswith("1 ")]
    if single_runs:
        last_ok = [r for r in single_runs if r.max_scrape_s < args.interval and r.targets_up == r.targets]
        if last_ok:
            r = last_ok[-1]
            print(
                f"\ncapacity on this machine: >= {r.vms} VMs, {r.series} series, "
                f"{r.samples_per_s:.0f} samples/s per Prometheus at a {args.interval}s interval "
                f"(slowest scrape {r.max_scrape_s:.2f}s); "
                f"{r.series / max(r.vms, 1):.0f} series per VM"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
