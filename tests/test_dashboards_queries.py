"""Every panel query, variables substituted, returns data from a real Prometheus scraping the real stack.

Every process here is the real one, on loopback:
- Prometheus 2.42 evaluating every rule file in rules/ (the dashboards read their recording rules);
- the libvirt exporter on a 20-domain test-driver fleet (every 5th domain shut off);
- the cloud exporter with its three providers: AWS on moto (EC2 discovery by tag, CloudWatch history with
  the CloudWatch agent's memory), Azure on the ARM/Azure Monitor fake (tests/fakes/azure_metrics.py; the
  exporter's azure-identity default chain gets its token from a local managed-identity endpoint), GCP on the
  Cloud Monitoring gRPC fake (tests/fakes/gcp_monitoring.py); each fake throttles once, so the API error and
  throttling panels show the exporter's own counters;
- `novacron-analytics serve` reading this Prometheus, whose TSDB holds three days of history for the live
  series (backfilled with `promtool tsdb create-blocks-from openmetrics` under the exact labels the scrapes
  give them): its recommendations, forecasts, baselines, anomaly scores, consolidation and time to
  exhaustion come from its own analysis and are scraped back;
- Alertmanager (clustered) receiving an always-firing test alert and the shipped rules' alerts, delivering
  through its webhook to `novacron-alert-bridge` (SQLite), which emails an SMTP sink (aiosmtpd), so the
  bridge's lifecycle, delivery and latency metrics are real.
Nothing is served from a fixed exposition. The history is the one synthetic part: the past of the live series
(CPU and network counters, cloud utilisation, host and pool usage, and the balloon statistics a real QEMU
guest reports and the test driver does not), because the sidecar needs days of it before it recommends,
classifies or forecasts.

Gap stated exactly (any other empty query fails): memory utilisation of a test-driver VM, because libvirt's
test driver reports no balloon statistics live. VM detail of an AWS, Azure or GCP VM has no gap: the cloud
exporter exports the size of every cloud VM's instance type, so the sidecar analyses them all.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml

from dashboards.catalog import build_all
from dashboards.evaluate import Prometheus as PromClient
from dashboards.evaluate import run_dashboard, variable_options
from stack.processes import ManagedProcess, free_port, wait_until
from stack.servers import Prometheus, prometheus_config
from tests.fakes import aws_seed
from tests.fakes.azure_metrics import TOKEN as AZURE_TOKEN
from tests.fakes.azure_metrics import AzureFake
from tests.fakes.gcp_monitoring import GcpMonitoringFake
from tests.harness import libvirt_exporter as harness_libvirt_exporter
from tests.harness import start_alertmanager, start_smtp, test_driver_fleet
from tests.harness.azure_identity import ManagedIdentityEndpoint
from tests.harness.backfill import History, Sample, create_blocks, grid, parse_exposition

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DASHBOARD_RULES = [REPO / "rules" / "dashboards.rules.yml"]
KVM_HOST = "kvm00"
AWS_REGION = "ap-southeast-2"  # a region no other test seeds on the shared moto server
AZURE_SUB = "00000000-0000-0000-0000-0000000d0a5b"
AZURE_REGION = "westeurope"
GCP_PROJECT = "novacron-dashboards"
GCP_REGION = "europe-west1"
GCP_CE = "compute.googleapis.com/instance/"
HISTORY_DAYS = 3  # the sidecar needs two days before it calls a VM idle or learns a daily baseline
STEP = 300.0
ALWAYS_FIRING = """groups:
  - name: dashboards-test
    rules:
      - alert: DashboardsTestAlwaysFiring
        expr: vector(1)
        labels: {severity: warning}
