"""libvirt exporter end to end on the test driver: the command, /probe, auth, 5,000 domains, Prometheus."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporters.common.web import serve_in_thread
from exporters.libvirt.main import build_parser, make_app, settings_from
from tests.harness import (
    ManagedProcess,
    free_port,
    start_prometheus,
    test_driver_fleet,
    test_driver_hosts,
    wait_until,
)
from tests.harness.tls import self_signed_cert

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXPORTER = [sys.executable, "-m", "exporters.libvirt.main"]

# The queries docs/libvirt-exporter.md shows operators; each must return data against a real Prometheus.
DOCUMENTED_QUERIES = [
    "novacron_libvirt_up == 1",
    "sum by (host) (novacron_vm_state == 1)",
    "rate(novacron_vm_cpu_seconds_total[30s]) * on(vm_id) group_left(vm_name, tenant) novacron_vm_info",
    "sum by (tenant) (novacron_vm_vcpus * on(vm_id) group_left(tenant) novacron_vm_info)",
    "novacron_host_cpu_overcommit_ratio > 0",
    "novacron_host_memory_overcommit_ratio",
    "novacron_storage_pool_available_bytes / novacron_storage_pool_capacity_bytes",
    "sum by (vm_id) (rate(novacron_vm_disk_read_bytes_total[30s]))",
    "sum by (vm_id) (rate(novacron_vm_network_receive_bytes_total[30s]))",
    'novacron_topology_edge{kind="runs"}',
    "novacron_libvirt_domains_timed_out == 0",
]


def parse(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> str:
    return test_driver_fleet(tmp_path_factory.mktemp("lv-fleet"), n_domains=100, seed=7, shutoff_every=10)


@pytest.fixture(scope="module")
def exporter(fleet: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real command line, as a child process, on the 100-domain fleet."""
    port = free_port()
    argv = [
        *EXPORTER,
        f"--libvirt.uri={fleet}",
        "--libvirt.hostname=kvm00",
        f"--web.listen-address=127.0.0.1:{port}",
        "--probe.allowed-targets=^test://",
        "--libvirt.timeout=4s",
    ]
    proc = ManagedProcess(
        "libvirt-exporter",
        argv,
        tmp_path_factory.mktemp("lv-exp") / "exporter.log",
        ready_url=f"http://127.0.0.1:{port}/-/healthy",
        cwd=REPO,
    )
    with proc:
        yield f"127.0.0.1:{port}"


def test_every_domain_is_exported_with_its_metadata(exporter: str) -> None:
    samples = parse(requests.get(f"http://{exporter}/metrics", timeout=10).text)
    assert samples["novacron_libvirt_up"][0].value == 1
    info = samples["novacron_vm_info"]
    assert len(info) == 100
    labels = info[0].labels
    assert labels["provider"] == "kvm" and labels["host"] == "kvm00"
    assert labels["tenant"] in {"acme", "globex", "initech", "umbrella"}
    assert labels["project"] == f"{labels['tenant']}-prod" and labels["flavor"].startswith("m1.")
    states = [s.value for s in samples["novacron_vm_state"]]
    assert states.count(5) == 10 and states.count(1) == 90
    # Running domains have CPU, vCPU, memory, disk and NIC series; shut-off ones only what libvirt knows.
    assert len(samples["novacron_vm_cpu_seconds_total"]) == 90
    assert len(samples["novacron_vm_memory_bytes"]) == 100
    assert {s.labels["device"] for s in samples["novacron_vm_disk_read_bytes_total"]} == {"vda"}
    assert len(samples["novacron_vm_network_receive_bytes_total"]) == 90
    # Per-VM series carry only vm_id (and the device): identity is joined from novacron_vm_info.
    assert set(samples["novacron_vm_cpu_seconds_total"][0].labels) == {"vm_id"}
    assert samples["novacron_host_cpus"][0].value == 64
    assert samples["novacron_host_vcpus_allocated"][0].value == sum(
        s.value for s in samples["novacron_vm_vcpus"] if _running(samples, s.labels["vm_id"])
    )
    assert samples["novacron_storage_pool_capacity_bytes"][0].labels == {"host": "kvm00", "pool": "default"}
    assert samples["novacron_network_active"][0].value == 1
    edges = samples["novacron_topology_edge"]
    assert sum(1 for e in edges if e.labels["kind"] == "runs") == 100
    assert any(e.labels["kind"] == "disk" and e.labels["target"] == "pool:kvm00/default" for e in edges)
    assert samples["novacron_libvirt_domains_timed_out"][0].value == 0
    assert "process_cpu_seconds_total" in samples


def _running(samples: dict[str, list[Any]], vm_id: str) -> bool:
    return any(s.labels["vm_id"] == vm_id and s.value == 1 for s in samples["novacron_vm_state"])


