"""Anomaly state across restarts of the real `novacron-analytics serve` process (SIGTERM, SIGINT, corruption).

A synthetic exporter (served on a free port, new random CPU/memory ratios on every scrape) feeds a real
Prometheus at 1 s; the sidecar analyses it once per start (interval 1h, step 1s). After each stop the state
directory's index must hold every series' last scored timestamp; after a restart the first cycle must score
only the points after it, continuing each detector where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from analytics_sidecar.anomaly.engine import INDEX_FILE, SeriesState
from exporters.common.web import ExporterApp, registry_with, serve_in_thread
from stack.processes import ManagedProcess, free_port, wait_until
from stack.servers import Prometheus
from tests.harness import start_prometheus

pytestmark = pytest.mark.slow

TOKEN = "state-test-token-0123456789"
VMS = {"vm-a": "kvm-1", "vm-b": "kvm-2"}
STEP = 1.0
GIB = float(1 << 30)


class SyntheticVMs:
    """Collector: two VMs with info, vCPUs, memory and fresh noisy utilisation ratios at each scrape."""

    def __init__(self) -> None:
        self.rng = random.Random(8)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "novacron_vm_info", "VM identity.", labels=["vm_id", "vm_name", "host", "tenant", "provider"]
        )
        vcpus = GaugeMetricFamily("novacron_vm_vcpus", "vCPUs.", labels=["vm_id"])
        memory = GaugeMetricFamily("novacron_vm_memory_bytes", "Memory.", labels=["vm_id"])
        cpu = GaugeMetricFamily("novacron_vm_cpu_utilisation_ratio", "CPU ratio.", labels=["vm_id"])
        mem = GaugeMetricFamily("novacron_vm_memory_utilisation_ratio", "Memory ratio.", labels=["vm_id"])
        for vm, host in VMS.items():
            info.add_metric([vm, vm, host, "acme", "kvm"], 1.0)
            vcpus.add_metric([vm], 2.0)
            memory.add_metric([vm], 4 * GIB)
            cpu.add_metric([vm], 0.4 + self.rng.gauss(0, 0.02))
            mem.add_metric([vm], 0.5 + self.rng.gauss(0, 0.01))
        yield from (info, vcpus, memory, cpu, mem)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("anomaly-state")
    exporter_port = free_port()
    app = ExporterApp(name="synthetic", registry=registry_with(SyntheticVMs()))
    server = serve_in_thread(app, f"127.0.0.1:{exporter_port}")
    prom: Prometheus | None = None
    try:
        job = {"job_name": "vms", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}
        prom = start_prometheus(tmp, [job])
        # Enough history that a re-scored window would be far larger than the points added between runs.
        prom.wait_for(
            "count_over_time(novacron_vm_cpu_utilisation_ratio[5m]) >= 12",
            timeout=60,
            predicate=lambda r: len(r) == len(VMS),
        )
        cfg = tmp / "analytics.yml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "analysis": {"lookback": "10m", "step": "1s", "chunk": "1h", "horizons": ["1h"]},
                    "api": {"token_env": "NC_STATE_TEST_TOKEN"},
                }
            )
        )
        yield {"prom": prom, "cfg": cfg, "state": tmp / "state", "tmp": tmp}
    finally:
        if prom is not None:
            prom.stop()
        server.shutdown()
        server.server_close()


def start_sidecar(fleet: dict[str, Any], run: int) -> ManagedProcess:
    port = free_port()
    binary = str(Path(sys.executable).parent / "novacron-analytics")
    proc = ManagedProcess(
        f"analytics-{run}",
        [
            binary,
            "serve",
            f"--config.file={fleet['cfg']}",
            f"--prometheus.url={fleet['prom'].url}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--state.dir={fleet['state']}",
            "--interval=1h",  # one cycle per start: what each run scored is exactly what its counter says
        ],
        fleet["tmp"] / f"analytics-{run}.log",
        ready_url=f"http://127.0.0.1:{port}/metrics",
        env={"NC_STATE_TEST_TOKEN": TOKEN},
        url=f"http://127.0.0.1:{port}",
    )
    proc.start(ready_timeout=60)
    done = "novacron_analytics_last_success_timestamp_seconds"
    assert wait_until(lambda: metrics(proc).get(done, 0.0) > 0, 60), proc.log_tail()  # first cycle over
    return proc


def metrics(proc: ManagedProcess) -> dict[str, float]:
    text = requests.get(f"{proc.url}/metrics", timeout=10).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def scored(proc: ManagedProcess) -> float:
    return metrics(proc).get("novacron_anomaly_points_scored_total", 0.0)


def api_series(proc: ManagedProcess) -> dict[str, dict[str, Any]]:
    resp = requests.get(
        f"{proc.url}/api/v1/anomalies/series", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    resp.raise_for_status()
    return {f"{r['kind']}:{r['vm_id']}:{r['resource']}": r for r in resp.json()["data"]["series"]}


def stop(proc: ManagedProcess, sig: int = signal.SIGTERM) -> None:
    assert proc.proc is not None
    os.killpg(proc.proc.pid, sig)
    assert proc.proc.wait(60) == 0, proc.log_tail()


def grid_points_after(last: float, end: float) -> int:
    """Points a cycle ending at `end` reads after `last`: the step grid in (last, end] and the point at `end`
    itself (read by an instant query when `end` is off the grid, as every cycle's end is)."""
    return math.floor(end / STEP) - math.floor(last / STEP) + (0 if end % STEP == 0 else 1)


def index(fleet: dict[str, Any]) -> dict[str, dict[str, Any]]:
    doc = json.loads((fleet["state"] / "anomaly" / INDEX_FILE).read_text())
    return dict(doc["series"])


def test_state_saved_on_sigterm_and_restart_scores_only_new_points(fleet: dict[str, Any]) -> None:
    one = start_sidecar(fleet, 1)
    try:
        first_scored = scored(one)
        seen = api_series(one)
    finally:
        stop(one)
    assert set(seen) == {f"vm:{vm}:{res}" for vm in VMS for res in ("cpu", "memory")}
    saved = index(fleet)
    assert set(saved) == set(seen)
    for ident, row in saved.items():
        # the index and the series file both hold the last timestamp the process scored
        assert row["last_t"] == seen[ident]["timestamp"]
        with open(fleet["state"] / "anomaly" / row["file"], "rb") as fh:
            st: SeriesState = pickle.load(fh)["state"]
        assert st.last_t == row["last_t"] and st.detector.n == row["points"]
    assert sum(r["points"] for r in saved.values()) == first_scored
    assert not list((fleet["state"] / "anomaly").glob("*.tmp"))

    newest = max(r["last_t"] for r in saved.values())
    fleet["prom"].wait_for(  # a few new scrapes while the sidecar is down
        f"timestamp(novacron_vm_cpu_utilisation_ratio) > {newest + 3}", timeout=30
    )
    two = start_sidecar(fleet, 2)
    try:
        second_scored = scored(two)
        after = api_series(two)
    finally:
        stop(two, signal.SIGINT)
    resumed = index(fleet)
    added = 0
    for ident, row in resumed.items():
        before = saved[ident]
        new_points = row["points"] - before["points"]
        # Only grid points after the saved timestamp (+ the off-grid point at the cycle's end) were scored.
        assert 0 < new_points <= grid_points_after(before["last_t"], row["last_t"])
        assert row["last_t"] == after[ident]["timestamp"] > before["last_t"]
        assert 0.0 <= after[ident]["score"] <= 1.0
        added += new_points
    assert added == second_scored  # the detectors continued: no point of the window was scored twice
    # A fresh start would have re-scored the whole 10-minute window, i.e. every point the detectors now hold
    # (the window still covers them all). Not compared with first_scored: the first run's window is only as
    # long as Prometheus had been scraping, and the second start can take longer than that on a busy machine.
    assert second_scored < sum(row["points"] for row in resumed.values())


def test_corrupt_state_is_logged_and_that_series_starts_afresh(fleet: dict[str, Any]) -> None:
    if not (fleet["state"] / "anomaly" / INDEX_FILE).exists():
        stop(start_sidecar(fleet, 3))
    saved = index(fleet)
    broken = "vm:vm-a:cpu"
    folder = fleet["state"] / "anomaly"
    data = (folder / saved[broken]["file"]).read_bytes()
    (folder / saved[broken]["file"]).write_bytes(data[: len(data) // 2])  # as a kill mid-write would leave
    (folder / INDEX_FILE).write_text('{"series": ')
    (folder / "leftover.pkl.1.2.tmp").write_bytes(b"partial")
    proc = start_sidecar(fleet, 4)
    try:
        run_scored = scored(proc)
        assert proc.alive()
        log = proc.log_path.read_text()
        assert "unreadable" in log and "Traceback" not in log
    finally:
        stop(proc)
    now = index(fleet)
    increments = 0
    for ident in set(saved) - {broken}:
        increments += now[ident]["points"] - saved[ident]["points"]
        new_points = now[ident]["points"] - saved[ident]["points"]
        assert 0 < new_points <= grid_points_after(saved[ident]["last_t"], now[ident]["last_t"])
    # the broken series was scored from scratch (its whole window in this run), the others only continued
    assert now[broken]["points"] >= saved[broken]["points"]
    assert run_scored == increments + now[broken]["points"]
    assert not list(folder.glob("*.tmp"))
