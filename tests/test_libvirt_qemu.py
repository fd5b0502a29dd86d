"""libvirt exporter against a real QEMU guest under the system libvirtd, and across a libvirtd restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporters.libvirt.collector import DEFAULT_GROUPS, LibvirtCollector
from exporters.libvirt.exposition import render
from exporters.libvirt.target import Target, silence_libvirt_stderr
from tests.harness import (
    ManagedProcess,
    QemuGuest,
    ensure_libvirtd,
    free_port,
    remove_stale_guests,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
SYSTEM = "qemu:///system"
# Our own prefix: other suites' session start removes every "nctest-" guest, which would kill ours mid-test.
PREFIX = "nclvx-"

# libvirtd by hand: the guest is this module's own fixture, which conftest's marking cannot see.
pytestmark = [pytest.mark.libvirtd, pytest.mark.slow]
silence_libvirt_stderr()


@pytest.fixture(scope="module")
def guest() -> Iterator[QemuGuest]:
    ensure_libvirtd()
    remove_stale_guests(PREFIX)
    # The owner's pid after the prefix, as the harness names guests: remove_stale_guests reads it to tell a
    # leftover from a live guest (a time-based number there was taken for a pid, and a live guest of another
    # run was destroyed or a dead one kept when that "pid" happened to exist).
    with QemuGuest(f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:6]}") as g:
        yield g
        # The restart test broke the guest's own connection, and without an event loop isAlive() does not
        # notice; drop it so the harness reconnects to destroy and undefine the guest.
        g._conn = None


def samples_for(text: str, vm_id: str | None = None) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if vm_id is None or s.labels.get("vm_id") in (None, vm_id):
                out.setdefault(s.name, []).append(s)
    return out


def scrape(target: Target) -> str:
    return render(LibvirtCollector(target, DEFAULT_GROUPS, timeout=10).collect()).decode()


def domstats(name: str) -> dict[str, str]:
    out = subprocess.run(
        [
            "virsh",
            "-r",
            "-c",
            SYSTEM,
            "domstats",
            "--state",
            "--balloon",
            "--vcpu",
            "--block",
            "--cpu-total",
            name,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return dict(line.strip().split("=", 1) for line in out.splitlines() if "=" in line)


def test_real_guest_metrics_agree_with_virsh_domstats(guest: QemuGuest) -> None:
    target = Target(SYSTEM, DEFAULT_GROUPS)
    try:
        first = samples_for(scrape(target), guest.uuid)
        assert first["novacron_libvirt_up"][0].value == 1
        cpu_before = first["novacron_vm_cpu_seconds_total"][0].value
        assert wait_until(
            lambda: samples_for(scrape(target), guest.uuid)["novacron_vm_cpu_seconds_total"][0].value
            > cpu_before,
            timeout=60,
            interval=0.5,
        ), "CPU time of a running guest did not increase between scrapes"
        ours = samples_for(scrape(target), guest.uuid)
        virsh = domstats(guest.name)
    finally:
        target.close()

    def one(name: str) -> float:
        values = ours[name]
        assert len(values) == 1, (name, values)
        return float(values[0].value)

    assert one("novacron_vm_state") == int(virsh["state.state"]) == 1
    assert one("novacron_vm_memory_bytes") == int(virsh["balloon.current"]) * 1024
    assert one("novacron_vm_memory_max_bytes") == int(virsh["balloon.maximum"]) * 1024
    assert one("novacron_vm_vcpus") == int(virsh["vcpu.current"]) == 1
    assert one("novacron_vm_vcpus_max") == int(virsh["vcpu.maximum"])
    assert one("novacron_vm_disk_capacity_bytes") == int(virsh["block.0.capacity"]) == 16 * 1024 * 1024
    assert one("novacron_vm_disk_physical_bytes") == int(virsh["block.0.physical"])
    # Counters can only have grown between our scrape and virsh's.
    assert one("novacron_vm_disk_read_bytes_total") <= int(virsh["block.0.rd.bytes"])
    assert one("novacron_vm_disk_read_requests_total") <= int(virsh["block.0.rd.reqs"])
    assert one("novacron_vm_cpu_seconds_total") <= int(virsh["cpu.time"]) / 1e9
    assert ours["novacron_vm_disk_read_bytes_total"][0].labels["device"] == "vda"
    assert "novacron_vm_vcpu_delay_seconds_total" in ours
    assert one("novacron_vm_memory_rss_bytes") > 0
    info = ours["novacron_vm_info"][0].labels
    assert (info["vm_name"], info["tenant"], info["project"], info["flavor"]) == (
        guest.name,
        "acme",
        "acme-test",
        "t1.tiny",
    )
    assert ours["novacron_host_info"][0].labels["hypervisor"] == "QEMU"
    assert ours["novacron_host_cpus"][0].value >= 1
    assert ours["novacron_host_memory_free_bytes"][0].value > 0
    modes = {s.labels["mode"] for s in ours["novacron_host_cpu_seconds_total"]}
    assert {"user", "system", "idle"} <= modes


def _libvirtd(action: str) -> None:
    subprocess.run(["bash", str(REPO / "scripts/libvirtd.sh"), action], check=True, timeout=60)


def test_libvirtd_restart_up_goes_0_then_1_and_scrapes_keep_answering(
    guest: QemuGuest, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    argv = [
        sys.executable,
        "-m",
        "exporters.libvirt.main",
        f"--libvirt.uri={SYSTEM}",
        "--libvirt.timeout=3s",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with ManagedProcess(
        "libvirt-exporter", argv, tmp_path / "exporter.log", ready_url=f"{url}", cwd=REPO
    ) as proc:

        def up() -> float:
            started = time.monotonic()
            resp = requests.get(url, timeout=10)
            assert resp.status_code == 200
            assert time.monotonic() - started < 5, "a scrape outlived the deadline"
            return float(samples_for(resp.text)["novacron_libvirt_up"][0].value)

        assert wait_until(lambda: up() == 1, timeout=60)
        try:
            _libvirtd("stop")
            assert wait_until(lambda: up() == 0, timeout=30, interval=0.3)
            for _ in range(3):
                assert up() == 0  # keeps answering, no hang, no crash
        finally:
            _libvirtd("start")
        final: dict[str, list[Any]] = {}

        def seen_again() -> bool:
            # up can come back before the restarted libvirtd lists the running guest again (or before its
            # stats make the deadline): wait for the whole expected answer, the guest's state included.
            final.clear()
            final.update(samples_for(requests.get(url, timeout=10).text, guest.uuid))
            return (
                final["novacron_libvirt_up"][0].value == 1
                and final["novacron_libvirt_reconnects_total"][0].value >= 1
                and final["novacron_libvirt_scrape_errors_total"][0].value >= 1
                and final["novacron_vm_state"][0].value == 1  # the guest survived and is seen again
            )

        assert wait_until(seen_again, timeout=60, interval=0.5), final
        assert proc.alive()
