"""Benchmark: scrape time p50/p95 and exporter CPU per scrape, novacron-libvirt-exporter vs Debian's exporter.

Both exporters run as real processes on the same libvirt URIs in the same run, scraped alternately over HTTP:
test-driver fleets of 100, 500, 1,000 and 5,000 domains, then real QEMU guests under the system libvirtd.
CPU per scrape is the exporter process' user+system time (from /proc) over the timed scrapes, divided by their
number. "domains" is how many distinct domains each exporter's answer covers.

    .venv/bin/python bench/libvirt_scrape.py [--sizes 100,500,1000,5000] [--scrapes 15] [--guests 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack.fleet import write_fleet
from stack.processes import ManagedProcess, free_port

DEBIAN = "/usr/bin/prometheus-libvirt-exporter"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    exporter: str
    source: str
    domains: int
    p50: float
    p95: float
    cpu: float


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def exporter(kind: str, uri: str, workdir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    if kind == "novacron":
        argv = [
            sys.executable,
            "-m",
            "exporters.libvirt.main",
            f"--libvirt.uri={uri}",
            "--libvirt.timeout=60s",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
    else:
        argv = [DEBIAN, f"--libvirt.uri={uri}", f"--web.listen-address=127.0.0.1:{port}"]
    proc = ManagedProcess(
        kind,
        argv,
        workdir / f"{kind}-{port}.log",
        ready_url=f"http://127.0.0.1:{port}/",
        cwd=Path(__file__).resolve().parents[1],
    )
    with proc:
        assert proc.proc is not None
        yield f"http://127.0.0.1:{port}/metrics", proc.proc.pid


def count_domains(kind: str, text: str) -> int:
    if kind == "novacron":
        pattern = re.compile(r'^novacron_vm_state\{vm_id="([^"]+)"', re.M)
    else:
        pattern = re.compile(r'^libvirt_domain_state_code\{[^}]*domain="([^"]+)"', re.M)
    return len(set(pattern.findall(text)))


def measure(
    uri: str, source: str, scrapes: int, workdir: Path, debian_uri: str | None = None
) -> list[Result]:
    """Both exporters (Debian's on `debian_uri` if given), scraped alternately so noise hits both alike."""
    with exporter("novacron", uri, workdir) as ours, exporter("debian", debian_uri or uri, workdir) as theirs:
        runs = {"novacron": ours, "debian": theirs}
        times: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, float] = dict.fromkeys(runs, 0.0)
        bodies: dict[str, str] = {}
        for kind, (url, _pid) in runs.items():  # warm-up: connection, caches
            bodies[kind] = requests.get(url, timeout=300).text
        for _ in range(scrapes):
            for kind, (url, pid) in runs.items():
                before = cpu_seconds(pid)
                started = time.perf_counter()
                bodies[kind] = requests.get(url, timeout=300).text
                times[kind].append(time.perf_counter() - started)
                cpu[kind] += cpu_seconds(pid) - before
        return [
            Result(
                kind,
                source,
                count_domains(kind, bodies[kind]),
                statistics.median(times[kind]),
                percentile(times[kind], 0.95),
                cpu[kind] / scrapes,
            )
            for kind in runs
        ]


def qemu_guests(n: int) -> Iterator[int]:
    """Start `n` 64 MiB TCG guests (tests.harness.QemuGuest), yield how many run, remove them afterwards."""
    from tests.harness import QemuGuest, ensure_libvirtd

    ensure_libvirtd()
    with contextlib.ExitStack() as stack:
        started = 0
        for i in range(n):
            try:
                stack.enter_context(QemuGuest(f"nclvbench-{i:02d}"))
                started += 1
            except Exception as exc:  # the machine may not cope with n guests: report how many ran
                print(f"guest {i} did not start ({exc}); measuring with {started}", file=sys.stderr)
                break
        time.sleep(3)  # let the guests reach SeaBIOS so stats are steady
        yield started


def table(results: list[Result]) -> str:
    lines = [
        "| source | exporter | domains exported | p50 scrape (s) | p95 scrape (s) | CPU per scrape (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(f"| {r.source} | {r.exporter} | {r.domains} | {r.p50:.3f} | {r.p95:.3f} | {r.cpu:.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000,5000")
    parser.add_argument("--scrapes", type=int, default=15)
    parser.add_argument("--guests", type=int, default=20, help="real QEMU guests (0 to skip)")
    args = parser.parse_args()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="lvbench-") as tmp:
        workdir = Path(tmp)
        uris = {}
        for size in (int(s) for s in args.sizes.split(",") if s):
            uri = write_fleet(workdir / f"fleet-{size}" / "node.xml", size, seed=size, shutoff_every=10)
            uris[size] = uri
            scrapes = args.scrapes if size < 5000 else max(5, args.scrapes // 3)
            results += measure(uri, f"test driver, {size} domains", scrapes, workdir)
            print(table(results[-2:]), flush=True)
        goal = None
        if 1000 in uris and 500 in uris:
            # The goal compares two sizes; measure them side by side, not minutes apart.
            goal = measure(uris[1000], "goal: novacron 1000 / debian 500", args.scrapes, workdir, uris[500])
        if args.guests:
            for running in qemu_guests(args.guests):
                results += measure(
                    "qemu:///system", f"libvirtd, {running} QEMU guests", args.scrapes, workdir
                )
    print()
    print(table(results))
    ours = {r.source: r for r in results if r.exporter == "novacron"}
    theirs = {r.source: r for r in results if r.exporter == "debian"}
    print()
    for source, r in ours.items():
        t = theirs[source]
        print(
            f"{source}: p50 ratio novacron/debian = {r.p50 / t.p50:.2f}, domains {r.domains} vs {t.domains}"
        )
    if goal:
        k1, d500 = goal
        verdict = "met" if k1.p50 <= d500.p50 else "NOT met"
        print(table(goal))
        print(f"goal p50(novacron, 1000) <= p50(debian, 500), measured alternately: {k1.p50:.3f}s vs")
        print(f"{d500.p50:.3f}s (CPU {k1.cpu:.3f}s vs {d500.cpu:.3f}s per scrape): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
