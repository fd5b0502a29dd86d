"""Cost of evaluating the shipped rules: per-group evaluation time in a real Prometheus over a large fleet.

The real libvirt exporter serves a libvirt test-driver fleet (N domains per host, several hosts), Prometheus
2.42 scrapes it every 5 s and evaluates every shipped rule file; after a warm-up, the rules API gives each
group's last evaluation time, which is compared with its interval.

    .venv/bin/python bench/rules_eval_cost.py --vms 2000 --hosts 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stack.plan import console_script  # noqa: E402
from stack.processes import ManagedProcess, free_port  # noqa: E402
from stack.rules_cmd import default_rule_files  # noqa: E402
from stack.servers import Prometheus, prometheus_config  # noqa: E402
from tests.harness import test_driver_hosts  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=2000, help="domains per host")
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of scraping before measuring")
    args = parser.parse_args(argv)
    work = Path(f"/tmp/novacron-rules-cost-{int(time.time())}")
    work.mkdir(parents=True)
    procs: list[ManagedProcess] = []
    try:
        targets = []
        for i, uri in enumerate(test_driver_hosts(work, args.vms, args.hosts, seed=3, shutoff_every=10)):
            port = free_port()
            exporter = ManagedProcess(
                f"exporter-{i}",
                [
                    console_script("novacron-libvirt-exporter"),
                    f"--libvirt.uri={uri}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                work / f"exporter-{i}.log",
                ready_url=f"http://127.0.0.1:{port}/metrics",
            )
            procs.append(exporter.start(ready_timeout=120))
            targets.append(f"127.0.0.1:{port}")
        scrape = [{"job_name": "libvirt", "static_configs": [{"targets": targets}], "scrape_timeout": "5s"}]
        prom = Prometheus(
            work / "prometheus", prometheus_config(scrape, default_rule_files(), (), "5s", "5s")
        )
        procs.append(prom.start())
        time.sleep(args.warmup)
        series = int(prom.api("status/tsdb")["headStats"]["numSeries"])
        groups = prom.api("rules")["groups"]
        print(f"{args.hosts} hosts x {args.vms} VMs, {series} series in the head, {len(groups)} rule groups")
        print(f"{'group':<44}{'interval':>9}{'eval s':>9}{'share':>8}")
        total = 0.0
        for g in sorted(groups, key=lambda g: -g["evaluationTime"]):
            total += g["evaluationTime"]
            share = g["evaluationTime"] / g["interval"] * 100
            print(f"{g['name']:<44}{g['interval']:>8.0f}s{g['evaluationTime']:>9.3f}{share:>7.1f}%")
        busy = sum(g["evaluationTime"] / g["interval"] for g in groups)
        slow = [g["name"] for g in groups if g["evaluationTime"] > g["interval"]]
        print(
            f"sum of evaluation times {total:.3f} s; rule evaluation keeps {busy * 100:.1f}% of a core busy"
        )
        print(
            f"median group {statistics.median(g['evaluationTime'] for g in groups):.4f} s; "
            f"slower than their interval: {slow}"
        )
    finally:
        for proc in reversed(procs):
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
