"""`novacron up --profile scale`: two Prometheus shards, VictoriaMetrics, an Alertmanager pair, PostgreSQL
with two bridges, two analytics shards, the metrics API and the cloud exporter (moto AWS) start, and every
target of both shards is up."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from stack.postgres import postgres_dir
from stack.processes import ProcessError, port_in_use, wait_until
from stack.scale import hashmod
from tests.fakes import aws_seed
from tests.harness import free_port_block

pytestmark = pytest.mark.slow

REGION = "ap-northeast-1"  # no other test uses it
CLOUD_VMS = 2

SPAN = 26  # the scale profile's ports all sit within base .. base+25 with the layout below


def _free_block() -> int:
    """A base port with SPAN free ports after it."""
    return free_port_block(SPAN)


def _targets(url: str) -> list[dict]:
    return list(requests.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"])


def _cloud_config(tmp_path: Path, moto_url: str) -> Path:
    """A cloud exporter config for moto's AWS with CLOUD_VMS tagged instances."""
    aws_seed.launch(moto_url, REGION, CLOUD_VMS, {"novacron": "managed"})
    config = {
        "refresh_interval": "2s",
        "providers": [
            {
                "type": "aws",
                "account": "123456789012",
                "regions": [REGION],
                "endpoint_url": moto_url,
                "discovery": {"tags": {"novacron": "managed"}},
                "defaults": {"period": "1m", "delay": "0s", "window": "10m"},
            }
        ],
    }
    path = tmp_path / "cloud.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start(
    tmp_path: Path, attempt: int, cloud_config: Path
) -> tuple[int, subprocess.Popen[bytes], list[str], Path]:
    """`novacron up --profile scale` on a fresh block of ports."""
    base = _free_block()
    config = {
        "scrape_interval": "1s",
        "evaluation_interval": "1s",
        "ports": {
            "prometheus": base,  # shard 1: +1, VictoriaMetrics: +2
            # gossip +4; peer +13, its gossip +14; PostgreSQL +23; long-term VM +24; vmalert +25
            "alertmanager": base + 3,
            "alert_bridge": base + 5,  # peer +15
            "analytics": base + 6,  # peer +7
            "libvirt_exporter": base + 8,
            "metrics_api": base + 11,  # the libvirt exporters may take +8 .. +10
            "cloud_exporter": base + 12,
        },
        "libvirt": {"system_uri": "off", "demo_hosts": 2, "demo_vms_per_host": 10},
        "analytics": {"interval": "5s"},
        "cloud": {"config_file": str(cloud_config)},
    }
    cfg_file = tmp_path / f"stack-{attempt}.yml"
    cfg_file.write_text(yaml.safe_dump(config))
    state = tmp_path / f"state-{attempt}"
    cmd = [sys.executable, "-m", "stack.cli", f"--config.file={cfg_file}", f"--state-dir={state}"]
    with (tmp_path / "up.log").open("wb") as log:
        proc = subprocess.Popen(
            [*cmd, "up", "--profile", "scale"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **aws_seed.CREDS_ENV},  # moto accepts any key; the SDK chain needs one
        )
    return base, proc, cmd, state


