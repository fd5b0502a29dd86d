"""Benchmark: total query time of each dashboard's default view at 1,000 VMs with backfilled history.

Real Prometheus 2.42 (15 s scrape and rule evaluation, every rule file of rules/), real libvirt exporters on a
test-driver fleet, Alertmanager, and an exposition server for what is not worth running live at this size
(two cloud VMs, the sidecar's write-back for every VM, the bridge; the query test runs those live).
History is backfilled with `promtool tsdb create-blocks-from openmetrics` from the exact series the live stack
exposes (same labels, job and instance), at a 5-minute resolution, for the series the
dashboards read: identity/state/size metrics and the recording-rule outputs for `--days` days, the sidecar's
write-back for `--sidecar-hours` hours. Each dashboard's queries are then run one after another, as a browser
tab would on first load, with the default time range and the variables at All (host/VM: the first one).

    .venv/bin/python bench/dashboards_query_time.py --vms 1000 --days 7
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Response

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboards.catalog import build_all
from dashboards.evaluate import Prometheus as PromClient
from dashboards.evaluate import run_dashboard
from stack.processes import ManagedProcess, free_port
from stack.servers import Alertmanager, Prometheus, prometheus_config
from tests.harness import test_driver_hosts

REPO = Path(__file__).resolve().parent.parent
EXPORTER = str(Path(sys.executable).parent / "novacron-libvirt-exporter")
TARGET_SECONDS = 1.0
KVM_HOST = "kvm00"
# At 1,000 VMs the parts beyond the libvirt exporters come from one exposition server with the names and
# labels their code exposes (the sidecar's write-back for every VM, two cloud VMs, the bridge): the query
# cost depends on the series, not on who computed them (tests/test_dashboards_queries.py runs them live).
CLOUD_VMS = [  # provider, vm_id, name, region, tenant
    (
        "azure",
        "/subscriptions/s1/resourcegroups/rg/providers/microsoft.compute/virtualmachines/az1",
        "web-az-1",
        "westeurope",
        "globex",
    ),
    ("gcp", "4412345678901234567", "web-gcp-1", "europe-west1", "acme"),
]


def _line(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value}"


def static_exposition(kvm_vms: list[str], t: float, real_cloud_vms: tuple[str, ...] = ()) -> str:
    """Cloud VMs, cloud exporter self-metrics, sidecar write-back and bridge metrics; counters grow with t."""
    lines = []
    for provider, vm_id, name, region, tenant in CLOUD_VMS:
        info = {
            "account": "123456789012",
            "flavor": "std",
            "host": "",
            "instance_type": "std",
            "project": tenant,
            "provider": provider,
            "region": region,
            "tenant": tenant,
            "vm_id": vm_id,
            "vm_name": name,
            "zone": f"{region}-a",
        }
        lines += [
            _line("novacron_vm_info", info, 1),
            _line("novacron_vm_state", {"vm_id": vm_id}, 1),
            _line("novacron_vm_vcpus", {"vm_id": vm_id}, 2),
            _line("novacron_vm_memory_bytes", {"vm_id": vm_id}, 4 << 30),
            _line("novacron_vm_cpu_utilisation_ratio", {"vm_id": vm_id}, 0.95),
            _line("novacron_vm_memory_utilisation_ratio", {"vm_id": vm_id}, 0.6),
        ]
        for metric in (
            "network_receive_bytes",
            "network_transmit_bytes",
            "disk_read_bytes",
            "disk_write_bytes",
            "disk_read_ops",
            "disk_write_ops",
        ):
            lines.append(_line(f"novacron_vm_{metric}_per_second", {"vm_id": vm_id}, 1000.0))
        target = {"provider": provider, "account": "123456789012", "region": region}
        lines += [
            _line("novacron_cloud_up", target, 1),
            _line("novacron_cloud_refresh_duration_seconds", target, 0.8),
            _line("novacron_cloud_api_cost_dollars_total", target, t / 1e4),
            _line(
                "novacron_cloud_data_age_seconds",
                {**target, "metric": "novacron_vm_cpu_utilisation_ratio"},
                300,
            ),
        ]
        for metric in ("calls", "errors", "throttled"):
            lines.append(
                _line(f"novacron_cloud_api_{metric}_total", {**target, "operation": "GetMetricData"}, t)
            )
    all_vms = kvm_vms + list(real_cloud_vms) + [vm[1] for vm in CLOUD_VMS]
    for index, vm_id in enumerate(all_vms):
        vm = {"vm_id": vm_id}
        cls = ("idle", "steady", "diurnal")[index % 3]
        lines += [
            _line("novacron_vm_cost_per_month", {**vm, "currency": "USD"}, 30.0 + index),
            _line("novacron_vm_potential_savings_per_month", {**vm, "currency": "USD"}, 5.0),
            _line("novacron_vm_recommended_vcpus", {**vm, "risk": "balanced"}, 1),
            _line("novacron_vm_idle", vm, 1 if cls == "idle" else 0),
            _line("novacron_vm_workload_class", {**vm, "class": cls}, 1),
            _line("novacron_vm_efficiency_ratio", vm, 0.4),
            _line("novacron_anomaly_score", {**vm, "resource": "cpu"}, 0.9 if index == 0 else 0.05),
            _line("novacron_baseline_upper", {**vm, "resource": "cpu"}, 0.5),
            _line("novacron_baseline_lower", {**vm, "resource": "cpu"}, 0.0),
        ]
        for bound, value in (("lower", 0.5), ("point", 1.0), ("upper", 1.5)):
            lines.append(
                _line("novacron_vm_cpu_forecast_cores", {**vm, "horizon": "1d", "bound": bound}, value)
            )
    lines += [
        _line("novacron_consolidation_hosts", {"scenario": "current"}, 3),
        _line("novacron_consolidation_hosts", {"scenario": "needed"}, 2),
        _line(
            "novacron_host_time_to_exhaustion_seconds", {"host": KVM_HOST, "resource": "memory_bytes"}, 1e6
        ),
        _line("novacron_storage_pool_time_to_exhaustion_seconds", {"host": KVM_HOST, "pool": "default"}, 2e6),
        _line("novacron_bridge_alerts", {"state": "firing"}, 2),
        _line("novacron_bridge_alerts", {"state": "acknowledged"}, 1),
        _line("novacron_bridge_outbox_depth", {}, 0),
        _line("novacron_bridge_dead_letters", {}, 1),
    ]
    for result in ("delivered", "dead"):
        lines.append(_line("novacron_bridge_notifications_total", {"channel": "email", "result": result}, t))
    for le in ("0.5", "5.0", "30.0", "+Inf"):
        lines.append(
            _line("novacron_bridge_delivery_latency_seconds_bucket", {"channel": "email", "le": le}, t)
        )
    lines += [
        _line("novacron_bridge_delivery_latency_seconds_count", {"channel": "email"}, t),
        _line("novacron_bridge_delivery_latency_seconds_sum", {"channel": "email"}, t / 10),
    ]
    return "\n".join(lines) + "\n"


BLOCK = 7200  # promtool reads its whole input once per 2 h block: one file per block keeps that linear
EXPORTER_HISTORY = ("novacron_vm_info", "novacron_vm_state", "novacron_vm_vcpus", "novacron_vm_memory_bytes")
SIDECAR_HISTORY = re.compile(
    r"^(novacron_vm_(cost_per_month|potential_savings_per_month|recommended_vcpus|idle|workload_class|"
    r"efficiency_ratio|cpu_forecast_cores)|novacron_anomaly_score|novacron_baseline_(upper|lower))\{"
)
RULE_SERIES = {  # recording rule -> (mean, daily amplitude) of the synthetic history
    "vm:novacron_vm_cpu_utilisation:ratio": (0.3, 0.2),
    "vm:novacron_vm_network_receive_bytes:rate1m": (2e5, 1.5e5),
    "vm:novacron_vm_network_transmit_bytes:rate1m": (1e5, 8e4),
    "vm:novacron_vm_disk_read_bytes:rate1m": (5e5, 3e5),
    "vm:novacron_vm_disk_write_bytes:rate1m": (3e5, 2e5),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
Series = tuple[str, Callable[[float], "float | None"], float]  # key, value at t (None: absent), first time


def series_key(name: str, labels: dict[str, str]) -> str:
    """Prometheus drops empty labels on ingestion; so must the backfill, or it makes distinct series."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if v != "")
    return f"{name}{{{inner}}}"


