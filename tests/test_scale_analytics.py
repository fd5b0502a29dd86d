"""Two analytics sidecars `--shard 0/2` and `1/2` cover the fleet once; when one stops, the other adopts its
share through the heartbeat lease (analytics_sidecar/shard_lease.py) and gives it back when it returns."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from analytics_sidecar.shard_lease import adopted
from stack.plan import console_script
from stack.processes import ManagedProcess, free_port, wait_until
from tests.harness import fleet_prometheus, test_driver_fleet

pytestmark = pytest.mark.slow

VMS = 24


def test_adoption_goes_to_the_next_live_shard() -> None:
    assert adopted(0, 2, {0, 1}) == {0}
    assert adopted(0, 2, {0}) == {0, 1}
    assert adopted(1, 3, {1}) == {0, 1, 2}
    assert adopted(2, 3, {0, 2}) == {1, 2}  # shard 1 died: 2 is the next live one
    assert adopted(0, 3, {0, 2}) == {0}
    assert adopted(2, 4, {0, 2}) == {1, 2}
    assert adopted(0, 4, {0, 2}) == {0, 3}


def _vm_ids(url: str) -> set[str]:
    """The VMs a sidecar published results for at its last cycle."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "novacron_vm_workload_class":
            return {s.labels["vm_id"] for s in family.samples}
    return set()


def _sidecar(tmp: Path, prom_url: str, index: int, port: int) -> ManagedProcess:
    return ManagedProcess(
        f"analytics-{index}",
        [
            console_script("novacron-analytics"),
            "serve",
            f"--prometheus.url={prom_url}",
            f"--shard={index}/2",
            "--interval=2s",
            "--shard.lease-ttl=5s",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp / f"analytics-{index}-{port}.log",
        ready_url=f"http://127.0.0.1:{port}/metrics",
        url=f"http://127.0.0.1:{port}",
    )


def test_two_sidecars_cover_the_fleet_once_and_take_over(tmp_path: Path) -> None:
    uri = test_driver_fleet(tmp_path, VMS, seed=3)
    ports = [free_port(), free_port()]
    exporter, prom = fleet_prometheus(tmp_path, uri, VMS, ports)
    procs: list = [exporter, prom]
    try:
        sidecars = [_sidecar(tmp_path, prom.url, i, ports[i]).start() for i in range(2)]
        procs += sidecars

        def split_once() -> bool:
            a, b = _vm_ids(sidecars[0].url), _vm_ids(sidecars[1].url)
            return bool(a) and bool(b) and not a & b and len(a | b) == VMS

        assert wait_until(split_once, timeout=90, interval=0.5), [_vm_ids(s.url) for s in sidecars]

        sidecars[1].stop()
        assert wait_until(lambda: len(_vm_ids(sidecars[0].url)) == VMS, timeout=60, interval=0.5)
        prom.wait_for(
            'novacron_analytics_shard_owned{shard_index="1"}', predicate=lambda r: len(r) == 1, timeout=60
        )

        back = _sidecar(tmp_path, prom.url, 1, ports[1]).start()
        procs.append(back)
        sidecars[1] = back
        assert wait_until(split_once, timeout=90, interval=0.5), [_vm_ids(s.url) for s in sidecars]
    finally:
        for proc in reversed(procs):
            proc.stop()
