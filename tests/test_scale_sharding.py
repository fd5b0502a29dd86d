"""Two Prometheus shards split the libvirt exporters by hashmod and remote_write into VictoriaMetrics: the
global view sees every VM once; a killed shard loses only its own targets; a VictoriaMetrics outage leaves no
gap once the store is back (the remote_write queue rides it out)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
import requests

from stack.plan import _bin
from stack.processes import ManagedProcess, free_port, wait_until
from stack.scale import hashmod, shard_config, victoria_argv
from stack.servers import Prometheus
from tests.harness import test_driver_hosts

HOSTS, VMS = 4, 12
OUTAGE_SECONDS = 20  # a documented shorter outage than a minute, to keep the suite short (docs/scaling.md)


@dataclass
class Cluster:
    exporters: list[ManagedProcess]
    addresses: list[str]
    shards: list[Prometheus]
    vm: ManagedProcess
    vm_url: str
    workdir: Path


def _ports_covering_both_shards() -> list[int]:
    """Free ports for the exporters such that each shard gets at least one (hashmod of host:port)."""
    while True:
        ports = [free_port() for _ in range(HOSTS)]
        if {hashmod(f"127.0.0.1:{p}", 2) for p in ports} == {0, 1} and len(set(ports)) == HOSTS:
            return ports


def _victoria(workdir: Path, port: int) -> ManagedProcess:
    return ManagedProcess(
        "victoria-metrics",
        victoria_argv(workdir / "vm-data", f"127.0.0.1:{port}", "1d", "1s"),
        workdir / "victoria.log",
        ready_url=f"http://127.0.0.1:{port}/health",
    )


def vm_query(url: str, expr: str) -> list[dict]:
    resp = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    resp.raise_for_status()
    return list(resp.json()["data"]["result"])


def vm_export(url: str, match: str, start: float, end: float) -> list[dict]:
    """Raw samples (no interpolation, no staleness filling) of every series matching `match`."""
    resp = requests.get(
        f"{url}/api/v1/export", params={"match[]": match, "start": start, "end": end}, timeout=30
    )
    resp.raise_for_status()
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


def _remote_write_lag(prom: Prometheus) -> float:
    """Seconds the remote_write queue is behind the newest sample in the WAL (the shard's own /metrics)."""
    values: dict[str, float] = {}
    for line in requests.get(f"{prom.url}/metrics", timeout=10).text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in (
            "prometheus_remote_storage_highest_timestamp_in_seconds",
            "prometheus_remote_storage_queue_highest_sent_timestamp_seconds",
        ):
            values[name] = float(line.rsplit(" ", 1)[1])
    return (
        values["prometheus_remote_storage_highest_timestamp_in_seconds"]
        - values["prometheus_remote_storage_queue_highest_sent_timestamp_seconds"]
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("scale")
    uris = test_driver_hosts(workdir, VMS, HOSTS, seed=7)
    ports = _ports_covering_both_shards()
    addresses = [f"127.0.0.1:{p}" for p in ports]
    exporters = [
        ManagedProcess(
            f"libvirt-{i}",
            [_bin("novacron-libvirt-exporter"), f"--libvirt.uri={uri}", f"--web.listen-address={addr}"],
            workdir / f"libvirt-{i}.log",
            ready_url=f"http://{addr}/metrics",
        )
        for i, (uri, addr) in enumerate(zip(uris, addresses, strict=True))
    ]
    vm_port = free_port()
    vm = _victoria(workdir, vm_port)
    vm_url = f"http://127.0.0.1:{vm_port}"
    shards: list[Prometheus] = []
    try:
        for exp in exporters:
            exp.start()
        vm.start()
        for i in range(2):
            config = shard_config({"libvirt": addresses}, i, 2, vm_url, scrape_interval="1s")
            shards.append(Prometheus(workdir / f"shard-{i}", config).start())
        yield Cluster(exporters, addresses, shards, vm, vm_url, workdir)
    finally:
        for proc in [*shards, vm, *exporters]:
            proc.stop()


def test_each_shard_scrapes_exactly_the_targets_hashmod_assigns(cluster: Cluster) -> None:
    for i, prom in enumerate(cluster.shards):
        expected = sorted(a for a in cluster.addresses if hashmod(a, 2) == i)
        prom.wait_for('up{job="libvirt"} == 1', predicate=lambda r, n=len(expected): len(r) == n)
        scraped = sorted(t["labels"]["instance"] for t in prom.targets() if t["health"] == "up")
        assert scraped == expected


def test_global_view_sees_every_vm_once(cluster: Cluster) -> None:
    total = HOSTS * VMS

    def every_vm_once() -> bool:
        per_vm = vm_query(cluster.vm_url, "count by (vm_id) (last_over_time(novacron_vm_info[30s]))")
        return len(per_vm) == total and all(r["value"][1] == "1" for r in per_vm)

    assert wait_until(every_vm_once, timeout=45, interval=0.5), vm_query(
        cluster.vm_url, "count(last_over_time(novacron_vm_info[30s]))"
    )
    shards = vm_query(cluster.vm_url, "count by (prometheus_shard) (last_over_time(novacron_vm_info[30s]))")
    assert {r["metric"]["prometheus_shard"] for r in shards} == {"0", "1"}


def test_victoria_outage_leaves_no_gap_after_recovery(cluster: Cluster) -> None:
    match = 'up{job="libvirt"}'
    assert wait_until(lambda: len(vm_query(cluster.vm_url, match)) == HOSTS, timeout=30)
    start = time.time() - 3
    cluster.vm.stop()
    time.sleep(OUTAGE_SECONDS)  # the outage itself: nothing to wait for
    lag = _remote_write_lag(cluster.shards[0])
    assert lag > OUTAGE_SECONDS / 2, f"the queue should be behind during the outage (lag {lag:.1f}s)"
    cluster.vm = _victoria(cluster.workdir, int(cluster.vm_url.rsplit(":", 1)[1])).start()
    end = time.time()

    def caught_up() -> bool:
        series = vm_export(cluster.vm_url, match, start, end)
        return len(series) == HOSTS and all(max(s["timestamps"]) >= end * 1000 - 2000 for s in series)

    assert wait_until(caught_up, timeout=60, interval=1)
    for series in vm_export(cluster.vm_url, match, start, end):
        stamps = sorted(series["timestamps"])
        gaps = [b - a for a, b in pairwise(stamps)]
        # 1 s scrapes: every step of the outage window holds its sample (jitter allowed, no hole)
        assert max(gaps) < 2500, (series["metric"], max(gaps))
        assert len(stamps) >= (end - start) * 0.8


def test_killed_shard_stops_only_its_own_targets(cluster: Cluster) -> None:
    killed, alive = cluster.shards[1], cluster.shards[0]
    killed.kill()
    time.sleep(2)
    t0 = time.time()
    mine = {a for a in cluster.addresses if hashmod(a, 2) == 0}

    def fresh_instances() -> set[str]:
        rows = vm_query(cluster.vm_url, 'timestamp(up{job="libvirt"})')
        return {r["metric"]["instance"] for r in rows if float(r["value"][1]) > t0}

    assert wait_until(lambda: fresh_instances() == mine, timeout=20, interval=0.5), fresh_instances()
    assert alive.query('sum(up{job="libvirt"})')[0]["value"][1] == str(len(mine))