"""


# ---- the cloud side: fakes seeded with a few minutes of data, one exporter for the three providers -------


def _minutes(back: int) -> list[int]:
    now = math.floor(time.time() / 60) * 60
    return [now - 60 * i for i in range(1, back + 1)]


def seed_azure(fake: AzureFake) -> None:
    rid = fake.add_vm(AZURE_SUB, "rg-web", "web-az-1", size="Standard_D2s_v5", tags={"tenant": "globex"})
    values = {
        "Percentage CPU": 41.0,
        "Network In Total": 6e6,
        "Network Out Total": 3e6,
        "Disk Read Bytes": 1e6,
        "Disk Write Bytes": 2e6,
        "Disk Read Operations/Sec": 20.0,
        "Disk Write Operations/Sec": 30.0,
        "Available Memory Percentage": 40.0,
        "VmAvailabilityMetric": 1.0,
    }
    for ts in _minutes(20):
        for metric, value in values.items():
            fake.put(rid, metric, float(ts), value)
    fake.throttle_next = 1  # one 429: the exporter retries it and counts the throttling


GCP_VM = "4412345678901234567"


def seed_gcp(fake: GcpMonitoringFake) -> None:
    iid = GCP_VM
    labels = {"name": "web-gcp-1", "zone": f"{GCP_REGION}-b", "machine_type": "n2-standard-2"}
    labels_user: dict[str, Any] = {**labels, "user_labels": {"tenant": "acme"}}
    values = {"cpu/utilization": 0.45, "network/received_bytes_count": 5e4, "network/sent_bytes_count": 2e4}
    values.update({"disk/read_bytes_count": 1e5, "disk/write_bytes_count": 2e5})
    values.update({"disk/read_ops_count": 5.0, "disk/write_ops_count": 9.0})
    for ts in _minutes(20):
        for metric, value in values.items():
            fake.put(iid, GCP_CE + metric, ts, value, **labels_user)
        fake.put(
            iid,
            "agent.googleapis.com/memory/percent_used",
            ts,
            55.0,
            metric_labels={"state": "used"},
            **labels_user,
        )
    fake.throttle_next = 1  # one RESOURCE_EXHAUSTED


def seed_aws(moto: ManagedProcess) -> list[str]:
    url = aws_seed.endpoint_of(moto)
    ids = aws_seed.launch(url, AWS_REGION, 3, {"env": "dashboards", "tenant": "acme"}, itype="t3.medium")
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
    return ids


def cloud_exporter(
    tmp: Path,
    moto: ManagedProcess,
    azure: AzureFake,
    gcp: GcpMonitoringFake,
    identity: ManagedIdentityEndpoint,
) -> ManagedProcess:
    window = {"period": "1m", "delay": "1m", "window": "10m"}
    config = {
        "refresh_interval": "5s",
        "backoff": {"base": 0.05, "max": 0.2, "attempts": 3},
        "providers": [
            {
                "type": "aws",
                "account": "123456789012",
                "regions": [AWS_REGION],
                "endpoint_url": aws_seed.endpoint_of(moto),
                "discovery": {"tags": {"env": "dashboards"}},
                "extra_namespaces": ["CWAgent"],
                "concurrency": 1,
                "defaults": window,
            },
            {
                "type": "azure",
                "subscriptions": [AZURE_SUB],
                "regions": [AZURE_REGION],
                "endpoint_url": azure.url,
                "management_endpoint_url": azure.url,
                "metrics": [
                    "Percentage CPU",
                    "Network In Total",
                    "Network Out Total",
                    "Disk Read Bytes",
                    "Disk Write Bytes",
                    "Disk Read Operations/Sec",
                    "Disk Write Operations/Sec",
                    "Available Memory Percentage",
                    "VmAvailabilityMetric",
                ],
                "defaults": window,
            },
            {
                "type": "gcp",
                "projects": [GCP_PROJECT],
                "regions": [GCP_REGION],
                "endpoint_url": gcp.endpoint,
                "metrics": [
                    "cpu/utilization",
                    "network/received_bytes_count",
                    "network/sent_bytes_count",
                    "disk/read_bytes_count",
                    "disk/write_bytes_count",
                    "disk/read_ops_count",
                    "disk/write_ops_count",
                    "memory/percent_used",
                ],
                "defaults": window,
            },
        ],
    }
    path = tmp / "cloud-exporter.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    return ManagedProcess(
        "cloud-exporter",
        [
            str(BIN / "novacron-cloud-exporter"),
            "--config.file",
            str(path),
            "--web.listen-address",
            f"127.0.0.1:{port}",
        ],
        tmp / "cloud-exporter.log",
        ready_url=f"http://127.0.0.1:{port}/metrics",
        env={**aws_seed.CREDS_ENV, **identity.env},
        url=f"127.0.0.1:{port}",
    )


def libvirt_exporter(tmp: Path) -> ManagedProcess:
    uri = test_driver_fleet(tmp, n_domains=20, n_hosts=1, seed=3, shutoff_every=5)
    proc = harness_libvirt_exporter(tmp, uri, f"--libvirt.hostname={KVM_HOST}")
    return replace(proc, url=proc.url.removeprefix("http://"))  # this module's processes: host:port


def page_when(url: str, done: Any, timeout: float = 60.0) -> list[Sample]:
    """The exporter's samples once `done(samples)` holds (the cloud exporter refreshes in the background)."""
    found: list[list[Sample]] = [[]]

    def check() -> bool:
        found[0] = parse_exposition(requests.get(f"http://{url}/metrics", timeout=10).text)
        return bool(done(found[0]))

    assert wait_until(check, timeout, interval=0.5), f"{url}: {sorted({s.name for s in found[0]})}"
    return found[0]


