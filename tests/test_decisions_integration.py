"""Decisions against a real Prometheus: backfilled history plus live libvirt exporters on test-driver fleets.

Three live exporters serve three KVM hosts of 64 CPUs: `kvm-hot` (60 VMs), `kvm-idle` (4) and `kvm-spare` (6).
The test driver's CPU counters stand still, so each VM's usage history is backfilled under its real vm_id
(`promtool tsdb create-blocks-from openmetrics`): every VM of kvm-hot and kvm-spare uses one core, those of
kvm-idle 0.05, which makes kvm-hot hot (60/64 CPUs). Backfilled cloud VMs carry scaling groups (busy,
quiet, steady; the KVM fleets' `<novacron:group>` is removed so their VMs are in no group) and two
tenants for the SLOs, one of which had a VM crashed for the last 12 hours.
Stopping kvm-spare's exporter is the host failure; restarting it quickly is the flapping input.
"""

from __future__ import annotations

import math
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from analytics_sidecar.config import load_config
from analytics_sidecar.serve import Loop, build
from exporters.common.web import serve_in_thread
from stack.fleet import write_fleet
from stack.processes import ManagedProcess, free_port, wait_until
from stack.servers import Prometheus, prometheus_config
from tests.harness.backfill import History, create_blocks

pytestmark = pytest.mark.slow

STEP = 300
DAYS = 2
GIB = 1 << 30
TOKEN = "decisions-test-token"
REPO = Path(__file__).resolve().parents[1]
HOSTS = {"kvm-hot": (60, 1.0), "kvm-idle": (4, 0.05), "kvm-spare": (6, 1.0)}  # domains, cores each
FAILOVER_FOR = 3.0


def _uuids(node_xml: Path) -> list[str]:
    """The domains' UUIDs (the node file also holds networks and pools with their own)."""
    return [str(d.findtext("uuid")) for d in ET.parse(node_xml).getroot().iter("domain")]


def _cloud_vm(om: History, ts: np.ndarray, vm: str, util: float, tenant: str, group: str) -> None:
    ones = np.ones(ts.size)
    info = {"vm_id": vm, "provider": "aws", "host": "", "tenant": tenant, "novacron_group": group}
    om.add("novacron_vm_info", {**info, "instance_type": "m5.large", "vm_name": vm}, ts, ones)
    om.add("novacron_vm_vcpus", {"vm_id": vm}, ts, 2 * ones)
    om.add("novacron_vm_memory_bytes", {"vm_id": vm}, ts, 8 * GIB * ones)
    om.add("novacron_vm_cpu_utilisation_ratio", {"vm_id": vm}, ts, util * ones)
    om.add("novacron_vm_memory_utilisation_ratio", {"vm_id": vm}, ts, 0.4 * ones)


def build_history(now: float, fleets: dict[str, Path], path: Path) -> None:
    # The newest sample a second before `now`, not on the 5-minute grid: each decision cycle reads the CPU
    # counters with rate() over 15 minutes, exact only while that sample is less than 1.1 steps (330 s)
    # old; a grid-aligned one could be 299 s old already, and the hot host would cool down mid-module.
    end = math.floor(now) - 1
    ts = np.arange(end - DAYS * 86400, end + 1, STEP, dtype=float)
    om = History()
    for host, node in fleets.items():
        cores = HOSTS[host][1]
        for vm in _uuids(node):
            om.add("novacron_vm_cpu_seconds_total", {"vm_id": vm}, ts, cores * (ts - ts[0]))
    for i in range(3):
        _cloud_vm(om, ts, f"busy-{i}", 0.95, "good", "busy")
        _cloud_vm(om, ts, f"quiet-{i}", 0.10, "good", "quiet")
        _cloud_vm(om, ts, f"steady-{i}", 0.50, "bad", "steady")
    for i in range(3):
        state = np.ones(ts.size)
        if i == 0:
            state[ts > end - 12 * 3600] = 6  # crashed for the last 12 hours
        om.add("novacron_vm_state", {"vm_id": f"steady-{i}"}, ts, state)
        for g in ("busy", "quiet"):
            om.add("novacron_vm_state", {"vm_id": f"{g}-{i}"}, ts, np.ones(ts.size))
    om.write(path)


