"""Cloud exporter as a whole: the command line (config errors, serving from moto) and a real Prometheus
scraping it next to the libvirt exporter, with one PromQL query returning VMs of all four sources."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from exporters.cloud.config import parse_config
from exporters.cloud.main import build_app, build_refreshers
from exporters.cloud.providers.aws import AwsProvider
from exporters.cloud.providers.azure import AzureProvider
from exporters.cloud.providers.gcp import GcpProvider
from exporters.cloud.refresh import RefreshScheduler
from exporters.common.web import serve_in_thread
from tests.fakes import aws_seed
from tests.fakes.azure_metrics import AzureFake, StaticTokenCredential
from tests.fakes.gcp_monitoring import GcpMonitoringFake
from tests.harness import ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "exporters.cloud.main"]
REGION = "ap-southeast-1"  # no other module seeds it on the session moto server
SUB = "11111111-2222-3333-4444-555555555555"
FAST = {"period": "1m", "delay": "0s", "window": "10m"}


@pytest.fixture(scope="module")
def moto(moto_server: ManagedProcess) -> Iterator[str]:
    """The session's moto server; this module alone uses REGION. Credentials in the env for the SDK chain."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in aws_seed.CREDS_ENV.items():
            mp.setenv(k, v)
        url = aws_seed.endpoint_of(moto_server)
        ids = aws_seed.launch(url, REGION, 4, {"env": "prod", "tenant": "acme"})
        minute = math.floor(time.time() / 60) * 60
        aws_seed.put(url, REGION, aws_seed.history(ids, {"CPUUtilization": 50.0}, minute - 300, minute, 60))
        yield url


def write_config(tmp_path: Path, providers: list[dict[str, Any]], **top: Any) -> Path:
    path = tmp_path / "cloud.yml"
    path.write_text(yaml.safe_dump({"refresh_interval": "2s", **top, "providers": providers}))
    return path