# ---- three days of history for the live series -----------------------------------------------------------

CONSTANT = {  # identity, sizes and capacities: their past is their present value
    "novacron_vm_info",
    "novacron_vm_state",
    "novacron_vm_vcpus",
    "novacron_vm_memory_bytes",
    "novacron_vm_memory_utilisation_ratio",
    "novacron_host_cpus",
    "novacron_host_memory_bytes",
    "novacron_storage_pool_capacity_bytes",
}


NETWORK_COUNTERS = {"novacron_vm_network_receive_bytes_total", "novacron_vm_network_transmit_bytes_total"}


def network_rate(index: int) -> float:
    """Bytes per second: the near-zero CPU shape also moves almost nothing (the sidecar's idle rule)."""
    return 10.0 if index % 4 == 0 else 2e4


def utilisation(index: int, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CPU utilisation shapes the sidecar tells apart: near zero, diurnal, steady, growing."""
    day = 2 * np.pi * ts / 86400
    kind = index % 4
    if kind == 0:
        return np.full(ts.size, 0.01)
    if kind == 1:
        return 0.3 + 0.2 * np.sin(day + index)
    if kind == 2:
        return 0.2 + 0.02 * rng.standard_normal(ts.size)
    return 0.1 + 0.5 * (ts - ts[0]) / (ts[-1] - ts[0]) + 0.01 * rng.standard_normal(ts.size)


def build_history(pages: dict[tuple[str, str], list[Sample]], end: float, path: Path) -> Path:
    """Each live series the sidecar reads gets a past: constants stay, usage gets a shape per VM."""
    ts = grid(end, HISTORY_DAYS, STEP)
    rng = np.random.default_rng(11)
    history = History()
    for (job, instance), samples in pages.items():
        target = {"job": job, "instance": instance}
        vcpus = {s.labels["vm_id"]: s.value for s in samples if s.name == "novacron_vm_vcpus"}
        order = {vm: i for i, vm in enumerate(sorted(vcpus))}

        def shape(s: Sample, vcpus: dict[str, float] = vcpus, order: dict[str, int] = order) -> Any:
            vm = s.labels.get("vm_id", "")
            if s.name in CONSTANT:
                return np.full(ts.size, s.value)
            if s.name == "novacron_vm_cpu_seconds_total":  # a counter of busy core-seconds
                cores = vcpus.get(vm, 1.0) * np.clip(utilisation(order.get(vm, 0), ts, rng), 0, 1)
                return np.cumsum(cores * STEP)
            if s.name in NETWORK_COUNTERS:  # ends at the live value: no jump (or reset) at the seam
                return s.value - network_rate(order.get(vm, 1)) * (end - ts)
            if s.name == "novacron_vm_cpu_utilisation_ratio":  # cloud VMs: 20 % for days, busier now
                return utilisation(2, ts, rng)
            if s.name == "novacron_host_cpu_seconds_total":
                return np.cumsum(np.full(ts.size, 8.0 * STEP))
            if s.name == "novacron_host_memory_free_bytes":  # used memory grows 1 GiB a day
                return np.maximum(s.value, 0) + (end - ts) / 86400 * (1 << 30)
            if s.name == "novacron_storage_pool_available_bytes":  # the pool fills 1 GiB a day
                return s.value + (end - ts) / 86400 * (1 << 30)
            return None

        history.add_like(samples, target, ts, shape)
        if job == "novacron-libvirt":
            balloon(history, samples, target, ts)
    return history.write(path)


def balloon(history: History, samples: list[Sample], target: dict[str, str], ts: np.ndarray) -> None:
    """The balloon statistics a real QEMU guest reports (the test driver has none) for the past days.

    The sidecar sizes memory from them; without memory usage it recommends nothing for a KVM VM, and
    consolidation (which packs KVM VMs at their recommended sizes) has nothing to pack.
    """
    for index, s in enumerate(x for x in samples if x.name == "novacron_vm_memory_bytes"):
        used = 0.3 + 0.05 * (index % 4)
        labels = {**s.labels, **target}
        history.add("novacron_vm_memory_available_bytes", labels, ts, np.full(ts.size, s.value))
        history.add("novacron_vm_memory_usable_bytes", labels, ts, np.full(ts.size, s.value * (1 - used)))


# ---- the alerting side: bridge (SQLite, email to an SMTP sink) behind a clustered Alertmanager -----------


def alert_bridge(tmp: Path, smtp_host: str, smtp_port: int, token_file: Path) -> ManagedProcess:
    config = {
        "channels": {
            "email": {
                "type": "email",
                "from": "novacron@example.test",
                "to": ["oncall@example.test"],
                "smtp": {"host": smtp_host, "port": smtp_port},
            }
        },
        "routing": {"default_channels": ["email"]},
        "auth": {"tokens": [{"name": "alertmanager", "role": "webhook", "token_file": str(token_file)}]},
        "delivery": {"worker_interval_seconds": 0.5},
    }
    (tmp / "bridge.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    return ManagedProcess(
        "alert-bridge",
        [
            str(BIN / "novacron-alert-bridge"),
            f"--web.listen-address=127.0.0.1:{port}",
            f"--config.file={tmp / 'bridge.yml'}",
            f"--storage.url=sqlite:///{tmp / 'bridge.db'}",
        ],
        tmp / "bridge.log",
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env={"NOVACRON_BRIDGE_ADMIN_TOKEN": "dashboards-admin-token-0123456789"},
        url=f"127.0.0.1:{port}",
    )


def alertmanager_config(bridge: str, token_file: Path) -> dict[str, Any]:
    hook = {
        "url": f"http://{bridge}/webhook/alertmanager",
        "send_resolved": True,
        "http_config": {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}},
    }
    return {
        "route": {
            "receiver": "bridge",
            "group_wait": "1s",
            "group_interval": "5s",
            "group_by": ["alertname"],
        },
        "receivers": [{"name": "bridge", "webhook_configs": [hook]}],
    }


def analytics_sidecar(tmp: Path, prom_url: str, port: int) -> ManagedProcess:
    token = tmp / "analytics-token"
    token.write_text("dashboards-analytics-token\n")
    config = {
        "analysis": {
            "lookback": f"{HISTORY_DAYS}d",
            "step": "5m",
            "chunk": "1d",
            "rate_window": "15m",
            "horizons": ["1h", "1d"],
        },
        "cost": {"catalogue_file": str(REPO / "deploy" / "analytics" / "prices.yml")},
        "api": {"token_file": str(token)},
    }
    (tmp / "analytics.yml").write_text(yaml.safe_dump(config))
    return ManagedProcess(
        "analytics",
        [
            str(BIN / "novacron-analytics"),
            "serve",
            f"--prometheus.url={prom_url}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--config.file={tmp / 'analytics.yml'}",
            f"--state.dir={tmp / 'analytics-state'}",
            "--interval=1h",  # one cycle at start is what the test needs
        ],
        tmp / "analytics.log",
        ready_url=f"http://127.0.0.1:{port}/metrics",
        url=f"127.0.0.1:{port}",
    )


def rules_every_second(out: Path) -> list[Path]:
    """The shipped rule files with each group's own interval dropped, so the test's global 1 s applies.

    A 30 s group whose first evaluation comes before the first scrape has no output for 30 s; at 1 s the
    rules are the same and their outputs are there as soon as their inputs are (as a 1 s scrape is to 15 s).
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for path in sorted((REPO / "rules").glob("*.rules.yml")):
        data = yaml.safe_load(path.read_text())
        for group in data.get("groups", []):
            group.pop("interval", None)
        paths.append(out / path.name)
        paths[-1].write_text(yaml.safe_dump(data, sort_keys=False))
    return paths


def clear_of_step_boundary(margin: float = 75.0) -> None:
    """Let live scraping start just after a 5-minute boundary when one is near.

    The sidecar reads on a 5-minute grid; its first cycle must see at most one live sample per VM (the newest
    point). Two (a grid point passed after the scrapes began) would teach the 30-minute phase bucket of the
    learned band the AWS VMs' jump before the newest point is scored, widening the band the test reads.
    Scraping start to first cycle takes ~7 s idle: the margin leaves room for a machine several times slower.
    """
    left = STEP - time.time() % STEP
    if left < margin:
        time.sleep(left + 1)


def flat_vms(page: list[Sample]) -> list[str]:
    """The running KVM VMs whose history is near-zero CPU and traffic (shape 0 of `utilisation`)."""
    running = {s.labels["vm_id"] for s in page if s.name == "novacron_vm_state" and s.value == 1}
    ordered = sorted(s.labels["vm_id"] for s in page if s.name == "novacron_vm_vcpus")
    return [vm for i, vm in enumerate(ordered) if i % 4 == 0 and vm in running]


def _vm_ids(samples: list[Sample], provider: str) -> list[str]:
    return sorted(
        s.labels["vm_id"]
        for s in samples
        if s.name == "novacron_vm_info" and s.labels.get("provider") == provider
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, moto_server: ManagedProcess) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("dashq")
    with ExitStack() as stack:
        azure = stack.enter_context(AzureFake(page_size=10))
        gcp = stack.enter_context(GcpMonitoringFake(GCP_PROJECT))
        identity = stack.enter_context(ManagedIdentityEndpoint(AZURE_TOKEN))
        seed_azure(azure)
        seed_gcp(gcp)
        aws_vms = seed_aws(moto_server)
        cloud = stack.enter_context(cloud_exporter(tmp, moto_server, azure, gcp, identity))
        libvirt = stack.enter_context(libvirt_exporter(tmp))
        cloud_page = page_when(
            cloud.url,
            lambda page: {"aws", "azure", "gcp"} <= {s.labels.get("provider") for s in page}
            and len([s for s in page if s.name == "novacron_vm_cpu_utilisation_ratio"]) == 5,
        )
        libvirt_page = page_when(libvirt.url, lambda page: _vm_ids(page, "kvm"))
        pages = {("novacron-libvirt", libvirt.url): libvirt_page, ("novacron-cloud", cloud.url): cloud_page}
        prom_dir = tmp / "prom"
        create_blocks(build_history(pages, time.time(), tmp / "history.om"), prom_dir / "data")

        smtp = stack.enter_context(start_smtp())
        token_file = tmp / "bridge-token"
        token_file.write_text("dashboards-webhook-token-0123456789\n")
        bridge = stack.enter_context(alert_bridge(tmp, smtp.host, smtp.port, token_file))
        am = stack.enter_context(
            start_alertmanager(tmp, alertmanager_config(bridge.url, token_file), cluster=True)
        )
        (tmp / "always.rules.yml").write_text(ALWAYS_FIRING)
        prom_port, sidecar_port = free_port(), free_port()
        jobs = [
            {"job_name": "novacron-libvirt", "static_configs": [{"targets": [libvirt.url]}]},
            {"job_name": "novacron-cloud", "static_configs": [{"targets": [cloud.url]}]},
            {
                "job_name": "novacron-analytics",
                "static_configs": [{"targets": [f"127.0.0.1:{sidecar_port}"]}],
            },
            {"job_name": "novacron-alert-bridge", "static_configs": [{"targets": [bridge.url]}]},
            {"job_name": "alertmanager", "static_configs": [{"targets": [f"127.0.0.1:{am.port}"]}]},
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}]},
        ]
        rule_files = [*rules_every_second(tmp / "rules"), tmp / "always.rules.yml"]
        config = prometheus_config(jobs, rule_files, [f"127.0.0.1:{am.port}"], "1s", "1s")
        clear_of_step_boundary()
        prom = stack.enter_context(Prometheus(prom_dir, config, port=prom_port))
        # The sidecar's first cycle reads the backfill and the first live samples of every VM (the cloud VMs
        # are busier now than in their history, so a live sample is told from the backfill by its value).
        prom.wait_for('count(up{job=~"novacron-libvirt|novacron-cloud"} == 1) == 2', timeout=60)
        prom.wait_for('count(novacron_vm_cpu_utilisation_ratio{job="novacron-cloud"} > 0.3) == 5', timeout=60)
        stack.enter_context(analytics_sidecar(tmp, prom.url, sidecar_port))
        prom.wait_for('count(novacron_baseline_upper{resource="cpu", vm_id=~"i-.*"}) == 3', timeout=180)
        for expr in (
            "novacron_vm_recommended_vcpus",
            "novacron_vm_cpu_forecast_cores",
            "novacron_baseline_upper",
            "novacron_consolidation_hosts",
            "provider_region_host_tenant_class:novacron_vm_workload_class:count",
            "provider_region_host_tenant:novacron_vm_efficiency_ratio:count",
            "slo:error_budget_remaining:ratio",
            'ALERTS{alertstate="firing"}',
            "alertmanager_cluster_members",
            # The bridge's counters appear with its first delivery; the panels rate() them, which needs two
            # samples inside the window, not just one.
            "rate(novacron_bridge_notifications_total[10s])",
            "rate(novacron_bridge_delivery_latency_seconds_bucket[10s])",
            "rate(novacron_cloud_api_throttled_total[1m])",
            "host:novacron_host_cpu_utilisation:ratio",
        ):
            prom.wait_for(expr, timeout=120)
        prom.wait_for("count_over_time(up[1m]) > 5", timeout=60)
        yield {
            "prom": prom,
            "kvm_vms": _vm_ids(libvirt_page, "kvm"),
            "flat_kvm_vms": flat_vms(libvirt_page),
            "running_kvm_vms": [
                s.labels["vm_id"] for s in libvirt_page if s.name == "novacron_vm_state" and s.value == 1
            ],
            "aws_vms": aws_vms,
            "cloud_vms": [*_vm_ids(cloud_page, "azure"), *_vm_ids(cloud_page, "gcp")],
            "smtp": smtp,
        }