def _exporter(host: str, node: Path, port: int, tmp: Path) -> ManagedProcess:
    argv = [
        sys.executable,
        "-m",
        "exporters.libvirt.main",
        f"--libvirt.uri=test://{node}",
        f"--libvirt.hostname={host}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--libvirt.timeout=4s",
    ]
    log = tmp / f"{host}-{time.monotonic_ns()}.log"
    return ManagedProcess(host, argv, log, ready_url=f"http://127.0.0.1:{port}/-/healthy", cwd=REPO)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("decisions")
    fleets = {
        h: Path(write_fleet(tmp / h / "node.xml", n, seed=i, host=h)[len("test://") :])
        for i, (h, (n, _)) in enumerate(HOSTS.items())
    }
    for node in fleets.values():  # the scaling groups here are the cloud VMs'; KVM VMs belong to none
        node.write_text(re.sub(r"<novacron:group>[^<]*</novacron:group>", "", node.read_text()))
    history = tmp / "history.om"
    build_history(time.time(), fleets, history)
    prom_dir = tmp / "prometheus"
    (prom_dir / "data").mkdir(parents=True)
    create_blocks(history, prom_dir / "data")
    ports = {h: free_port() for h in HOSTS}
    jobs = [
        {"job_name": f"libvirt-{h}", "static_configs": [{"targets": [f"127.0.0.1:{p}"]}]}
        for h, p in ports.items()
    ]
    prices = tmp / "prices.yml"
    prices.write_text(
        yaml.safe_dump(
            {
                "instance_types": {"aws": {"m5.large": {"hourly": 0.096, "vcpus": 2, "memory_gib": 8}}},
                "kvm_hosts": {"default": {"monthly": 1000}},
            }
        )
    )
    (tmp / "token").write_text(TOKEN)
    cfg_file = tmp / "analytics.yml"
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "analysis": {"lookback": f"{DAYS}d", "rate_window": "15m", "horizons": ["1h", "6h"]},
                "cost": {"catalogue_file": str(prices)},
                "api": {"token_file": str(tmp / "token")},
                # The test driver reports no free host memory: count what its VMs were given as used.
                "queries": {"host_memory_used_bytes": "max by (host) (novacron_host_memory_allocated_bytes)"},
                "decisions": {
                    "scaling": {"scale_out_window": "2s", "scale_in_window": "2s", "cooldown": "1h"},
                    "health": {"failover_for": f"{FAILOVER_FOR}s"},
                    "slo": {"objective": 0.99, "window": f"{DAYS}d", "burn_windows": ["1h", "6h"]},
                    "placement": {"sizes": [{"name": "small", "vcpus": 2, "memory_gib": 4}]},
                },
            }
        )
    )
    procs = {h: _exporter(h, fleets[h], ports[h], tmp).start() for h in HOSTS}
    config = prometheus_config(jobs, scrape_interval="1s")
    try:
        with Prometheus(prom_dir, config, extra_args=["--query.lookback-delta=1h"]) as prom:
            prom.wait_for('count(up{job=~"libvirt-.*"} == 1) == 3', timeout=30)
            prom.wait_for('count(rate(novacron_vm_cpu_seconds_total{job=""}[15m]) > 0) >= 70', timeout=30)
            cfg = load_config(str(cfg_file))
            cfg = replace(cfg, prometheus=replace(cfg.prometheus, url=prom.url))
            app, loop = build(cfg, None, "/metrics")
            port = free_port()
            server = serve_in_thread(app, f"127.0.0.1:{port}")
            try:
                assert loop.once()
                yield {
                    "prom": prom,
                    "loop": loop,
                    "url": f"http://127.0.0.1:{port}",
                    "procs": procs,
                    "ports": ports,
                    "fleets": fleets,
                    "tmp": tmp,
                }
            finally:
                server.shutdown()
                server.server_close()
    finally:
        for p in procs.values():
            p.stop()