def test_probe_reads_another_target_and_refuses_bad_ones(exporter: str, tmp_path: Path) -> None:
    other = test_driver_fleet(tmp_path, n_domains=3, seed=99)
    resp = requests.get(f"http://{exporter}/probe", params={"target": other}, timeout=10)
    assert resp.status_code == 200
    samples = parse(resp.text)
    assert len(samples["novacron_vm_info"]) == 3
    assert "process_cpu_seconds_total" not in samples  # a probe answers for its target only
    for params, reason in [({}, "missing target"), ({"target": "qemu:///system"}, "not allowed")]:
        bad = requests.get(f"http://{exporter}/probe", params=params, timeout=10)
        assert bad.status_code == 400 and reason in bad.text
    missing = requests.get(
        f"http://{exporter}/probe", params={"target": f"test://{tmp_path}/nope.xml"}, timeout=10
    )
    assert missing.status_code == 200 and parse(missing.text)["novacron_libvirt_up"][0].value == 0


def test_bad_flags_exit_2_naming_the_flag() -> None:
    for flag, key in [
        ("--libvirt.timeout=soon", "libvirt.timeout"),
        ("--probe.max-targets=0", "probe.max-targets"),
        ("--web.listen-address=127.0.0.1:99999", "web.listen-address"),  # werkzeug would bind 34463
    ]:
        result = subprocess.run([*EXPORTER, flag], capture_output=True, text=True, cwd=REPO, timeout=30)
        assert result.returncode == 2, result.stderr
        assert key in result.stderr


def test_web_config_basic_auth_and_collector_flags(fleet: str, tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    web.write_text(yaml.safe_dump({"basic_auth_users": {"prom": hashed}}))
    port = free_port()
    args = build_parser().parse_args(
        [
            f"--libvirt.uri={fleet}",
            f"--web.config.file={web}",
            "--no-collector.block",
            "--no-collector.topology",
        ]
    )
    server = serve_in_thread(make_app(settings_from(args)), f"127.0.0.1:{port}")
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        assert requests.get(url, timeout=10).status_code == 401
        assert requests.get(url, auth=("prom", "wrong"), timeout=10).status_code == 401
        resp = requests.get(url, auth=("prom", "s3cret"), timeout=10)
        assert resp.status_code == 200
        samples = parse(resp.text)
        assert "novacron_vm_disk_read_bytes_total" not in samples and "novacron_topology_edge" not in samples
        assert len(samples["novacron_vm_cpu_seconds_total"]) == 90
        assert requests.get(f"http://127.0.0.1:{port}/probe?target=x", timeout=10).status_code == 401
    finally:
        server.shutdown()


def test_five_thousand_domains_are_all_exported(tmp_path: Path) -> None:
    uri = test_driver_fleet(tmp_path, n_domains=5000, seed=11)
    port = free_port()
    # One scrape of 5,000 domains takes ~5 s idle and came near the former 20 s deadline on a loaded 2-core
    # machine: a deadline well past that, so a slow machine times no domain out (deadlines have own tests).
    args = build_parser().parse_args([f"--libvirt.uri={uri}", "--libvirt.timeout=90s"])
    server = serve_in_thread(make_app(settings_from(args)), f"127.0.0.1:{port}")
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=180).text
    finally:
        server.shutdown()
    # Counting lines, not parsing 160,000 samples: the parser would dominate the test's run time.
    lines = text.splitlines()
    for name in (
        "novacron_vm_info{",
        "novacron_vm_cpu_seconds_total{",
        "novacron_vm_disk_write_bytes_total{",
    ):
        assert sum(1 for line in lines if line.startswith(name)) == 5000, name
    assert "novacron_libvirt_domains_timed_out 0.0" in lines


def test_prometheus_scrapes_both_modes_and_documented_queries_answer(exporter: str, tmp_path: Path) -> None:
    hosts = test_driver_hosts(tmp_path, n_domains=5, n_hosts=2, seed=40)
    probe_job = yaml.safe_load((REPO / "deploy/libvirt-exporter/prometheus-probe.yml").read_text())[
        "scrape_configs"
    ][0]
    probe_job.update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": hosts}])
    probe_job["relabel_configs"][-1]["replacement"] = exporter
    direct = {"job_name": "libvirt", "scrape_interval": "1s", "static_configs": [{"targets": [exporter]}]}
    with start_prometheus(tmp_path, scrape_configs=[direct, probe_job]) as prom:
        prom.wait_for('count(up{job="novacron-libvirt-probe"} == 1) == 2', timeout=60)
        prom.wait_for('count(novacron_vm_info{job="novacron-libvirt-probe"}) == 10', timeout=60)
        for query in DOCUMENTED_QUERIES:
            assert prom.wait_for(query, timeout=60), query


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path)


