"""Every panel query, variables substituted, returns data from a real Prometheus scraping the real stack.

Real: Prometheus 2.42 evaluating every rule file in rules/, the libvirt exporter on a
test-driver fleet, the cloud exporter on AWS (moto: EC2 discovery by tag, CloudWatch history), Alertmanager
(clustered) and Prometheus scraping itself. Not in this stack, so served by a small exposition server with the
names and labels those components expose: Azure and GCP VMs with their cloud-exporter self-metrics, the
analytics sidecar's write-back, the alert bridge's metrics.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Response

from dashboards.catalog import build_all
from dashboards.evaluate import Prometheus as PromClient
from dashboards.evaluate import run_dashboard, variable_options
from stack.processes import ManagedProcess, free_port
from stack.servers import Prometheus, prometheus_config
from tests.fakes import aws_seed
from tests.harness import start_alertmanager, test_driver_fleet

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_RULES = [REPO / "rules" / "dashboards.rules.yml"]
EXPORTER = str(Path(sys.executable).parent / "novacron-libvirt-exporter")
CLOUD_EXPORTER = str(Path(sys.executable).parent / "novacron-cloud-exporter")
KVM_HOST = "kvm00"
AWS_REGION = "ap-southeast-2"  # a region no other test seeds on the shared moto server
CLOUD_VMS = [  # provider, vm_id, name, region, tenant (static; AWS VMs come from the real exporter)
    (
        "azure",
        "/subscriptions/s1/resourcegroups/rg/providers/microsoft.compute/virtualmachines/az1",
        "web-az-1",
        "westeurope",
        "globex",
    ),
    ("gcp", "4412345678901234567", "web-gcp-1", "europe-west1", "acme"),
]
ALWAYS_FIRING = """groups:
  - name: dashboards-test
    rules:
      - alert: DashboardsTestAlwaysFiring
        expr: vector(1)
        labels: {severity: warning}
