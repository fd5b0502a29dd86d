"""The shipped rules in a real Prometheus against the real libvirt exporter (test-driver fleet with shut-off
domains): the paging alert fires for exactly those VMs and reaches a webhook through the shipped Alertmanager
routing; every rule evaluates without error and the recording rules produce data from real exporter output."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_httpserver import HTTPServer

from stack.processes import ManagedProcess, free_port, wait_until
from stack.rules_cmd import RULES_DIR, default_rule_files
from stack.servers import Alertmanager, Prometheus, prometheus_config
from tests.harness import libvirt_exporter, test_driver_fleet

pytestmark = pytest.mark.slow

N_DOMAINS, SHUTOFF_EVERY = 12, 4  # domains 3, 7 and 11 are shut off
BRIDGE_URL = "http://127.0.0.1:9095"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, webhook: HTTPServer) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("rules-integration")
    uri = test_driver_fleet(tmp, n_domains=N_DOMAINS, n_hosts=1, seed=7, shutoff_every=SHUTOFF_EVERY)
    port = free_port()
    exporter = libvirt_exporter(tmp, uri, port=port)
    am_dir = tmp / "alertmanager"
    am_dir.mkdir()
    (am_dir / "bridge_token").write_text("integration-token")
    config = yaml.safe_load((RULES_DIR / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook.url_for("/webhook/alertmanager")
    started: list[ManagedProcess] = []
    try:
        started.append(exporter.start())
        am = Alertmanager(am_dir, config)
        started.append(am.start())
        # Prometheus and Alertmanager are scraped too, so the self-monitoring rules see real metrics.
        prom_port = free_port()
        jobs = {"libvirt": port, "prometheus": prom_port, "alertmanager": am.port}
        scrape = [
            {"job_name": j, "static_configs": [{"targets": [f"127.0.0.1:{p}"]}]} for j, p in jobs.items()
        ]
        config = prometheus_config(scrape, default_rule_files(), [f"127.0.0.1:{am.port}"], "1s", "1s")
        prom = Prometheus(tmp / "prometheus", config, port=prom_port)
        started.append(prom.start())
        yield {"prom": prom, "am": am, "rule_files": default_rule_files()}
    finally:
        for proc in reversed(started):
            proc.stop()


def test_vm_not_running_fires_for_exactly_the_shut_off_domains(stack: dict[str, Any]) -> None:
    prom: Prometheus = stack["prom"]
    shut_off = prom.wait_for(
        "novacron_vm_state == 5", timeout=60, predicate=lambda r: len(r) == N_DOMAINS // SHUTOFF_EVERY
    )
    firing = prom.wait_for(
        'ALERTS{alertname="NovaCronVMNotRunning", alertstate="firing"}',
        timeout=90,
        predicate=lambda r: len(r) == len(shut_off),
    )
    assert {a["metric"]["vm_id"] for a in firing} == {s["metric"]["vm_id"] for s in shut_off}
    for alert in firing:
        labels = alert["metric"]
        assert labels["severity"] == "critical" and labels["priority"] == "P1" and labels["type"] == "vm"
        assert labels["vm_name"] and labels["host"] and labels["provider"] == "kvm"


def test_the_page_reaches_the_webhook_through_the_shipped_routing(
    stack: dict[str, Any], webhook: HTTPServer
) -> None:
    deadline = time.monotonic() + 90
    pages: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not pages:
        bodies = [json.loads(req.data) for req, _ in webhook.log]
        pages = [b for b in bodies if b["commonLabels"].get("alertname") == "NovaCronVMNotRunning"]
        time.sleep(0.2)
    assert pages, f"no NovaCronVMNotRunning notification; got {[b['commonLabels'] for b in bodies]}"
    assert pages[0]["receiver"] == "bridge-page"
    assert pages[0]["status"] == "firing"
    assert pages[0]["alerts"][0]["annotations"]["runbook_url"].endswith("/NovaCronVMNotRunning.md")


def wait_all_groups_evaluated(prom: Prometheus, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Every group with an interval under a minute has evaluated at least once (30 s groups start late)."""
    deadline = time.monotonic() + timeout
    while True:
        groups = prom.api("rules")["groups"]
        pending = [
            g["name"] for g in groups if g["interval"] < 60 and g["lastEvaluation"].startswith("0001-01-01")
        ]
        if not pending:
            return list(groups)
        if time.monotonic() > deadline:
            raise AssertionError(f"rule groups never evaluated: {pending}")
        time.sleep(0.5)