def _stop(proc: subprocess.Popen[bytes], state: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    shutil.rmtree(postgres_dir(state.resolve()), ignore_errors=True)


def test_scale_profile_starts_and_every_target_is_up(tmp_path: Path, moto_server) -> None:
    cloud_config = _cloud_config(tmp_path, aws_seed.endpoint_of(moto_server))
    # The profile uses fixed ports: on a busy machine another process may take one between our check and the
    # start ("Address already in use"); that is the test's race, not the stack's, so try a new block once.
    for attempt in range(2):
        base, proc, cmd, state = _start(tmp_path, attempt, cloud_config)
        # Until the last service (shard 1) listens or `up` gives up: a loaded machine starts it slowly, and
        # a port taken late must still get its retry.
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline and not port_in_use("127.0.0.1", base + 1):
            time.sleep(0.5)
        if proc.poll() is None or "in use" not in (tmp_path / "up.log").read_text():
            break
        _stop(proc, state)
    shards = [f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"]
    try:
        # Everything is up once the last service (shard 1) answers and every target of both shards is healthy.
        def all_up() -> bool:
            if proc.poll() is not None:  # a ProcessError ends the wait at once
                raise ProcessError((tmp_path / "up.log").read_text()[-3000:])
            targets = [t for url in shards for t in _targets(url)]
            return len(targets) > 10 and all(t["health"] == "up" for t in targets)

        assert wait_until(all_up, timeout=120, interval=1), [
            (t["labels"]["job"], t["labels"]["instance"], t["health"]) for u in shards for t in _targets(u)
        ]
        jobs = {t["labels"]["job"] for u in shards for t in _targets(u)}
        assert {
            "libvirt",
            "alertmanager",
            "alert-bridge",
            "analytics",
            "victoria-metrics",
            "metrics-api",
            "cloud",
            "vmalert",
        } <= jobs
        # The cloud exporter is a sharded job (on the shard hashmod picks), the metrics API on shard 0.
        cloud = f"127.0.0.1:{base + 12}"
        assert [
            t["labels"]["job"]
            for t in _targets(shards[hashmod(cloud, 2)])
            if t["labels"]["instance"] == cloud
        ]
        assert "metrics-api" in {t["labels"]["job"] for t in _targets(shards[0])}
        _check_metrics_api_reads_global_view(base, state)
        assert len([t for t in _targets(shards[0]) if t["labels"]["job"] == "alert-bridge"]) == 2
        assert len([t for t in _targets(shards[0]) if t["labels"]["job"] == "victoria-metrics"]) == 2
        # The libvirt exporters are split by hashmod; together the shards scrape each once.
        libvirt = sorted(
            t["labels"]["instance"] for u in shards for t in _targets(u) if t["labels"]["job"] == "libvirt"
        )
        assert libvirt == [f"127.0.0.1:{base + 8}", f"127.0.0.1:{base + 9}"]
        for i, url in enumerate(shards):
            for t in _targets(url):
                if t["labels"]["job"] == "libvirt":
                    assert hashmod(t["labels"]["instance"], 2) == i
        # The analytics sidecars read the global view (VictoriaMetrics) unchanged and split the 20 demo VMs
        # and moto's.
        sidecars = [f"http://127.0.0.1:{base + 6}/metrics", f"http://127.0.0.1:{base + 7}/metrics"]

        def analysed() -> list[float]:
            out = []
            for url in sidecars:
                for line in requests.get(url, timeout=10).text.splitlines():
                    if line.startswith("novacron_analytics_vms_analysed "):
                        out.append(float(line.split()[1]))
            return out

        total = 20 + CLOUD_VMS
        # Each sidecar reports the VMs of its last cycle (every 5 s), read from the global view.
        assert wait_until(lambda: sum(analysed()) == total and 0 not in analysed(), timeout=120), analysed()

        # The long-term VictoriaMetrics receives the recording-rule series of both shards and the fleet-wide
        # SLO series (federated from the global view), nothing raw but its federation scrape's own health.
        def longterm_names() -> list[str]:
            url = f"http://127.0.0.1:{base + 24}/api/v1/label/__name__/values"
            return list(requests.get(url, timeout=10).json()["data"])

        assert wait_until(lambda: any(":" in n for n in longterm_names()), timeout=90), longterm_names()
        assert wait_until(lambda: "slo:objective:ratio" in longterm_names(), timeout=120), longterm_names()
        raw = [n for n in longterm_names() if ":" not in n and n != "up" and not n.startswith("scrape_")]
        assert raw == []
        _check_fleet_rules_evaluated_once_on_the_global_view(base)
        status = subprocess.run([*cmd, "status"], capture_output=True, text=True, check=False)
        assert status.returncode == 0, status.stdout
        assert "alert-bridge-1" in status.stdout and "victoria-metrics" in status.stdout
    finally:
        _stop(proc, state)
    assert not port_in_use("127.0.0.1", base + 23), "PostgreSQL still runs after the stack stopped"


def _check_fleet_rules_evaluated_once_on_the_global_view(base: int) -> None:
    """vmalert, not the shards, records the SLO series: one copy per SLO in VictoriaMetrics, unsharded."""
    url = f"http://127.0.0.1:{base + 2}/api/v1/query"

    def objectives() -> list[dict]:
        resp = requests.get(url, params={"query": "last_over_time(slo:objective:ratio[1m])"}, timeout=10)
        return list(resp.json()["data"]["result"])

    # The SLO groups run every 30 s; vmalert starts each group within one interval.
    assert wait_until(lambda: len(objectives()) >= 4, timeout=90, interval=1), objectives()
    slos = [r["metric"]["slo"] for r in objectives()]
    assert len(slos) == len(set(slos)), slos
    assert all("prometheus_shard" not in r["metric"] for r in objectives()), objectives()


def _check_metrics_api_reads_global_view(base: int, state: Path) -> None:
    """The metrics API answers from VictoriaMetrics: the demo fleet's and moto's VMs, both shards."""
    token = (state / "metrics-api" / "admin.token").read_text().strip()

    def vms_by_provider() -> dict[str, float]:
        resp = requests.get(
            f"http://127.0.0.1:{base + 11}/api/v1/query",
            params={"query": "count by (provider) (last_over_time(novacron_vm_info[1m]))"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        resp.raise_for_status()
        return {r["metric"]["provider"]: float(r["value"][1]) for r in resp.json()["data"]["result"]}

    # Each shard's remote_write reaches VictoriaMetrics on its own schedule and the API caches answers
    # for 10 s, so wait for the whole fleet rather than for the first provider to appear.
    expected = {"aws": CLOUD_VMS, "kvm": 20}
    assert wait_until(lambda: vms_by_provider() == expected, timeout=90), vms_by_provider()