"""


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


def start_cloud_exporter(tmp: Path, moto: ManagedProcess) -> tuple[ManagedProcess, list[str]]:
    """The real cloud exporter against moto: three tagged EC2 instances, ten minutes of CloudWatch data."""
    url = aws_seed.endpoint_of(moto)
    ids = aws_seed.launch(url, AWS_REGION, 3, {"env": "dashboards", "tenant": "acme"})
    now = time.time()
    metrics = {
        "CPUUtilization": 37.0,
        "NetworkIn": 6e6,
        "NetworkOut": 3e6,
        "DiskReadBytes": 1e6,
        "DiskWriteBytes": 2e6,
        "StatusCheckFailed_Instance": 0,
    }
    aws_seed.put(url, AWS_REGION, aws_seed.history(ids, metrics, now - 900, now - 60, 60))
    memory = aws_seed.history(ids, {"mem_used_percent": 55.0}, now - 900, now - 60, 60)
    aws_seed.put(url, AWS_REGION, memory, namespace="CWAgent")  # the CloudWatch agent's guest memory
    config = {
        "refresh_interval": "5s",
        "providers": [
            {
                "type": "aws",
                "account": "123456789012",
                "regions": [AWS_REGION],
                "endpoint_url": url,
                "discovery": {"tags": {"env": "dashboards"}},
                "extra_namespaces": ["CWAgent"],
                "concurrency": 1,
                "defaults": {"period": "1m", "delay": "1m", "window": "10m"},
            }
        ],
    }
    path = tmp / "cloud-exporter.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = ManagedProcess(
        "cloud-exporter",
        [CLOUD_EXPORTER, "--config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}"],
        tmp / "cloud-exporter.log",
        ready_url=f"http://127.0.0.1:{port}/metrics",
        env=dict(aws_seed.CREDS_ENV),
        url=f"127.0.0.1:{port}",
    )
    return proc, ids


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, moto_server: ManagedProcess) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("dashq")
    cloud, aws_ids = start_cloud_exporter(tmp, moto_server)
    uri = test_driver_fleet(tmp, n_domains=20, n_hosts=1, seed=3, shutoff_every=5)
    port = free_port()
    exporter = ManagedProcess(
        "libvirt-exporter",
        [
            EXPORTER,
            "--libvirt.uri",
            uri,
            "--libvirt.hostname",
            KVM_HOST,
            "--web.listen-address",
            f"127.0.0.1:{port}",
        ],
        tmp / "exporter.log",
        ready_url=f"http://127.0.0.1:{port}/metrics",
    )
    static = HTTPServer(host="127.0.0.1", port=free_port())
    rules = tmp / "always.rules.yml"
    rules.write_text(ALWAYS_FIRING)
    with exporter, cloud:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        kvm_vms = sorted(
            {
                line.split('vm_id="')[1].split('"')[0]
                for line in text.splitlines()
                if line.startswith("novacron_vm_info{")
            }
        )
        t0 = time.time()
        static.expect_request("/metrics").respond_with_handler(
            lambda _r: Response(
                static_exposition(kvm_vms, time.time() - t0, tuple(aws_ids)), content_type="text/plain"
            )
        )
        static.start()
        am_config = {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}
        try:
            with start_alertmanager(tmp, am_config, cluster=True) as am:
                prom_port = free_port()
                jobs = [
                    {"job_name": "novacron-libvirt", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
                    {
                        "job_name": "novacron-static",
                        "static_configs": [{"targets": [f"127.0.0.1:{static.port}"]}],
                    },
                    {"job_name": "novacron-cloud", "static_configs": [{"targets": [cloud.url]}]},
                    {"job_name": "alertmanager", "static_configs": [{"targets": [f"127.0.0.1:{am.port}"]}]},
                    {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}]},
                ]
                rule_files = [*sorted((REPO / "rules").glob("*.rules.yml")), rules]
                config = prometheus_config(jobs, rule_files, [f"127.0.0.1:{am.port}"], "1s", "1s")
                with Prometheus(tmp / "prom", config, port=prom_port).start() as prom:
                    for expr in (
                        "vm:novacron_vm_cpu_utilisation:ratio",
                        "slo:error_budget_remaining:ratio",
                        'ALERTS{alertstate="firing"}',
                        "rate(novacron_vm_cpu_seconds_total[5s])",
                        "alertmanager_cluster_members",
                        "host:novacron_host_cpu_utilisation:ratio",
                        "provider_region_host_tenant_le:novacron_vm_cpu_utilisation:count",
                        "provider_region_host_tenant_class:novacron_vm_workload_class:count",
                    ):
                        prom.wait_for(expr, timeout=60)
                    prom.wait_for("count_over_time(up[1m]) > 5", timeout=30)
                    prom.wait_for('novacron_vm_cpu_utilisation_ratio{vm_id=~"i-.*"}', timeout=60)
                    yield {"prom": prom, "kvm_vms": kvm_vms, "aws_vms": aws_ids}
        finally:
            static.stop()


def _check(prom_url: str, model: dict[str, Any], overrides: dict[str, str]) -> dict[str, list[str]]:
    """Per panel, the queries that failed or came back empty."""
    empty: dict[str, list[str]] = {}
    for result in run_dashboard(PromClient(prom_url), model, overrides, scrape_interval=1.0):
        if not result.has_data:
            empty.setdefault(result.panel, []).append(
                f"[{result.ref_id}] {result.error or 'no data'}: {result.expr}"
            )
    return empty


@pytest.mark.parametrize(
    "uid", sorted(b.model["uid"] for b in build_all() if b.model["uid"] != "novacron-vm-detail")
)
def test_every_query_returns_data(stack, uid: str) -> None:  # type: ignore[no-untyped-def]
    model = next(b.model for b in build_all() if b.model["uid"] == uid)
    overrides = {"host": KVM_HOST} if uid == "novacron-host-detail" else {}
    assert _check(stack["prom"].url, model, overrides) == {}


def test_vm_detail_for_kvm_and_cloud_vms(stack) -> None:  # type: ignore[no-untyped-def]
    model = next(b.model for b in build_all() if b.model["uid"] == "novacron-vm-detail")
    kvm = _check(stack["prom"].url, model, {"vm": stack["kvm_vms"][0]})
    # The test driver reports no balloon statistics, so a KVM VM's memory utilisation is the one gap there.
    assert set(kvm) <= {"Memory utilisation"}
    for vm_id in [stack["aws_vms"][0], *(vm[1] for vm in CLOUD_VMS)]:
        assert _check(stack["prom"].url, model, {"vm": vm_id}) == {}, vm_id


def test_tenant_copies_return_data(stack) -> None:  # type: ignore[no-untyped-def]
    for item in build_all("acme"):
        overrides = {"vm": stack["aws_vms"][0]} if item.model["uid"].startswith("novacron-vm-detail") else {}
        assert _check(stack["prom"].url, item.model, overrides) == {}, item.model["uid"]


def test_variable_queries_resolve(stack) -> None:  # type: ignore[no-untyped-def]
    prom = PromClient(stack["prom"].url)
    now = time.time()
    seen = {}
    for item in build_all():
        for var in item.model["templating"]["list"]:
            if var.get("type") != "query":
                continue
            query = var["query"].replace('"$provider"', '".*"').replace('"$region"', '".*"')
            query = query.replace('"$host"', '".*"').replace('"$tenant"', '".*"')
            seen[var["name"]] = variable_options(prom, query, var.get("regex", ""), now - 3600, now)
    assert {"aws", "azure", "gcp", "kvm"} <= set(seen["provider"])
    assert KVM_HOST in seen["host"] and "acme" in seen["tenant"] and AWS_REGION in seen["region"]
    assert set(stack["kvm_vms"]) <= set(seen["vm"])  # the regex extracts vm_id as the value
    assert "vm-availability" in seen["slo"] and {"host", "vm", "pool"} <= set(seen["kind"])


def test_cli_check(stack, capsys) -> None:  # type: ignore[no-untyped-def]
    from dashboards.cli import main

    url = stack["prom"].url
    assert (
        main(
            ["check", "--prometheus-url", url, "--scrape-interval", "1", "--var", f"vm={stack['aws_vms'][0]}"]
        )
        == 0
    )
    assert "novacron-fleet-overview:" in capsys.readouterr().out
    assert main(["check", "--prometheus-url", f"http://127.0.0.1:{free_port()}"]) == 1


def test_dashboard_rules_pass_promtool() -> None:
    import subprocess

    assert DASHBOARD_RULES
    out = subprocess.run(
        ["promtool", "check", "rules", *map(str, DASHBOARD_RULES)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_heavy_views_read_recording_rules() -> None:
    """Fleet-wide time series must not join per-VM series at every step (the 1,000-VM benchmark's lesson)."""
    for item in build_all():
        for panel in item.model["panels"]:
            for target in panel.get("targets", []):
                expr = target.get("expr", "")
                if target.get("range") and "group_left" in expr:
                    assert '="$vm"' in expr or '="$host"' in expr, f"{item.model['uid']}: {panel['title']}"


def test_shipped_report_template_returns_data(stack) -> None:  # type: ignore[no-untyped-def]
    """The report template shipped with the sidecar reads the same metrics and rules: every item has data."""
    from analytics_sidecar.reports.config import PrometheusConfig, load_template
    from analytics_sidecar.reports.data import PrometheusClient, collect

    template = load_template(REPO / "analytics_sidecar" / "reports" / "templates" / "weekly-fleet.yaml", "t")
    data = collect(PrometheusClient(PrometheusConfig(stack["prom"].url)), template, time.time())
    for section in data.sections:
        for result in section.items:
            assert result.rows or result.series, f"{section.title}: {result.item.title}"