def _decide(loop: Loop) -> bool:
    """One decision cycle on the last analysis (the hook the analysis loop runs after each cycle)."""
    assert loop.state.results is not None
    loop.after[0](loop.state.results)
    return True


def _metrics(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _api(url: str, path: str, **params: Any) -> dict[str, Any]:
    r = requests.get(
        f"{url}/api/v1/decisions/{path}",
        params=params,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_hot_host_gets_moves_to_hosts_with_room(env: dict[str, Any]) -> None:
    m = _metrics(env["url"])
    moves = [labels for labels, v in m["novacron_vm_migration_recommended"] if v == 1]
    assert moves, "kvm-hot (60 of 64 CPUs) must get migration proposals"
    assert {x["source_host"] for x in moves} == {"kvm-hot"}  # idle and spare hosts stay quiet
    assert {x["target_host"] for x in moves} <= {"kvm-idle", "kvm-spare"}
    assert {x["reason"] for x in moves} == {"hot"}
    plan = _api(env["url"], "migrations")["plan"]
    sim = plan["simulation"]
    assert "kvm-hot" in sim["overloaded_before"] and sim["overloaded_after"] == []
    assert sim["anti_affinity_violations"] == 0
    for host in ("kvm-idle", "kvm-spare"):
        assert sim["hosts"][host]["cpu_after"] <= 0.75 + 1e-9
    assert sim["hosts"]["kvm-hot"]["cpu_after"] <= 0.85 + 1e-9
    # The dry run of any moves, from the API: moving a VM onto the hot host makes nothing better.
    vm = plan["moves"][0]["vm_id"]
    r = requests.get(
        f"{env['url']}/api/v1/decisions/simulate",
        params={"move": f"{vm}:nowhere"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 400 and "unknown host" in r.json()["error"]


def test_scaling_signals_after_the_window_only(env: dict[str, Any]) -> None:
    loop = env["loop"]
    first = {s["group"]: s for s in _api(env["url"], "scaling")["groups"]}
    assert {g: s["direction"] for g, s in first.items()} == {
        "busy": "none",
        "quiet": "none",
        "steady": "none",
    }
    assert first["busy"]["utilisation"] == pytest.approx(0.95, abs=0.01)
    assert wait_until(
        lambda: _decide(loop) and _api(env["url"], "scaling")["groups"][0]["direction"] != "none", 15, 0.5
    )
    groups = {s["group"]: s for s in _api(env["url"], "scaling")["groups"]}
    assert groups["busy"]["direction"] == "out" and groups["busy"]["desired_vms"] == math.ceil(3 * 0.95 / 0.6)
    assert groups["quiet"]["direction"] == "in" and groups["quiet"]["desired_vms"] == 1  # ceil(3 x 0.1 / 0.6)
    assert groups["steady"]["direction"] == "none"
    m = _metrics(env["url"])
    sig = {(lab["group"], lab["direction"]): v for lab, v in m["novacron_group_scaling_signal"]}
    assert sig[("busy", "out")] == 1 and sig[("steady", "none")] == 1 and sig[("quiet", "in")] == 1
    _decide(loop)
    events = {lab["kind"]: v for lab, v in _metrics(env["url"])["novacron_decision_events_total"]}
    assert events["scale_out"] == 1 and events["scale_in"] == 1  # a held signal is one event


def test_tenant_slo_budget_and_event(env: dict[str, Any]) -> None:
    tenants = {t["tenant"]: t for t in _api(env["url"], "slo")["tenants"]}
    bad, good = tenants["bad"], tenants["good"]
    assert bad["availability"]["1h"] == pytest.approx(2 / 3, abs=0.01)
    assert bad["burn_rates"]["1h"] == pytest.approx((1 / 3) / 0.01, rel=0.05)
    assert bad["error_budget_remaining"] < 0
    assert good["error_budget_remaining"] == pytest.approx(1.0) and good["burn_rates"]["1h"] == 0
    _decide(env["loop"])
    m = _metrics(env["url"])
    events = {lab["kind"]: v for lab, v in m["novacron_decision_events_total"]}
    assert events["error_budget_exhausted"] == 1  # raised once, not once per cycle
    left = {lab["tenant"]: v for lab, v in m["novacron_tenant_slo_error_budget_remaining_ratio"]}
    assert left["bad"] < 0 and left["good"] == pytest.approx(1.0)


def test_placement_insights_and_tags(env: dict[str, Any]) -> None:
    offers = _api(env["url"], "placement", size="small")["placement"]["small"]
    targets = [o["target"] for o in offers]
    assert targets[0] == "kvm-idle" and "kvm-hot" not in targets and "m5.large" in targets
    assert offers[0]["monthly_cost"] == pytest.approx(1000 * (2 / 64 + 4 * GIB / (512 * GIB)) / 2)
    ins = _api(env["url"], "insights")["insights"]
    sugg = {s["vm_id"]: s for s in ins["threshold_suggestions"]}
    assert set(sugg) >= {"busy-0", "busy-1", "busy-2"} and not {"steady-0", "quiet-0"} & set(sugg)
    assert sugg["busy-0"]["suggested"] == pytest.approx(0.99)
    tags = {t["vm_id"]: t for t in ins["tags"]}
    assert tags["busy-0"]["criticality"] == "high" and tags["quiet-0"]["criticality"] == "medium"
    r = requests.get(
        f"{env['url']}/api/v1/decisions/slo",
        params={"nope": 1},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 400 and "nope" in r.json()["error"]
    assert requests.get(f"{env['url']}/api/v1/decisions/slo", timeout=10).status_code == 401


def _health(env: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in _api(env["url"], "health")["health"]["hosts"]}


def test_failover_after_the_hold_time_and_not_on_a_blip(env: dict[str, Any]) -> None:
    loop, prom, procs = env["loop"], env["prom"], env["procs"]
    _decide(loop)
    assert {h: x["score"] for h, x in _health(env).items()} == {
        "kvm-hot": 1.0,
        "kvm-idle": 1.0,
        "kvm-spare": 1.0,
    }
    spare_up = 'up{job="libvirt-kvm-spare"}'
    # A blip: the exporter goes away and is back before the hold time.
    procs["kvm-spare"].stop()
    prom.wait_for(f"{spare_up} == 0", timeout=20)
    t0 = time.monotonic()
    _decide(loop)
    assert _health(env)["kvm-spare"]["score"] == 0.0 and not _health(env)["kvm-spare"]["failover"]
    procs["kvm-spare"] = _exporter(
        "kvm-spare", env["fleets"]["kvm-spare"], env["ports"]["kvm-spare"], env["tmp"]
    ).start()
    prom.wait_for(f"{spare_up} == 1", timeout=20)
    _decide(loop)
    assert _health(env)["kvm-spare"]["score"] == 1.0
    while time.monotonic() - t0 < FAILOVER_FOR + 0.5:
        time.sleep(0.2)
    _decide(loop)
    assert not any(x["failover"] for x in _health(env).values())
    # A real failure: down for longer than the hold time.
    procs["kvm-spare"].stop()
    prom.wait_for(f"{spare_up} == 0", timeout=20)
    _decide(loop)
    assert wait_until(lambda: _decide(loop) and _health(env)["kvm-spare"]["failover"], FAILOVER_FOR + 30, 0.5)
    m = _metrics(env["url"])
    assert {lab["host"]: v for lab, v in m["novacron_host_failover_signal"]} == {
        "kvm-hot": 0,
        "kvm-idle": 0,
        "kvm-spare": 1,
    }
    evac = [lab for lab, v in m["novacron_vm_evacuation_target"] if v == 1]
    spare_vms = set(_uuids(env["fleets"]["kvm-spare"]))
    assert {x["vm_id"] for x in evac} == spare_vms  # every VM of the failed host has a target
    assert {x["target_host"] for x in evac} == {"kvm-idle"}  # not the hot host, not the failed one
    events = {lab["kind"]: v for lab, v in m["novacron_decision_events_total"]}
    assert events["failover"] == 1