def test_every_rule_evaluates_without_error_on_real_exporter_output(stack: dict[str, Any]) -> None:
    prom: Prometheus = stack["prom"]
    prom.wait_for('ALERTS{alertname="NovaCronVMNotRunning", alertstate="firing"}', timeout=90)
    groups = wait_all_groups_evaluated(prom)
    broken = [
        f"{g['name']}/{r.get('name')}: {r['lastError']}"
        for g in groups
        for r in g["rules"]
        if r.get("lastError")
    ]
    assert not broken, broken
    assert sum(len(g["rules"]) for g in groups) > 140
    # Prometheus scrapes itself every second: wait for that series to be there, then it must be 0.
    failures = prom.wait_for("sum(prometheus_rule_evaluation_failures_total)", timeout=60)
    assert float(failures[0]["value"][1]) == 0


@pytest.mark.parametrize(
    "expr",
    [
        "vm:novacron_vm_cpu_utilisation:ratio",
        "vm:novacron_vm_disk_read_bytes:rate1m",
        "host:novacron_host_cpu_utilisation:ratio",
        "host:novacron_host_memory_utilisation:ratio",
        "host:novacron_vms_running:count",
        "host_pool:novacron_storage_pool_used:ratio",
        'provider:novacron_vms:count{provider="kvm"}',
        'provider_state:novacron_vms:count{provider="kvm", state="5"}',
        'slo:sli_error:ratio{slo="monitoring-data"}',
        'slo:sli_error:ratio_rate5m{slo="vm-availability"}',
    ],
)
def test_recording_rules_produce_data_from_the_exporter(stack: dict[str, Any], expr: str) -> None:
    # Recording groups run every 30 s; the first evaluation can come up to one interval after start.
    assert stack["prom"].wait_for(expr, timeout=120)


def test_healthy_fleet_and_pipeline_raise_no_other_alert(stack: dict[str, Any]) -> None:
    prom: Prometheus = stack["prom"]
    prom.wait_for('ALERTS{alertname="NovaCronVMNotRunning", alertstate="firing"}', timeout=90)
    prom.wait_for('up{job="alertmanager"} == 1', timeout=60)
    wait_all_groups_evaluated(prom)  # otherwise "no other alert" would hold trivially
    # The test driver reports fixed host CPU counters and no free memory: its host CPU and memory alerts are
    # artefacts of the fake host, not of the rules, and are left out here (promtool tests cover them).
    expected = {
        "NovaCronVMNotRunning",
        "NovaCronWatchdog",
        "NovaCronHostHighCPU",
        "NovaCronHostMemoryPressure",
    }
    active: list[dict[str, str]] = []

    def only_expected() -> bool:
        # The rules API, not ALERTS: Prometheus writes ALERTS only from a group's second evaluation (after
        # restoring `for` state), a minute for the 30 s groups. It lists pending alerts too, so a scrape
        # missed on a loaded machine (up == 0 for a second) shows a pending TargetDown until the next good
        # one: the fleet must settle with no other alert, not be free of one at a single instant.
        active[:] = [a["labels"] for a in prom.api("alerts")["alerts"]]
        names = {a["alertname"] for a in active}
        return names <= expected and names >= {"NovaCronVMNotRunning", "NovaCronWatchdog"}

    assert wait_until(only_expected, timeout=60, interval=0.5), active


def test_rule_files_loaded_are_the_shipped_ones(stack: dict[str, Any]) -> None:
    files = {Path(g["file"]).name for g in stack["prom"].api("rules")["groups"]}
    assert files == {p.name for p in stack["rule_files"]}