def parse(line: str) -> tuple[str, dict[str, str], float]:
    head, _, value = line.rpartition(" ")
    name, _, rest = head.partition("{")
    return name, dict(LABEL_RE.findall(rest)), float(value)


def const(value: float) -> Callable[[float], float | None]:
    return lambda _t: value


def wave(mean: float, amp: float, phase: float) -> Callable[[float], float | None]:
    """A daily cycle, the shape of most VM load."""
    return lambda t: max(0.0, mean + amp * math.sin(2 * math.pi * t / 86400 + phase))


def cpu_of(phase: float) -> Callable[[float], float | None]:
    return wave(*RULE_SERIES["vm:novacron_vm_cpu_utilisation:ratio"], phase)


def fmt(value: float) -> str:
    """count_values' label text (Go's FormatFloat 'f', -1)."""
    return str(int(value)) if value == int(value) else repr(value)


def history_series(
    exporter_texts: dict[str, str],
    static_text: str,
    static_instance: str,
    end: float,
    days: float,
    sidecar_hours: float,
    step: float,
) -> list[Series]:
    """Everything the dashboards read over their ranges, with the labels the live stack gives it."""
    long_start, short_start = end - days * 86400, end - sidecar_hours * 3600
    rng = random.Random(7)
    out: list[Series] = []
    meta: dict[str, tuple[str, ...]] = {}
    state: dict[str, float] = {}
    sources = [(text, "novacron-libvirt", inst) for inst, text in exporter_texts.items()]
    sources.append((static_text, "novacron-static", static_instance))
    sidecar: list[tuple[str, dict[str, str], float]] = []
    for text, job, instance in sources:
        for line in text.splitlines():
            if not line.startswith("novacron_"):
                continue
            name, labels, value = parse(line)
            target = {**labels, "job": job, "instance": instance}
            if name == "novacron_vm_info":
                meta[labels["vm_id"]] = tuple(
                    labels.get(k, "") for k in ("provider", "region", "host", "tenant")
                )
            if name == "novacron_vm_state":
                state[labels["vm_id"]] = value
            if name in EXPORTER_HISTORY:
                out.append((series_key(name, target), const(value), long_start))
            elif job == "novacron-static" and (
                SIDECAR_HISTORY.match(line) or name.startswith("novacron_vm_")
            ):
                out.append((series_key(name, target), const(value), short_start))
                sidecar.append((name, labels, value))
    cpu = {vm: cpu_of(rng.random() * 2 * math.pi) for vm in sorted(meta) if meta[vm][0] == "kvm"}
    for rule, (mean, amp) in RULE_SERIES.items():
        for vm in sorted(cpu):
            phase = rng.random() * 2 * math.pi
            fn = cpu[vm] if rule.startswith("vm:novacron_vm_cpu") else wave(mean, amp, phase)
            out.append((series_key(rule, {"vm_id": vm}), fn, long_start))
    out += dashboard_rule_series(meta, state, cpu, sidecar, long_start, short_start, end, step)
    return out


