"""Two Prometheus shards split the libvirt exporters by hashmod and remote_write into VictoriaMetrics; shard 0
runs as an HA pair of identical replicas merged by `-dedup.minScrapeInterval`. The global view sees every VM
once; the long-term store gets only recording-rule series; a VictoriaMetrics outage of a minute, with one
replica of the pair killed in the middle of it, leaves no gap and no duplicate sample once the store is back;
a killed shard loses only its own targets. The fleet-wide rules (SLOs, tenant availability) run once, in
vmalert on the global view: one copy of each `slo:*` series, computed over both shards' VMs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
import requests
import yaml

from stack.plan import REPO_ROOT
from stack.processes import ManagedProcess, free_port, wait_until
from stack.scale import (
    hashmod,
    longterm_federation,
    recorded_names,
    shard_config,
    split_rules,
    victoria_argv,
    vmalert_argv,
)
from stack.servers import Prometheus
from tests.harness import libvirt_exporter, start_alertmanager, test_driver_hosts

pytestmark = pytest.mark.slow

HOSTS, VMS = 4, 12
OUTAGE_SECONDS = 60  # the issue: VictoriaMetrics down for a minute
RECORDED = "provider:novacron_vms:count"  # a recording rule of rules/fleet.rules.yml


@dataclass
class Cluster:
    exporters: list[ManagedProcess]
    addresses: list[str]
    shards: dict[str, Prometheus]  # "0a" and "0b": the HA pair of shard 0; "1": shard 1 alone
    vm: ManagedProcess
    vm_url: str
    longterm_url: str
    workdir: Path
    started: float  # when every shard was ready
    vmalert_url: str


def _ports_covering_both_shards() -> list[int]:
    """Free ports for the exporters such that each shard gets at least one (hashmod of host:port)."""
    while True:
        ports = [free_port() for _ in range(HOSTS)]
        if {hashmod(f"127.0.0.1:{p}", 2) for p in ports} == {0, 1} and len(set(ports)) == HOSTS:
            return ports


def _victoria(
    workdir: Path, name: str, port: int, retention: str = "1d", scrape_config: Path | None = None
) -> ManagedProcess:
    return ManagedProcess(
        name,
        victoria_argv(workdir / f"{name}-data", f"127.0.0.1:{port}", retention, "1s", scrape_config),
        workdir / f"{name}.log",
        ready_url=f"http://127.0.0.1:{port}/health",
    )


def _fast_rules(workdir: Path) -> list[Path]:
    """The VM, host, fleet, SLO and decision rule files (the downsampled series build on the first two), every
    group evaluated each second (they run at 30 s, 5 m and 1 h)."""
    paths = []
    for name in ("vm.rules.yml", "host.rules.yml", "fleet.rules.yml", "slo.rules.yml", "decisions.rules.yml"):
        rules = yaml.safe_load((REPO_ROOT / "rules" / name).read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        paths.append(workdir / name)
        paths[-1].write_text(yaml.safe_dump(rules))
    return paths


def vm_query(url: str, expr: str) -> list[dict]:
    resp = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    resp.raise_for_status()
    return list(resp.json()["data"]["result"])


def vm_export(url: str, match: str, start: float, end: float) -> list[dict]:
    """Raw samples (no interpolation, no staleness filling) of every series matching `match`."""
    params: dict[str, str | float] = {"match[]": match, "start": start, "end": end}
    resp = requests.get(f"{url}/api/v1/export", params=params, timeout=30)
    resp.raise_for_status()
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


def _self_metric(url: str, name: str, must_contain: str = "") -> float:
    """Sum of one metric's samples on a process's own /metrics (optionally only lines with a label)."""
    total = 0.0
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.split("{", 1)[0].split(" ", 1)[0] == name and must_contain in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _remote_write_lag(prom: Prometheus) -> float:
    """Seconds the global remote_write queue is behind the newest sample in the WAL."""
    newest = _self_metric(prom.url, "prometheus_remote_storage_highest_timestamp_in_seconds")
    sent = _self_metric(
        prom.url, "prometheus_remote_storage_queue_highest_sent_timestamp_seconds", 'remote_name="global"'
    )
    return newest - sent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("scale")
    uris = test_driver_hosts(workdir, VMS, HOSTS, seed=7)
    ports = _ports_covering_both_shards()
    addresses = [f"127.0.0.1:{p}" for p in ports]
    exporters = [
        libvirt_exporter(workdir, uri, port=port, name=f"libvirt-{i}")
        for i, (uri, port) in enumerate(zip(uris, ports, strict=True))
    ]
    vm_port, longterm_port, vmalert_port = free_port(), free_port(), free_port()
    vm_url, longterm_url = f"http://127.0.0.1:{vm_port}", f"http://127.0.0.1:{longterm_port}"
    shard_rules, global_rules = split_rules(_fast_rules(workdir), workdir / "split")
    federation = workdir / "longterm-scrape.yml"
    federation.write_text(yaml.safe_dump(longterm_federation(vm_url, recorded_names(global_rules), "1s")))
    vm = _victoria(workdir, "victoria", vm_port)
    longterm = _victoria(workdir, "victoria-longterm", longterm_port, "2y", federation)
    vmalert_url = f"http://127.0.0.1:{vmalert_port}"
    shards: dict[str, Prometheus] = {}
    stores = [vm, longterm]
    others = []
    try:
        for proc in [*exporters, vm, longterm]:
            proc.start()
        for name, shard in (("0a", 0), ("0b", 0), ("1", 1)):
            config = shard_config(
                {"libvirt": addresses}, shard, 2, vm_url, rules=shard_rules, scrape_interval="1s",
                evaluation_interval="1s", longterm_url=longterm_url,
            )  # fmt: skip
            shards[name] = Prometheus(workdir / f"shard-{name}", config).start()
        am_config = {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}
        others.append(start_alertmanager(workdir, am_config))
        argv = vmalert_argv(vm_url, [others[0].url], global_rules, f"127.0.0.1:{vmalert_port}", "1s")
        others.append(
            ManagedProcess(
                "vmalert", argv, workdir / "vmalert.log", ready_url=f"{vmalert_url}/health"
            ).start()
        )
        cluster = Cluster(
            exporters, addresses, shards, vm, vm_url, longterm_url, workdir, time.time(), vmalert_url
        )
        yield cluster
        stores.append(cluster.vm)  # the outage test restarted the store: a new process to stop
    finally:
        for proc in [*others, *shards.values(), *stores, *exporters]:
            proc.stop()


def test_each_shard_scrapes_exactly_the_targets_hashmod_assigns(cluster: Cluster) -> None:
    def healthy(prom: Prometheus) -> list[str]:
        return sorted(t["labels"]["instance"] for t in prom.targets() if t["health"] == "up")

    for name, prom in cluster.shards.items():
        expected = sorted(a for a in cluster.addresses if hashmod(a, 2) == int(name[0]))
        # One wait for the exact set: a 1 s scrape can time out under load and flip a target's health.
        assert wait_until(lambda: healthy(prom) == expected, timeout=60, interval=0.5), (  # noqa: B023
            name,
            healthy(prom),
            expected,
        )


def test_global_view_sees_every_vm_once(cluster: Cluster) -> None:
    total = HOSTS * VMS

    def every_vm_once() -> bool:
        per_vm = vm_query(cluster.vm_url, "count by (vm_id) (last_over_time(novacron_vm_info[30s]))")
        return len(per_vm) == total and all(r["value"][1] == "1" for r in per_vm)

    def shards() -> set[str]:
        rows = vm_query(cluster.vm_url, "count by (prometheus_shard) (last_over_time(novacron_vm_info[30s]))")
        return {r["metric"]["prometheus_shard"] for r in rows}

    # Two replicas of shard 0 write the same series (same external labels): still one series per VM. Each
    # shard's remote_write arrives on its own schedule: wait for the whole answer at once.
    assert wait_until(lambda: every_vm_once() and shards() == {"0", "1"}, timeout=90, interval=0.5), (
        vm_query(cluster.vm_url, "count by (vm_id) (last_over_time(novacron_vm_info[30s])) != 1"),
        vm_query(cluster.vm_url, "count(last_over_time(novacron_vm_info[30s]))"),
        shards(),
    )


def test_every_dashboard_query_answers_from_the_global_view(cluster: Cluster) -> None:
    """Dashboards work unchanged against the global view: with both shards' series and rule results in
    VictoriaMetrics, no panel query fails (e.g. a one-to-one match meeting one series per shard)."""
    from dashboards.catalog import build_all
    from dashboards.evaluate import Prometheus as QueryApi
    from dashboards.evaluate import run_dashboard

    api = QueryApi(cluster.vm_url)
    # vmalert records the SLO series once, on the global view (the shards no longer evaluate them).
    assert wait_until(lambda: vm_query(cluster.vm_url, "slo:objective:ratio"), timeout=90, interval=0.5)
    failed = [
        f"{item.model['uid']}: {r.panel} [{r.ref_id}]: {r.error}"
        for item in build_all()
        for r in run_dashboard(api, item.model, scrape_interval=1.0)
        if r.error
    ]
    assert not failed, failed


def test_fleet_wide_rules_run_once_in_vmalert_over_the_whole_fleet(cluster: Cluster) -> None:
    # The split: the shards load no SLO or tenant group, vmalert exactly those.
    for prom in cluster.shards.values():
        groups = requests.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        names = {g["name"] for g in groups}
        assert names and not {n for n in names if "slo" in n or n == "novacron-decisions-recording"}, names
    objectives = "last_over_time(slo:objective:ratio[30s])"
    assert wait_until(lambda: len(vm_query(cluster.vm_url, objectives)) >= 4, timeout=90, interval=0.5)
    rows = vm_query(cluster.vm_url, objectives)
    slos = [r["metric"]["slo"] for r in rows]
    assert len(slos) == len(set(slos)), rows  # one copy per SLO, not one per shard
    assert not [r for r in rows if "prometheus_shard" in r["metric"]], rows
    # The VM availability SLI covers both shards' VMs: it equals the same ratio over the whole global view.
    fleet = (
        "sum((novacron_vm_state == bool 0) + (novacron_vm_state == bool 2) + (novacron_vm_state == bool 6))"
        " / count(novacron_vm_state != 5)"
    )
    # Both shards' VMs are in the global view (on their own remote_write schedules; this test may run alone).
    every_vm = "count by (vm_id) (novacron_vm_state != 5)"
    assert wait_until(
        lambda: len(vm_query(cluster.vm_url, every_vm)) == HOSTS * VMS, timeout=90, interval=0.5
    ), len(vm_query(cluster.vm_url, every_vm))
    sli = 'last_over_time(slo:sli_error:ratio{slo="vm-availability"}[30s])'
    # vmalert's results reach the store through its remote write (flushed each second): wait for them.
    assert wait_until(lambda: vm_query(cluster.vm_url, sli), timeout=60, interval=0.5)
    recorded = vm_query(cluster.vm_url, sli)
    assert len(recorded) == 1, recorded
    assert float(recorded[0]["value"][1]) == pytest.approx(
        float(vm_query(cluster.vm_url, fleet)[0]["value"][1])
    )
    tenants = "count by (tenant) (last_over_time(tenant:novacron_vm_available:ratio[30s]))"
    assert wait_until(lambda: vm_query(cluster.vm_url, tenants), timeout=90, interval=1)
    assert all(r["value"][1] == "1" for r in vm_query(cluster.vm_url, tenants))
    # vmalert evaluates every group without error (its alerts reach the Alertmanager it was given).
    groups = requests.get(f"{cluster.vmalert_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {g["name"] for g in groups} >= {"novacron-slo-vm-availability", "novacron-decisions-recording"}
    errors = [
        (g["name"], r["name"], r["lastError"]) for g in groups for r in g["rules"] if r.get("lastError")
    ]
    assert not errors, errors
    assert _self_metric(cluster.vmalert_url, "vmalert_alerts_send_errors_total") == 0


def test_longterm_store_gets_recording_rule_series_only(cluster: Cluster) -> None:
    def names() -> list[str]:
        resp = requests.get(f"{cluster.longterm_url}/api/v1/label/__name__/values", timeout=10)
        return list(resp.json()["data"])

    def fleet_and_downsampled_from_both_shards() -> bool:
        rows = vm_query(cluster.longterm_url, f"last_over_time({RECORDED}[30s])")
        shards = {r["metric"].get("prometheus_shard") for r in rows}
        return shards == {"0", "1"} and any(n.endswith("_avg5m") for n in names())

    assert wait_until(fleet_and_downsampled_from_both_shards, timeout=90, interval=0.5), names()
    # Raw series stay out; the federation scrape's own `up` and `scrape_*` series are its health, kept.
    raw = [n for n in names() if ":" not in n and n != "up" and not n.startswith("scrape_")]
    assert raw == [], "raw series reached the long-term store"
    jobs = vm_query(cluster.longterm_url, "count by (job) (last_over_time({__name__!~'.+:.+'}[1m]))")
    assert {r["metric"]["job"] for r in jobs} <= {"federate-global-rules"}, jobs
    # ... while the global view has both the raw series and the recording rules (they come through the
    # shards' other remote_write queue, which may lag the long-term one: wait for them too).
    assert wait_until(
        lambda: vm_query(cluster.vm_url, "count(last_over_time(novacron_vm_info[30s]))")
        and vm_query(cluster.vm_url, f"last_over_time({RECORDED}[30s])"),
        timeout=60,
        interval=0.5,
    )


def test_longterm_store_keeps_the_fleet_wide_slo_series(cluster: Cluster) -> None:
    """vmalert writes the SLO series to the global view only; the long-term store federates them from there,
    once per SLO (no shard label), so SLO history outlives the global view's 30 days."""

    def objectives() -> list[dict]:
        return vm_query(cluster.longterm_url, "last_over_time(slo:objective:ratio[30s])")

    assert wait_until(objectives, timeout=90, interval=0.5)
    rows = objectives()
    slos = [r["metric"]["slo"] for r in rows]
    assert len(slos) == len(set(slos)) > 0, rows
    assert all("prometheus_shard" not in r["metric"] for r in rows), rows
    chained = "last_over_time(slo:sli_error:ratio_rate5m[30s])"  # a rule on a rule: a flush later
    assert wait_until(lambda: vm_query(cluster.longterm_url, chained), timeout=90, interval=0.5)
    names = requests.get(f"{cluster.longterm_url}/api/v1/label/__name__/values", timeout=10).json()["data"]
    assert "ALERTS" not in names and "ALERTS_FOR_STATE" not in names  # only the recorded series