def _check(prom_url: str, model: dict[str, Any], overrides: dict[str, str]) -> dict[str, list[str]]:
    """Per panel, the queries that failed or came back empty."""
    empty: dict[str, list[str]] = {}
    for result in run_dashboard(PromClient(prom_url), model, overrides, scrape_interval=1.0):
        if not result.has_data:
            empty.setdefault(result.panel, []).append(
                f"[{result.ref_id}] {result.error or 'no data'}: {result.expr}"
            )
    return empty


def _gaps(prom_url: str, model: dict[str, Any], overrides: dict[str, str]) -> set[tuple[str, str]]:
    """(panel, refId) of every query without data."""
    results = run_dashboard(PromClient(prom_url), model, overrides, scrape_interval=1.0)
    return {(r.panel, r.ref_id) for r in results if not r.has_data}


@pytest.mark.parametrize(
    "uid", sorted(b.model["uid"] for b in build_all() if b.model["uid"] != "novacron-vm-detail")
)
def test_every_query_returns_data(stack, uid: str) -> None:  # type: ignore[no-untyped-def]
    model = next(b.model for b in build_all() if b.model["uid"] == uid)
    overrides = {"host": KVM_HOST} if uid == "novacron-host-detail" else {}
    assert _check(stack["prom"].url, model, overrides) == {}