def dashboard_rule_series(meta, state, cpu, sidecar, long_start, short_start, end, step):  # type: ignore[no-untyped-def]
    """The outputs of rules/dashboards.rules.yml, computed the way Prometheus would."""
    groups = ("provider", "region", "host", "tenant")
    out: list[Series] = []

    def key(name: str, group: tuple[str, ...], **extra: str) -> str:
        return series_key(name, {**dict(zip(groups, group, strict=True)), **extra})

    counts: dict[tuple[str, ...], int] = {}
    by_state: dict[tuple[tuple[str, ...], str], int] = {}
    for vm, group in meta.items():
        counts[group] = counts.get(group, 0) + 1
        if vm in state:
            by_state[(group, fmt(state[vm]))] = by_state.get((group, fmt(state[vm])), 0) + 1
    out += [
        (key("provider_region_host_tenant:novacron_vms:count", g), const(n), long_start)
        for g, n in counts.items()
    ]
    out += [
        (key("provider_region_host_tenant_state:novacron_vms:count", g, state=s), const(n), long_start)
        for (g, s), n in by_state.items()
    ]
    stamps = _range(long_start, end, step)
    buckets: dict[tuple[tuple[str, ...], str], dict[float, int]] = {}
    for t in stamps:
        for vm, fn in cpu.items():
            le = fmt(math.ceil((fn(t) or 0.0) * 20) / 20)
            cell = buckets.setdefault((meta[vm], le), {})
            cell[t] = cell.get(t, 0) + 1
    for (g, le), by_t in buckets.items():
        out.append(
            (
                key("provider_region_host_tenant_le:novacron_vm_cpu_utilisation:count", g, le=le),
                by_t.get,
                long_start,
            )
        )
    sums: dict[str, float] = {}
    for name, labels, value in sidecar:
        group = meta.get(labels.get("vm_id", ""))
        if group is None:
            continue
        if name == "novacron_vm_cost_per_month":
            k = key("provider_region_host_tenant:novacron_vm_cost_per_month:sum", group)
        elif name == "novacron_vm_cpu_forecast_cores" and labels.get("horizon") == "1d":
            k = key(
                "provider_region_host_tenant_bound:novacron_vm_cpu_forecast_cores:sum1d",
                group,
                bound=labels["bound"],
            )
        elif name == "novacron_vm_workload_class" and value == 1:
            k, value = (
                key(
                    "provider_region_host_tenant_class:novacron_vm_workload_class:count",
                    group,
                    **{"class": labels["class"]},
                ),
                1.0,
            )
        else:
            continue
        sums[k] = sums.get(k, 0.0) + value
    out += [(k, const(v), short_start) for k, v in sums.items()]
    return out