def _check_no_gap_no_duplicate(series: dict, start: float, end: float) -> None:
    """1 s scrapes: every second of [start, end] holds a sample, and no more samples than one Prometheus
    scrapes (the HA pair deduped: two replicas kept apart would hold about two per second)."""
    stamps = sorted(series["timestamps"])
    gaps = [b - a for a, b in pairwise(stamps)]
    assert max(gaps) < 2500, (series["metric"], max(gaps))  # jitter allowed, no hole
    # Not "one sample per calendar second": a scrape due at x.997 that starts a few ms late takes its own
    # timestamp, (x+1).00y, and the next one, on time at (x+1).997, lands in the same second. The scrape
    # loop's ticker skips late ticks and never adds one, so one Prometheus writes at most span/1s + 1 samples.
    scrapes = (stamps[-1] - stamps[0]) / 1000 + 1
    assert len(set(stamps)) == len(stamps), (series["metric"], "one timestamp twice")
    assert len(stamps) <= scrapes + 1, (
        series["metric"],
        len(stamps),
        f"more samples than {scrapes:.0f} scrapes",
    )
    assert len(stamps) >= (end - start) * 0.8


def test_victoria_outage_of_a_minute_and_a_dead_replica_leave_no_gap(cluster: Cluster) -> None:
    match = 'up{job="libvirt"}'
    assert wait_until(lambda: len(vm_query(cluster.vm_url, match)) == HOSTS, timeout=60)
    # Both replicas of shard 0 write: VictoriaMetrics drops one copy of each sample (without
    # -dedup.minScrapeInterval the export below holds two samples per second for shard 0's hosts). It counts
    # them when it merges parts, in the background: wait for the first merge (this test may run alone).
    assert wait_until(
        lambda: _self_metric(cluster.vm_url, "vm_deduplicated_samples_total") > 0, timeout=60, interval=0.5
    ), "VictoriaMetrics merged no replica samples (is -dedup.minScrapeInterval set?)"
    # From a few seconds after both replicas started: the window holds samples both wrote.
    start = max(cluster.started + 3, time.time() - 15)
    cluster.vm.stop()
    time.sleep(OUTAGE_SECONDS / 2)  # the outage itself: nothing to wait for
    # Half-way through, one replica of the HA pair dies with its unsent queue: the other one has it all.
    cluster.shards["0a"].kill()
    time.sleep(OUTAGE_SECONDS / 2)
    for name in ("0b", "1"):
        lag = _remote_write_lag(cluster.shards[name])
        assert (
            lag > OUTAGE_SECONDS / 2
        ), f"shard {name}'s queue should be behind during the outage ({lag:.1f}s)"
    cluster.vm = _victoria(cluster.workdir, "victoria", int(cluster.vm_url.rsplit(":", 1)[1])).start()
    end = time.time()

    def caught_up() -> bool:
        series = vm_export(cluster.vm_url, match, start, end)
        return len(series) == HOSTS and all(max(s["timestamps"]) >= end * 1000 - 2000 for s in series)

    def whole() -> bool:
        # The queues send a minute of backlog in many requests; VictoriaMetrics makes rows searchable a
        # second or two after it takes them, not necessarily in order: the newest samples may show before
        # older ones. Wait for the whole answer (caught up, no gap, no duplicate), then check it again below.
        if not caught_up():
            return False
        for series in vm_export(cluster.vm_url, match, start, end):
            _check_no_gap_no_duplicate(series, start, end)
        return True

    wait_until(whole, timeout=120, interval=1)  # the checks below say what is missing if it never holds
    newest = [(s["metric"], max(s["timestamps"])) for s in vm_export(cluster.vm_url, match, start, end)]
    assert caught_up(), (end, newest)
    for series in vm_export(cluster.vm_url, match, start, end):
        _check_no_gap_no_duplicate(series, start, end)


def test_killed_shard_stops_only_its_own_targets(cluster: Cluster) -> None:
    killed, alive = cluster.shards["1"], cluster.shards["0b"]
    killed.kill()
    t0 = time.time() + 1  # a sample of shard 1 may still be in flight for a moment
    mine = {a for a in cluster.addresses if hashmod(a, 2) == 0}

    def fresh_instances() -> set[str]:
        rows = vm_query(cluster.vm_url, 'timestamp(up{job="libvirt"})')
        return {r["metric"]["instance"] for r in rows if float(r["value"][1]) > t0}

    assert wait_until(lambda: fresh_instances() == mine, timeout=60, interval=0.5), fresh_instances()
    # The survivor still scrapes each of its targets (a 1 s scrape may time out once under load).
    expected = str(len(mine))
    alive.wait_for('sum(up{job="libvirt"})', predicate=lambda r: bool(r) and r[0]["value"][1] == expected)
