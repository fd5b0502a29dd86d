"""Test harness: real Prometheus, Alertmanager, libvirtd/QEMU, moto, SMTP and PostgreSQL on loopback."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stack.fleet import write_fleet
from stack.plan import console_script
from stack.processes import ManagedProcess, free_port, free_port_block, http_ok, wait_until
from stack.servers import Alertmanager, Prometheus, prometheus_config
from tests.harness.postgres import Postgres, start_postgres
from tests.harness.qemu import QemuGuest, ensure_libvirtd, remove_stale_guests
from tests.harness.smtp import SmtpSink, start_smtp


def start_prometheus(
    tmp_dir: Path,
    scrape_configs: list[dict[str, Any]],
    rule_files: Sequence[str | Path] = (),
    alertmanagers: Sequence[str] = (),
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    extra_args: Sequence[str] = (),
    extra_config: dict[str, Any] | None = None,
) -> Prometheus:
    """A real Prometheus with the given scrape jobs and rule files, ready to query."""
    config = prometheus_config(
        scrape_configs, rule_files, alertmanagers, scrape_interval, evaluation_interval, extra_config
    )
    return Prometheus(Path(tmp_dir) / f"prometheus-{free_port()}", config, extra_args=extra_args).start()


def start_alertmanager(
    tmp_dir: Path,
    config: dict[str, Any] | str,
    peers: Sequence[str] = (),
    cluster: bool = False,
    extra_args: Sequence[str] = (),
) -> Alertmanager:
    """A real Alertmanager; `peers` (cluster addresses) or `cluster=True` joins a gossip cluster."""
    workdir = Path(tmp_dir) / f"alertmanager-{free_port()}"
    cluster_port = free_port() if (peers or cluster) else None
    am = Alertmanager(workdir, config, peers=peers, cluster_port=cluster_port, extra_args=extra_args)
    return am.start()


def start_moto(tmp_dir: Path) -> ManagedProcess:
    """moto's server (`moto_server`) on a free port; `.url` is its endpoint."""
    # The virtualenv's moto first: an older one elsewhere on PATH rejects botocore's compressed requests.
    venv_binary = Path(sys.executable).parent / "moto_server"
    binary = str(venv_binary) if venv_binary.exists() else (shutil.which("moto_server") or "moto_server")
    port = free_port()
    proc = ManagedProcess(
        "moto",
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        Path(tmp_dir) / f"moto-{port}.log",
        ready_url=f"http://127.0.0.1:{port}/moto-api/",
        url=f"http://127.0.0.1:{port}",
    )
    return proc.start()


def libvirt_exporter(
    tmp_dir: Path, uri: str, *extra_args: str, port: int = 0, name: str = "libvirt-exporter"
) -> ManagedProcess:
    """The project's libvirt exporter for `uri` on loopback, not yet started (`.start()` or `with`).

    `.url` is `http://127.0.0.1:PORT`; a scrape target is `.url.removeprefix("http://")`."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [console_script("novacron-libvirt-exporter"), f"--libvirt.uri={uri}"]
    return ManagedProcess(
        name,
        [*argv, f"--web.listen-address=127.0.0.1:{port}", *extra_args],
        Path(tmp_dir) / f"{name}-{port}.log",
        ready_url=f"{url}/metrics",
        url=url,
    )


def fleet_prometheus(
    tmp_dir: Path, uri: str, vms: int, sidecar_ports: Sequence[int]
) -> tuple[ManagedProcess, Prometheus]:
    """A started libvirt exporter for `uri` and a Prometheus that scrapes it (job `libvirt`) and the analytics
    sidecars to come on `sidecar_ports` (job `analytics`), returned once all `vms` VMs are in Prometheus."""
    exporter = libvirt_exporter(tmp_dir, uri).start()
    prom: Prometheus | None = None
    try:
        prom = start_prometheus(
            tmp_dir,
            [
                {
                    "job_name": "libvirt",
                    "static_configs": [{"targets": [exporter.url.removeprefix("http://")]}],
                },
                {
                    "job_name": "analytics",
                    "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in sidecar_ports]}],
                },
            ],
        )
        prom.wait_for("novacron_vm_info", predicate=lambda r: len(r) == vms)
        return exporter, prom
    except BaseException:
        for proc in (prom, exporter):
            if proc is not None:
                proc.stop()
        raise


def test_driver_fleet(
    tmp_dir: Path, n_domains: int = 100, n_hosts: int = 1, seed: int = 0, shutoff_every: int = 0
) -> str:
    """Write a test-driver fleet and return its URI (with `n_hosts` > 1, the first host's)."""
    return test_driver_hosts(tmp_dir, n_domains, n_hosts, seed, shutoff_every)[0]


def test_driver_hosts(
    tmp_dir: Path, n_domains: int, n_hosts: int = 1, seed: int = 0, shutoff_every: int = 0
) -> list[str]:
    """One test-driver URI per host, `n_domains` domains each."""
    return [
        write_fleet(
            Path(tmp_dir) / f"fleet-{seed}-{h}" / "node.xml",
            n_domains,
            seed=seed + h,
            host=f"kvm{h:02d}",
            shutoff_every=shutoff_every,
        )
        for h in range(n_hosts)
    ]


test_driver_fleet.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name
test_driver_hosts.__test__ = False  # type: ignore[attr-defined]

__all__ = [
    "Alertmanager",
    "ManagedProcess",
    "Postgres",
    "Prometheus",
    "QemuGuest",
    "SmtpSink",
    "ensure_libvirtd",
    "fleet_prometheus",
    "free_port",
    "free_port_block",
    "http_ok",
    "libvirt_exporter",
    "remove_stale_guests",
    "start_alertmanager",
    "start_moto",
    "start_postgres",
    "start_prometheus",
    "start_smtp",
    "test_driver_fleet",
    "test_driver_hosts",
    "wait_until",
]
