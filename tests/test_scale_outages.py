"""Backend outage: the cloud exporter keeps serving while its cloud API (moto) is gone, says so through
novacron_cloud_up and the data age, and drops the target's VM series after stale_after rather than flat-lining
them. (libvirtd restarts are tested by the libvirt exporter's own suite, tests/test_libvirt_qemu.py.)"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stack.processes import ManagedProcess, free_port, wait_until
from tests.fakes import aws_seed
from tests.harness import start_moto

pytestmark = pytest.mark.slow

REGION = "sa-east-1"  # no other test uses it
N_VMS = 3


def _families(url: str) -> dict[str, list]:
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200
    return {f.name: f.samples for f in text_string_to_metric_families(resp.text)}


def _value(fams: dict[str, list], name: str) -> float | None:
    samples = fams.get(name) or []
    return samples[0].value if samples else None


def test_cloud_exporter_serves_through_an_api_outage(tmp_path: Path, monkeypatch) -> None:
    for k, v in aws_seed.CREDS_ENV.items():
        monkeypatch.setenv(k, v)
    moto = start_moto(tmp_path)
    try:
        url = aws_seed.endpoint_of(moto)
        ids = aws_seed.launch(url, REGION, N_VMS, {"env": "prod"})
        minute = math.floor(time.time() / 60) * 60
        aws_seed.put(url, REGION, aws_seed.history(ids, {"CPUUtilization": 40.0}, minute - 300, minute, 60))
        config = {
            "refresh_interval": "1s",
            "stale_after": "8s",
            "backoff": {"base": "100ms", "max": "200ms", "attempts": 1},
            "providers": [
                {
                    "type": "aws",
                    "account": "123456789012",
                    "regions": [REGION],
                    "endpoint_url": url,
                    "discovery": {"tags": {"env": "prod"}},
                    "defaults": {"period": "1m", "delay": "0s", "window": "10m"},
                }
            ],
        }
        (tmp_path / "cloud.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        exporter = ManagedProcess(
            "cloud-exporter",
            [
                sys.executable,
                "-m",
                "exporters.cloud.main",
                f"--config.file={tmp_path / 'cloud.yml'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            tmp_path / "cloud-exporter.log",
            ready_url=f"http://127.0.0.1:{port}/-/healthy",
            env=aws_seed.CREDS_ENV,
        )
        metrics = f"http://127.0.0.1:{port}/metrics"
        seen: list[dict[str, list]] = []

        def scrape_until(condition: Callable[[dict[str, list]], bool]) -> Callable[[], bool]:
            """A wait check that keeps the scrape it last read, to assert on that same answer."""

            def check() -> bool:
                seen[:] = [_families(metrics)]
                return condition(seen[0])

            return check

        with exporter.start():
            # The refresh sets the snapshot, then `up`: one scrape with both.
            assert wait_until(
                scrape_until(
                    lambda f: len(f.get("novacron_vm_info", [])) == N_VMS
                    and _value(f, "novacron_cloud_up") == 1.0
                ),
                timeout=60,
            ), seen

            moto.stop()  # the cloud API goes away
            # Still serving: up is 0, the last snapshot's VMs stay until stale_after. Checked on the scrape
            # that first says up 0: a later one may already be past stale_after on a slow machine.
            assert wait_until(scrape_until(lambda f: _value(f, "novacron_cloud_up") == 0.0), timeout=30), seen
            during = seen[0]
            assert len(during.get("novacron_vm_info", [])) == N_VMS
            assert during.get("novacron_cloud_data_age_seconds")
            # Past stale_after the VM series disappear (no flat line), the exporter still answers.
            assert wait_until(lambda: not _families(metrics).get("novacron_vm_info"), timeout=60)
            after = _families(metrics)
            assert _value(after, "novacron_cloud_up") == 0.0
            assert exporter.alive()
    finally:
        moto.stop()