def test_vm_detail_for_kvm_and_cloud_vms(stack) -> None:  # type: ignore[no-untyped-def]
    model = next(b.model for b in build_all() if b.model["uid"] == "novacron-vm-detail")
    url = stack["prom"].url
    # The test driver reports no balloon statistics, so a KVM VM's memory utilisation may be empty.
    assert _gaps(url, model, {"vm": stack["kvm_vms"][0]}) <= {("Memory utilisation", "A")}
    assert _check(url, model, {"vm": stack["aws_vms"][0]}) == {}
    for vm_id in stack["cloud_vms"]:  # Azure, GCP: sized from their instance types, analysed like AWS VMs
        assert _check(url, model, {"vm": vm_id}) == {}, vm_id


def test_tenant_copies_return_data(stack) -> None:  # type: ignore[no-untyped-def]
    for item in build_all("acme"):
        overrides = {"vm": stack["aws_vms"][0]} if item.model["uid"].startswith("novacron-vm-detail") else {}
        assert _check(stack["prom"].url, item.model, overrides) == {}, item.model["uid"]


def test_write_back_is_the_live_sidecars(stack) -> None:  # type: ignore[no-untyped-def]
    """The analytics and alert panels read what the live sidecar and bridge computed, not fixed values."""
    prom = stack["prom"]
    jobs = {r["metric"]["job"] for r in prom.query("count by(job) (novacron_vm_recommended_vcpus)")}
    assert jobs == {"novacron-analytics"}
    # Every running KVM VM and every cloud VM was analysed and priced from the shipped catalogue.
    priced = {r["metric"]["vm_id"] for r in prom.query("novacron_vm_cost_per_month")}
    assert priced == set(stack["running_kvm_vms"]) | set(stack["aws_vms"]) | set(stack["cloud_vms"])
    # The KVM VMs given near-zero CPU and traffic for days are the ones the sidecar calls idle.
    idle = {r["metric"]["vm_id"] for r in prom.query("novacron_vm_idle == 1")}
    assert idle == set(stack["flat_kvm_vms"]) and idle
    # The AWS VMs ran at 20 % for days and run at 37 % now: above the band the sidecar learned.
    cpu = 'vm:novacron_vm_cpu_utilisation:ratio{vm_id=~"i-.*"}'
    above = f'{cpu} > on(vm_id) novacron_baseline_upper{{resource="cpu"}}'
    prom.wait_for(above, timeout=60, predicate=lambda r: len(r) == 3)  # a recording rule of the live data
    # Consolidation packed the KVM host's VMs; the bridge emailed the firing alerts through the SMTP sink.
    assert prom.query('novacron_consolidation_hosts{scenario="needed"} >= 1')
    # The fixture waited for the bridge's first notification, not for a delivered one scraped back.
    prom.wait_for('sum(novacron_bridge_notifications_total{result="delivered"}) >= 1', timeout=60)
    stack["smtp"].wait_for(timeout=60)  # an AssertionError if no e-mail arrives


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
    assert {AWS_REGION, AZURE_REGION, GCP_REGION} <= set(seen["region"])
    assert KVM_HOST in seen["host"] and {"acme", "globex"} <= set(seen["tenant"])
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
    from analytics_sidecar.config import PrometheusSettings
    from analytics_sidecar.reports.config import load_template
    from analytics_sidecar.reports.data import PrometheusClient, collect

    template = load_template(REPO / "analytics_sidecar" / "reports" / "templates" / "weekly-fleet.yaml", "t")
    data = collect(PrometheusClient(PrometheusSettings(url=stack["prom"].url)), template, time.time())
    for section in data.sections:
        for result in section.items:
            assert result.rows or result.series, f"{section.title}: {result.item.title}"