def write_blocks(out: Path, series: list[Series], end: float, step: float) -> tuple[int, list[Path]]:
    """One OpenMetrics file per 2 h block (series contiguous, samples in time order); returns samples."""
    start = min(first for _, _, first in series)
    written = 0
    block_start = math.floor(start / BLOCK) * BLOCK
    files = []
    while block_start < end:
        stamps = _range(max(start, block_start), min(end, block_start + BLOCK), step)
        path = out / f"history-{int(block_start)}.om"
        with path.open("w") as fh:
            for key, fn, first in series:
                lines = []
                for t in stamps:
                    if t >= first:
                        value = fn(t)
                        if value is not None:
                            lines.append(f"{key} {value:.6g} {t:.0f}\n")
                written += len(lines)
                fh.write("".join(lines))
            fh.write("# EOF\n")
        files.append(path)
        block_start += BLOCK
    return written, files


def _range(a: float, b: float, step: float) -> list[float]:
    first = math.ceil(a / step) * step
    return [first + i * step for i in range(int((b - first) // step) + 1) if first + i * step < b]


def promtool(files: list[Path], data_dir: Path) -> None:
    def one(path: Path) -> None:
        subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(path), str(data_dir)],
            check=True,
            capture_output=True,
        )
        path.unlink()

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, files))