def aws_section(url: str) -> dict[str, Any]:
    return {
        "type": "aws",
        "account": "123456789012",
        "regions": [REGION],
        "endpoint_url": url,
        "discovery": {"tags": {"env": "prod"}},
        "defaults": FAST,
    }


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"providers": []}, "providers"),
        ({"refresh_interval": "soon", "providers": [{"type": "aws"}]}, "refresh_interval"),
        ({"providers": [{"type": "oracle"}]}, "providers[0].type"),
        (
            {"providers": [{"type": "aws", "account": "1", "regions": ["x"], "access_key": "AKIA"}]},
            "providers[0].access_key",
        ),
        (
            {
                "providers": [
                    {
                        "type": "gcp",
                        "projects": ["p"],
                        "metrics": [{"name": "cpu/utilization", "delay": "-1"}],
                    }
                ]
            },
            "providers[0].metrics[0].delay",
        ),
        ({"backoff": {"attempts": 0}, "providers": [{"type": "aws"}]}, "backoff.attempts"),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, config: dict[str, Any], key: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [*CLI, f"--config.file={path}", "--config.check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert f"invalid configuration: {key}:" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("flag", "key"),
    [
        ("--web.telemetry-path=metrics", "web.telemetry-path"),
        ("--web.listen-address=:99999", "web.listen-address"),
    ],
)
def test_bad_web_flags_exit_2_naming_the_flag(
    flag: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporters.cloud.main import main

    example = REPO / "deploy" / "cloud-exporter" / "cloud-exporter.yml"
    with pytest.raises(SystemExit) as exit_info:
        main([f"--config.file={example}", flag])
    assert exit_info.value.code == 2
    assert f"invalid configuration: {key}:" in capsys.readouterr().err


def test_example_config_is_valid() -> None:
    example = REPO / "deploy" / "cloud-exporter" / "cloud-exporter.yml"
    out = subprocess.run(
        [*CLI, f"--config.file={example}", "--config.check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def test_command_line_serves_moto_data_and_stops_on_sigterm(tmp_path: Path, moto: str) -> None:
    port = free_port()
    config = write_config(tmp_path, [aws_section(moto)])
    proc = ManagedProcess(
        "cloud-exporter",
        [*CLI, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
        tmp_path / "exporter.log",
        ready_url=f"http://127.0.0.1:{port}/-/healthy",
        env=aws_seed.CREDS_ENV,
        cwd=REPO,
    )
    up = f'novacron_cloud_up{{account="123456789012",provider="aws",region="{REGION}"}} 1.0'
    with proc:
        text = ""

        def served() -> bool:
            # The whole expected answer in one scrape: the first refresh runs in the background.
            nonlocal text
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            return (
                "novacron_vm_cpu_utilisation_ratio{" in text
                and text.count("novacron_vm_info{") == 4
                and up in text
            )

        assert wait_until(served, timeout=60, interval=0.3), text
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=15) == 0
    assert "AWS_SECRET_ACCESS_KEY" not in (tmp_path / "exporter.log").read_text()


@pytest.fixture
def all_clouds(moto: str) -> Iterator[str]:
    """One in-process cloud exporter over AWS (moto), Azure (REST fake) and GCP (gRPC fake)."""
    minute = math.floor(time.time() / 60) * 60
    with AzureFake() as azure, GcpMonitoringFake("novacron-gcp") as gcp:
        for i in range(3):
            rid = azure.add_vm(SUB, "rg", f"az-{i}")
            azure.put(rid, "Percentage CPU", minute - 120, 20.0)
        for i in range(2):
            gcp.put(str(500 + i), "compute.googleapis.com/instance/cpu/utilization", minute - 60, 0.7)
        config = parse_config(
            {
                "providers": [
                    aws_section(moto),
                    {
                        "type": "azure",
                        "subscriptions": [SUB],
                        "regions": ["westeurope"],
                        "endpoint_url": azure.url,
                        "management_endpoint_url": azure.url,
                        "defaults": FAST,
                    },
                    {
                        "type": "gcp",
                        "projects": ["novacron-gcp"],
                        "endpoint_url": gcp.endpoint,
                        "defaults": FAST,
                    },
                ]
            },
            {"aws": AwsProvider, "azure": AzureProvider, "gcp": GcpProvider},
        )
        azure_provider = config.providers[1]
        assert isinstance(azure_provider, AzureProvider)
        azure_provider._credential = StaticTokenCredential()
        refreshers = build_refreshers(config)
        scheduler = RefreshScheduler(refreshers, 2.0)
        port = free_port()
        server = serve_in_thread(build_app(refreshers, "/metrics", None), f"127.0.0.1:{port}")
        scheduler.start()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            server.shutdown()
            scheduler.stop()
            for p in config.providers:
                p.close()


def test_prometheus_sees_vms_of_all_four_sources(
    tmp_path: Path, all_clouds: str, prometheus_factory: Callable[..., Any]
) -> None:
    lv_port = free_port()
    libvirt = ManagedProcess(
        "libvirt-exporter",
        [
            sys.executable,
            "-m",
            "exporters.libvirt.main",
            "--libvirt.uri=test:///default",
            f"--web.listen-address=127.0.0.1:{lv_port}",
        ],
        tmp_path / "libvirt.log",
        ready_url=f"http://127.0.0.1:{lv_port}/-/healthy",
        cwd=REPO,
    )
    with libvirt:
        prom = prometheus_factory(
            [
                {"job_name": "cloud", "static_configs": [{"targets": [all_clouds]}]},
                {"job_name": "libvirt", "static_configs": [{"targets": [f"127.0.0.1:{lv_port}"]}]},
            ]
        )

        # Each wait is for the whole expected answer: the providers refresh apart from each other.
        def by_provider(r: list[dict[str, Any]]) -> dict[str, float]:
            return {x["metric"]["provider"]: float(x["value"][1]) for x in r}

        def clouds(r: list[dict[str, Any]]) -> dict[str, float]:
            return {k: v for k, v in by_provider(r).items() if k != "kvm"}

        result = prom.wait_for(
            "count by (provider) (novacron_vm_info)",
            timeout=90,
            predicate=lambda r: len(r) == 4 and clouds(r) == {"aws": 4, "azure": 3, "gcp": 2},
        )
        assert by_provider(result)["kvm"] >= 1
        # The same normalised CPU name answers for every cloud VM, joined to its identity.
        expected_cpu = {"aws": 0.5, "azure": 0.2, "gcp": 0.7}

        cpu = prom.wait_for(
            "avg by (provider) (novacron_vm_cpu_utilisation_ratio"
            " * on(vm_id) group_left(provider) novacron_vm_info)",
            timeout=60,
            predicate=lambda r: by_provider(r) == pytest.approx(expected_cpu),
        )
        assert by_provider(cpu) == pytest.approx(expected_cpu)
        up = prom.wait_for(
            "novacron_cloud_up == 1",
            timeout=60,
            predicate=lambda r: {x["metric"]["provider"] for x in r} == {"aws", "azure", "gcp"},
        )
        assert {r["metric"]["provider"] for r in up} == {"aws", "azure", "gcp"}