def test_tls_and_basic_auth_from_the_command_line(fleet: str, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
                "basic_auth_users": {"p": hashed},
            }
        )
    )
    port = free_port()
    argv = [
        *EXPORTER,
        f"--libvirt.uri={fleet}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.config.file={web}",
    ]
    url = f"https://127.0.0.1:{port}/metrics"
    proc = ManagedProcess("libvirt-exporter-tls", argv, tmp_path / "exporter.log", cwd=REPO)
    with proc:
        assert wait_until(
            lambda: requests.get(url, verify=str(cert), timeout=5).status_code == 401, timeout=60
        )
        resp = requests.get(url, verify=str(cert), auth=("p", "pw"), timeout=10)
        assert resp.status_code == 200 and "novacron_vm_info{" in resp.text
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(url.replace("https", "http"), timeout=5)  # no plain HTTP next to TLS


def test_bad_web_config_exits_2(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prom: plaintext\n")
    result = subprocess.run(
        [*EXPORTER, f"--web.config.file={web}"], capture_output=True, text=True, cwd=REPO, timeout=30
    )
    assert result.returncode == 2 and "basic_auth_users.prom" in result.stderr
    assert "plaintext" not in result.stderr  # the secret is not echoed


def test_probe_only_mode_serves_process_metrics_on_metrics(tmp_path: Path) -> None:
    port = free_port()
    args = build_parser().parse_args(["--libvirt.uri=", "--probe.allowed-targets=^test://"])
    server = serve_in_thread(make_app(settings_from(args)), f"127.0.0.1:{port}")
    try:
        samples = parse(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        assert "process_cpu_seconds_total" in samples and "novacron_libvirt_up" not in samples
        uri = test_driver_fleet(tmp_path, n_domains=2, seed=5)
        probed = parse(
            requests.get(f"http://127.0.0.1:{port}/probe", params={"target": uri}, timeout=10).text
        )
        assert len(probed["novacron_vm_state"]) == 2
    finally:
        server.shutdown()


NOVA_NODE = """<?xml version="1.0"?>
<node>
  <cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>2</threads><active>4</active></cpu>
  <memory>8388608</memory>
  <domain type="test">
    <name>instance-0000002a</name>
    <uuid>11111111-2222-3333-4444-555555555555</uuid>
    <metadata>
      <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
        <nova:name>web-frontend-1</nova:name>
        <nova:flavor name="m1.large"><nova:memory>2048</nova:memory></nova:flavor>
        <nova:owner>
          <nova:user uuid="u1">alice</nova:user><nova:project uuid="9f2c0a">shop</nova:project>
        </nova:owner>
      </nova:instance>
    </metadata>
    <memory unit="KiB">2097152</memory>
    <vcpu>6</vcpu>
    <os><type arch="x86_64">hvm</type></os>
    <devices>
      <disk type="file" device="disk">
        <source file="/srv/ceph-images/web-1.img"/><target dev="vda" bus="virtio"/>
      </disk>
      <interface type="bridge">
        <mac address="52:54:00:aa:bb:cc"/><source bridge="br-public"/><target dev="tap0"/>
      </interface>
    </devices>
  </domain>
  <network>
    <name>public</name>
    <bridge name="br-public"/>
    <forward mode="bridge"/>
  </network>
  <pool type="dir">
    <name>images</name>
    <capacity unit="GiB">100</capacity><allocation unit="GiB">40</allocation>
    <available unit="GiB">60</available>
    <target><path>/srv/ceph-images</path></target>
  </pool>
</node>
"""


def test_openstack_metadata_and_topology_through_libvirt(tmp_path: Path) -> None:
    """Nova metadata, a disk under a pool's path, a NIC on a network's bridge, read back through libvirt."""
    node = tmp_path / "node.xml"
    node.write_text(NOVA_NODE)
    port = free_port()
    args = build_parser().parse_args([f"--libvirt.uri=test://{node}", "--libvirt.hostname=kvm07"])
    server = serve_in_thread(make_app(settings_from(args)), f"127.0.0.1:{port}")
    try:
        samples = parse(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
    finally:
        server.shutdown()
    info = samples["novacron_vm_info"][0].labels
    assert (info["vm_name"], info["tenant"], info["project"], info["flavor"]) == (
        "web-frontend-1",
        "9f2c0a",
        "shop",
        "m1.large",
    )
    assert info["host"] == info["account"] == "kvm07"
    vm = "vm:11111111-2222-3333-4444-555555555555"
    edges = {
        (e.labels["source"], e.labels["target"], e.labels["kind"]) for e in samples["novacron_topology_edge"]
    }
    assert edges == {
        ("host:kvm07", vm, "runs"),
        (vm, "pool:kvm07/images", "disk"),
        (vm, "network:kvm07/public", "nic"),
    }
    assert samples["novacron_host_cpu_overcommit_ratio"][0].value == 1.5  # 6 vCPUs on 4 CPUs
    assert samples["novacron_storage_pool_capacity_bytes"][0].value == 100 * 2**30