def wait_compaction_settled(prom: Prometheus, quiet: float = 20.0, timeout: float = 300.0) -> None:
    """Prometheus compacts the backfilled 2 h blocks in the background; measure only once it is done."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        sample = prom.query("prometheus_tsdb_blocks_loaded + on() prometheus_tsdb_compactions_total")
        value = sample[0]["value"][1] if sample else None
        if value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since > quiet:
            return
        time.sleep(2)


def measure(prom_url: str, repeat: int, host: str, vm: str) -> list[dict[str, Any]]:
    client = PromClient(prom_url, timeout=120)
    rows = []
    for item in build_all():
        totals, slowest, empty = [], (0.0, ""), 0
        # Host and VM detail open on one host / one VM; every other view keeps its variables at All.
        overrides = {"host": host} if "host-detail" in item.model["uid"] else {}
        overrides.update({"vm": vm} if "vm-detail" in item.model["uid"] else {})
        for _ in range(repeat):
            results = run_dashboard(client, item.model, overrides, scrape_interval=15.0)
            totals.append(sum(r.seconds for r in results))
            top = max(results, key=lambda r: r.seconds)
            slowest = max(slowest, (top.seconds, f"{top.panel} [{top.ref_id}]"))
            empty = sum(1 for r in results if not r.has_data)
        for r in results:
            if not r.has_data:  # say which, so an empty (cheap) query is never mistaken for a fast one
                log(f"{item.model['uid']}: {r.panel} [{r.ref_id}] {r.error or 'no data'}")
        rows.append(
            {
                "uid": item.model["uid"],
                "range": item.model["time"]["from"],
                "queries": len(results),
                "median": statistics.median(totals),
                "min": min(totals),
                "max": max(totals),
                "slowest": slowest,
                "empty": empty,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--sidecar-hours", type=float, default=24.0)
    parser.add_argument("--history-step", type=float, default=300.0, help="backfill resolution (s)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dash-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    uris = test_driver_hosts(work, args.vms // args.hosts, args.hosts, seed=11, shutoff_every=10)
    procs: list[ManagedProcess] = []
    static = HTTPServer(host="127.0.0.1", port=free_port())
    try:
        texts = {}
        for index, uri in enumerate(uris):
            port = free_port()
            proc = ManagedProcess(
                f"libvirt-exporter-{index}",
                [
                    EXPORTER,
                    "--libvirt.uri",
                    uri,
                    "--libvirt.hostname",
                    f"kvm{index:02d}",
                    "--web.listen-address",
                    f"127.0.0.1:{port}",
                ],
                work / f"exporter-{index}.log",
                ready_url=f"http://127.0.0.1:{port}/metrics",
            ).start(ready_timeout=120)
            procs.append(proc)
            texts[f"127.0.0.1:{port}"] = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=120).text
        kvm_vms = sorted(
            {
                line.split('vm_id="')[1].split('"')[0]
                for text in texts.values()
                for line in text.splitlines()
                if line.startswith("novacron_vm_info{")
            }
        )
        t0 = time.time()
        static.expect_request("/metrics").respond_with_handler(
            lambda _r: Response(static_exposition(kvm_vms, time.time() - t0), content_type="text/plain")
        )
        static.start()
        static_instance = f"127.0.0.1:{static.port}"
        end = time.time()
        series = history_series(
            texts,
            static_exposition(kvm_vms, 0.0),
            static_instance,
            end,
            args.days,
            args.sidecar_hours,
            args.history_step,
        )
        log(
            f"{len(kvm_vms)} KVM VMs on {len(uris)} hosts; backfilling {len(series)} series "
            f"({args.days:g} d of identity, state and recording rules, {args.sidecar_hours:g} h of the "
            f"sidecar's write-back) at {args.history_step:.0f} s"
        )
        data_dir = work / "prom" / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        samples, files = write_blocks(work, series, end, args.history_step)
        log(f"wrote {samples / 1e6:.1f} M samples in {len(files)} files; running promtool")
        promtool(files, data_dir)
        log("blocks created; starting Alertmanager and Prometheus")
        am_config = {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}
        am = Alertmanager(work / "am", am_config, cluster_port=free_port())
        am.start()
        procs.append(am)
        prom_port = free_port()
        jobs = [
            {
                "job_name": "novacron-libvirt",
                "scrape_timeout": "14s",
                "static_configs": [{"targets": list(texts)}],
            },
            {"job_name": "novacron-static", "static_configs": [{"targets": [static_instance]}]},
            {"job_name": "alertmanager", "static_configs": [{"targets": [f"127.0.0.1:{am.port}"]}]},
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}]},
        ]
        rules = [
            *sorted((REPO / "rules").glob("*.rules.yml")),
        ]
        config = prometheus_config(jobs, rules, [f"127.0.0.1:{am.port}"], "15s", "15s")
        prom = Prometheus(work / "prom", config, port=prom_port)
        prom.start(ready_timeout=300)
        procs.append(prom)
        prom.wait_for("vm:novacron_vm_cpu_utilisation:ratio", timeout=120)
        prom.wait_for("slo:error_budget_remaining:ratio", timeout=120)
        # Everything a default view reads must exist before timing, or an empty query would look fast.
        for expr in (
            "provider_region_host_tenant_class:novacron_vm_workload_class:count",
            "provider_region_host_tenant_le:novacron_vm_memory_utilisation:count",
            "provider_region_host_tenant:novacron_vm_efficiency_ratio:count",
            "provider_region_host_tenant_risk:novacron_vm_recommended_vcpus:sum",
            "host:novacron_host_cpu_utilisation:ratio",
            "rate(novacron_cloud_api_calls_total[1m])",
            "rate(novacron_bridge_delivery_latency_seconds_bucket[1m])",
            "alertmanager_cluster_members",
        ):
            prom.wait_for(expr, timeout=180)
        wait_compaction_settled(prom)
        span = prom.query(f"count(novacron_vm_info offset {int(args.days * 86400 - 3600)}s)")
        log(
            f"ready after {time.monotonic() - started:.0f} s; oldest history "
            f"{'present' if span else 'MISSING'} {args.days:g} d - 1 h back"
        )
        load_before = os.getloadavg()[0]
        rows = measure(prom.url, args.repeat, "kvm00", kvm_vms[0])
        load_after = os.getloadavg()[0]
    finally:
        for proc in reversed(procs):
            proc.stop()
        static.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nDashboards default view, {len(kvm_vms)} KVM VMs + {len(CLOUD_VMS)} cloud VMs, "
        f"{args.days:g} d history, "
        f"{args.repeat} cold loads each (queries run one after another); 1-minute load average "
        f"{load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} cores\n"
    )
    print("| dashboard | range | queries (no data) | min | median | max | slowest query | median vs 1 s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        slow_s, slow_name = row["slowest"]
        print(
            f"| {row['uid']} | {row['range']} | {row['queries']} ({row['empty']}) | {row['min']:.3f} s | "
            f"{row['median']:.3f} s | "
            f"{row['max']:.3f} s | "
            f"{slow_name} {slow_s:.3f} s | {row['median'] / TARGET_SECONDS:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
