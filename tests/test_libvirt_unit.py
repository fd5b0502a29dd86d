"""libvirt exporter units: domain XML metadata, metric conversion, flags, and the stuck-domain deadline."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import libvirt
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporters.common.config import ConfigError, parse_duration
from exporters.common.schema import VM_INFO_LABELS
from exporters.common.web import registry_with
from exporters.libvirt.collector import DEFAULT_GROUPS, LibvirtCollector
from exporters.libvirt.domainxml import parse_domain_xml
from exporters.libvirt.gather import DomainSample, HostSample, Snapshot
from exporters.libvirt.main import build_parser, settings_from
from exporters.libvirt.metrics import host_families, topology_families, vm_families
from exporters.libvirt.target import Target, silence_libvirt_stderr
from tests.harness import test_driver_fleet, wait_until

silence_libvirt_stderr()

NOVA_XML = """<domain type='kvm'>
  <name>instance-0000002a</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>web-frontend-1</nova:name>
      <nova:flavor name="m1.large"><nova:memory>8192</nova:memory></nova:flavor>
      <nova:owner>
        <nova:user uuid="u-1">alice</nova:user>
        <nova:project uuid="9f2c0a">shop</nova:project>
      </nova:owner>
    </nova:instance>
  </metadata>
  <devices>
    <disk type='volume' device='disk'><source pool='ceph' volume='vol-1'/><target dev='vda'/></disk>
    <disk type='file' device='cdrom'><target dev='hdc'/></disk>
    <interface type='bridge'><mac address='52:54:00:aa:bb:cc'/><source bridge='br-ex'/>
      <target dev='tap0'/></interface>
    <interface type='network'><source network='default'/></interface>
  </devices>
</domain>"""

NOVACRON_OVER_NOVA = NOVA_XML.replace(
    "</metadata>",
    """<novacron:instance xmlns:novacron="http://novacron.io/xmlns/libvirt/1.0">
      <novacron:tenant>acme</novacron:tenant><novacron:region>eu-west</novacron:region>
    </novacron:instance></metadata>""",
)


def test_nova_metadata_fills_identity() -> None:
    meta = parse_domain_xml(NOVA_XML)
    assert meta.name == "instance-0000002a"
    assert meta.labels == {
        "vm_name": "web-frontend-1",
        "flavor": "m1.large",
        "tenant": "9f2c0a",
        "project": "shop",
    }
    assert [(d.device, d.pool, d.path) for d in meta.disks] == [("vda", "ceph", "vol-1"), ("hdc", "", "")]
    # A NIC without a host-side target (inactive domain) is left out.
    assert [(n.device, n.bridge, n.mac) for n in meta.interfaces] == [("tap0", "br-ex", "52:54:00:aa:bb:cc")]


def test_novacron_metadata_wins_over_nova() -> None:
    meta = parse_domain_xml(NOVACRON_OVER_NOVA)
    assert meta.labels["tenant"] == "acme"
    assert meta.labels["region"] == "eu-west"
    assert meta.labels["project"] == "shop"  # not set by NovaCron: nova's value stays


def test_novacron_group_metadata_becomes_the_novacron_group_label() -> None:
    xml = NOVACRON_OVER_NOVA.replace(
        "<novacron:tenant>", "<novacron:group> shop-frontend </novacron:group><novacron:tenant>"
    )
    meta = parse_domain_xml(xml)
    assert meta.labels["novacron_group"] == "shop-frontend" and "group" not in meta.labels
    host = HostSample(hostname="kvm01", uri="qemu:///system", node_info=["x86_64", 4, 4, 2000, 1, 1, 2, 2])
    grouped = DomainSample(uuid="u-1", name="a", stats={"state.state": 1}, meta=meta)
    plain = DomainSample(uuid="u-2", name="b", stats={"state.state": 1}, meta=parse_domain_xml(NOVA_XML))
    samples = _samples(vm_families(Snapshot(up=True, host=host, domains=[grouped, plain]), DEFAULT_GROUPS))
    info = {s.labels["vm_id"]: s.labels for s in samples["novacron_vm_info"]}
    assert set(info["u-1"]) == set(VM_INFO_LABELS)
    assert info["u-1"]["novacron_group"] == "shop-frontend"
    assert info["u-2"]["novacron_group"] == ""  # no <novacron:group>: the label is there, empty


def test_bad_domain_xml_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="does not parse"):
        parse_domain_xml("<domain>")
    with pytest.raises(ValueError, match="expected <domain>"):
        parse_domain_xml("<network/>")


def _snapshot() -> Snapshot:
    stats = {
        "state.state": 1,
        "state.reason": 1,
        "cpu.time": 2_500_000_000,
        "vcpu.current": 2,
        "vcpu.maximum": 4,
        "vcpu.0.time": 1_000_000_000,
        "vcpu.0.delay": 500_000_000,
        "vcpu.1.time": 2_000_000_000,
        "balloon.current": 1024,
        "balloon.maximum": 2048,
        "block.count": 1,
        "block.0.name": "vda",
        "block.0.rd.bytes": 4096,
        "net.count": 1,
        "net.0.name": "tap0",
        "net.0.rx.bytes": 10,
    }
    meta = parse_domain_xml(NOVA_XML)
    running = DomainSample(uuid=meta.uuid, name=meta.name, stats=stats, meta=meta)
    off = DomainSample(
        uuid="u-off", name="off", stats={"state.state": 5, "vcpu.current": 8, "balloon.current": 4096}
    )
    host = HostSample(
        hostname="kvm01", uri="qemu+ssh://kvm01.example/system", node_info=["x86_64", 4, 4, 2000, 1, 1, 2, 2]
    )
    return Snapshot(up=True, host=host, domains=[running, off])


def _samples(families: Any) -> dict[str, list[Any]]:
    text = generate_latest(registry_with(_Static(list(families)))).decode()
    out: dict[str, list[Any]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


class _Static:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Any:
        return iter(self.families)


def test_vm_metrics_are_in_base_units_with_only_vm_id() -> None:
    samples = _samples(vm_families(_snapshot(), DEFAULT_GROUPS))
    uuid = "11111111-2222-3333-4444-555555555555"
    assert samples["novacron_vm_cpu_seconds_total"][0].value == 2.5
    assert samples["novacron_vm_cpu_seconds_total"][0].labels == {"vm_id": uuid}
    assert samples["novacron_vm_memory_bytes"][0].value == 1024 * 1024
    delay = {s.labels["vcpu"]: s.value for s in samples["novacron_vm_vcpu_delay_seconds_total"]}
    assert delay == {"0": 0.5}
    assert samples["novacron_vm_disk_read_bytes_total"][0].labels == {"vm_id": uuid, "device": "vda"}
    assert samples["novacron_vm_network_receive_bytes_total"][0].labels == {"vm_id": uuid, "device": "tap0"}
    info = {s.labels["vm_id"]: s.labels for s in samples["novacron_vm_info"]}
    assert info[uuid]["vm_name"] == "web-frontend-1"
    assert info[uuid]["account"] == "kvm01.example"  # the URI's host
    assert info[uuid]["host"] == "kvm01" and info[uuid]["provider"] == "kvm"
    assert info["u-off"]["vm_name"] == "off"
    states = {s.labels["vm_id"]: s.value for s in samples["novacron_vm_state"]}
    assert states == {uuid: 1, "u-off": 5}


def test_overcommit_counts_only_active_domains() -> None:
    samples = _samples(host_families(_snapshot(), DEFAULT_GROUPS))
    assert samples["novacron_host_vcpus_allocated"][0].value == 2
    assert samples["novacron_host_cpu_overcommit_ratio"][0].value == 0.5
    assert samples["novacron_host_memory_overcommit_ratio"][0].value == pytest.approx(
        1024 * 1024 / (4 * 2**20)
    )
    assert samples["novacron_host_cpu_sockets"][0].value == 1
    running = [s for s in samples["novacron_host_domains"] if s.labels["state"] in ("running", "shutoff")]
    assert {s.labels["state"]: s.value for s in running} == {"running": 1, "shutoff": 1}


def test_topology_edges_link_host_vm_pool_and_network() -> None:
    from exporters.libvirt.gather import NetworkSample, PoolSample

    snap = _snapshot()
    snap.host.pools = [PoolSample("ceph", 2, 10, 5, 5, "rbd", "")]
    snap.host.networks = [NetworkSample("public", True, "br-ex")]
    samples = _samples(topology_families(snap))
    edges = {
        (s.labels["source"], s.labels["target"], s.labels["kind"]) for s in samples["novacron_topology_edge"]
    }
    vm = "vm:11111111-2222-3333-4444-555555555555"
    assert ("host:kvm01", vm, "runs") in edges
    assert (vm, "pool:kvm01/ceph", "disk") in edges
    assert (vm, "network:kvm01/public", "nic") in edges  # through the bridge name
    kinds = {s.labels["kind"] for s in samples["novacron_topology_node"]}
    assert kinds == {"host", "vm", "pool", "network"}


def test_flags_select_collectors_and_reject_bad_values() -> None:
    parser = build_parser()
    settings = settings_from(parser.parse_args(["--no-collector.block", "--libvirt.timeout", "750ms"]))
    assert "block" not in settings.groups and "cpu" in settings.groups
    assert settings.timeout == 0.75
    with pytest.raises(ConfigError) as err:
        settings_from(parser.parse_args(["--probe.allowed-targets", "("]))
    assert err.value.key == "probe.allowed-targets"
    with pytest.raises(ConfigError) as err:
        settings_from(parser.parse_args(["--web.telemetry-path", "/probe"]))
    assert err.value.key == "web.telemetry-path"
    assert parse_duration("1m", "k") == 60
    with pytest.raises(ConfigError):
        parse_duration("0s", "k")


class _StuckDomain:
    """A virDomain stand-in whose every libvirt call blocks until released (a hung QEMU monitor)."""

    def __init__(self, real: Any, release: threading.Event) -> None:
        self.real = real
        self.release = release

    def UUIDString(self) -> str:
        return str(self.real.UUIDString())

    def name(self) -> str:
        return str(self.real.name())

    def ID(self) -> int:
        return int(self.real.ID())

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self.real, attr)

        def blocked(*args: Any) -> Any:
            self.release.wait()
            return method(*args)

        return blocked


class _ConnWithStuckDomain:
    """A real test-driver connection in which one domain never answers, in bulk or alone."""

    def __init__(self, real: Any, stuck_name: str, release: threading.Event) -> None:
        self.real = real
        self.stuck_name = stuck_name
        self.release = release
        self.bulk_calls = 0

    def listAllDomains(self, flags: int = 0) -> list[Any]:
        return [
            _StuckDomain(d, self.release) if d.name() == self.stuck_name else d
            for d in self.real.listAllDomains(flags)
        ]

    def domainListGetStats(self, doms: list[Any], stats: int, flags: int) -> list[Any]:
        self.bulk_calls += 1
        if any(isinstance(d, _StuckDomain) for d in doms):
            self.release.wait()
        wrapped = {d.UUIDString(): d for d in doms}
        real = [d.real if isinstance(d, _StuckDomain) else d for d in doms]
        return [(wrapped[d.UUIDString()], s) for d, s in self.real.domainListGetStats(real, stats, flags)]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.real, attr)


def test_a_domain_that_never_answers_costs_only_itself(tmp_path: Path) -> None:
    uri = test_driver_fleet(tmp_path, n_domains=50, seed=3)
    release = threading.Event()
    real = libvirt.openReadOnly(uri)
    stuck_name = sorted(d.name() for d in real.listAllDomains())[17]
    conn = _ConnWithStuckDomain(real, stuck_name, release)
    target = Target(uri, DEFAULT_GROUPS, opener=lambda _uri: conn)
    try:
        for attempt in range(2):
            started = time.monotonic()
            text = generate_latest(
                registry_with(LibvirtCollector(target, DEFAULT_GROUPS, timeout=1.5))
            ).decode()
            elapsed = time.monotonic() - started
            assert elapsed < 2.5, f"scrape {attempt} took {elapsed:.2f}s with a 1.5s deadline"
            samples = _samples_text(text)
            assert samples["novacron_libvirt_up"][0].value == 1
            timed_out = [s.labels["vm_id"] for s in samples["novacron_libvirt_domain_stats_timed_out"]]
            stuck_uuid = next(d.UUIDString() for d in real.listAllDomains() if d.name() == stuck_name)
            assert timed_out == [stuck_uuid]
            cpu = {s.labels["vm_id"] for s in samples["novacron_vm_cpu_seconds_total"]}
            assert len(cpu) == 49 and stuck_uuid not in cpu
            info = {s.labels["vm_id"] for s in samples["novacron_vm_info"]}
            assert len(info) == 50  # identity of the stuck domain is still served
            assert samples["novacron_storage_pool_capacity_bytes"]  # host-level data is not starved
            assert samples["novacron_network_active"]
        # The second scrape did not ask the stuck domain again: at most the first scrape's calls are pinned.
        assert wait_until(lambda: target.pool.busy() <= 2, timeout=30), target.pool.busy()
    finally:
        release.set()
        target.close()


def _samples_text(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_unreachable_libvirt_is_up_zero_not_an_error(tmp_path: Path) -> None:
    target = Target(f"test://{tmp_path}/missing.xml", DEFAULT_GROUPS)
    text = generate_latest(registry_with(LibvirtCollector(target, DEFAULT_GROUPS, timeout=2))).decode()
    samples = _samples_text(text)
    assert samples["novacron_libvirt_up"][0].value == 0
    assert samples["novacron_libvirt_scrape_errors_total"][0].value == 1
    assert "novacron_vm_state" not in samples


def test_fast_renderer_matches_prometheus_client(tmp_path: Path) -> None:
    from exporters.libvirt.exposition import render
    from exporters.libvirt.metrics import network_families, pool_families

    snap = _snapshot()
    snap.domains[0].meta.labels["vm_name"] = 'quote " back \\ slash\nnewline'  # type: ignore[union-attr]
    families = [
        *vm_families(snap, DEFAULT_GROUPS),
        *host_families(snap, DEFAULT_GROUPS),
        *pool_families(snap),
        *network_families(snap),
    ]
    ours = render(families).decode()
    theirs = generate_latest(registry_with(_Static(families))).decode()

    def normalised(text: str) -> list[Any]:
        return sorted(
            (f.name, f.type, f.documentation, s.name, sorted(s.labels.items()), s.value)
            for f in text_string_to_metric_families(text)
            for s in f.samples
        )

    assert normalised(ours) == normalised(theirs)
    assert 'vm_name="quote \\" back \\\\ slash\\nnewline"' in ours


def _no_domain(name: str) -> libvirt.libvirtError:
    err = libvirt.libvirtError(f"Domain not found: {name}")
    err.err = (libvirt.VIR_ERR_NO_DOMAIN, 0, str(err), 0, "", None, None, 0, 0)
    return err


class _GoneDomain(_StuckDomain):
    """A listed domain undefined right after the listing: every call says VIR_ERR_NO_DOMAIN."""

    def __getattr__(self, attr: str) -> Any:
        def gone(*_args: Any) -> Any:
            raise _no_domain(self.name())

        return gone


class _ConnWithVanishedDomain:
    """One domain is undefined between the listing and the bulk call."""

    def __init__(self, real: Any, gone: str) -> None:
        self.real = real
        self.gone = gone

    def listAllDomains(self, flags: int = 0) -> list[Any]:
        return [
            _GoneDomain(d, threading.Event()) if d.name() == self.gone else d
            for d in self.real.listAllDomains(flags)
        ]

    def domainListGetStats(self, doms: list[Any], stats: int, flags: int) -> list[Any]:
        if any(isinstance(d, _GoneDomain) for d in doms):
            raise _no_domain(self.gone)
        return list(self.real.domainListGetStats(doms, stats, flags))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.real, attr)


def test_a_domain_vanishing_mid_scrape_does_not_fail_the_scrape(tmp_path: Path) -> None:
    uri = test_driver_fleet(tmp_path, n_domains=10, seed=4)
    real = libvirt.openReadOnly(uri)
    gone = sorted(d.name() for d in real.listAllDomains())[3]
    target = Target(uri, DEFAULT_GROUPS, opener=lambda _uri: _ConnWithVanishedDomain(real, gone))
    try:
        samples = _samples_text(render_text(target))
    finally:
        target.close()
    assert samples["novacron_libvirt_up"][0].value == 1
    assert len(samples["novacron_vm_state"]) == 9  # the other nine, asked one by one
    assert len(samples["novacron_vm_cpu_seconds_total"]) == 9
    assert samples["novacron_libvirt_domains_timed_out"][0].value == 0


def render_text(target: Target) -> str:
    return generate_latest(registry_with(LibvirtCollector(target, DEFAULT_GROUPS, timeout=5))).decode()


def test_deadline_follows_prometheus_scrape_timeout_header() -> None:
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from exporters.libvirt.main import scrape_timeout

    settings = settings_from(build_parser().parse_args(["--libvirt.timeout=5s"]))

    def with_header(value: str | None) -> float:
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": value} if value is not None else {}
        return scrape_timeout(settings, Request(EnvironBuilder(headers=headers).get_environ()))

    assert with_header(None) == 5
    assert with_header("2") == 1.5  # answer half a second before Prometheus gives up
    assert with_header("30") == 5  # the flag stays the upper bound
    assert with_header("soon") == 5
    assert with_header("0.2") == 0.1


def test_metadata_changes_show_after_the_refresh_without_a_timeout(tmp_path: Path) -> None:
    from exporters.libvirt.domainxml import NOVACRON_NS
    from exporters.libvirt.gather import Deadline, Gatherer

    conn = libvirt.open(test_driver_fleet(tmp_path, n_domains=3, seed=8))  # read-write: we edit metadata
    dom = sorted(conn.listAllDomains(), key=lambda d: d.name())[0]
    gatherer = Gatherer(DEFAULT_GROUPS, xml_ttl=0.05)

    def tenant() -> str:
        snap = gatherer.gather(conn, Deadline(5))
        sample = next(s for s in snap.domains if s.uuid == dom.UUIDString())
        assert not sample.timed_out and sample.meta is not None
        return sample.meta.labels.get("tenant", "")

    before = tenant()
    dom.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        "<instance><tenant>newco</tenant></instance>",
        "novacron",
        NOVACRON_NS,
        libvirt.VIR_DOMAIN_AFFECT_LIVE,
    )
    assert tenant() == before  # cached XML until it is older than the TTL
    time.sleep(0.1)
    assert wait_until(lambda: tenant() == "newco", timeout=30)  # refreshed in the background


class _SlowCountingConn:
    """Counts bulk calls; the first listing waits until `overlapping` scrapes have decided to lead or join
    the round (past the target's flight lock), so they share it however late a loaded machine runs them."""

    def __init__(self, real: Any, decided: threading.Semaphore, overlapping: int) -> None:
        self.real = real
        self.bulk_calls = 0
        self.decided = decided
        self.overlapping = overlapping

    def listAllDomains(self, flags: int = 0) -> list[Any]:
        while self.overlapping:
            self.overlapping -= 1
            assert self.decided.acquire(timeout=10), "the other scrapes never reached the target"
        return list(self.real.listAllDomains(flags))

    def domainListGetStats(self, doms: list[Any], stats: int, flags: int) -> list[Any]:
        self.bulk_calls += 1
        return list(self.real.domainListGetStats(doms, stats, flags))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.real, attr)


class _Announcing:
    """The target's flight lock, releasing `decided` each time a scrape leaves it: a scrape past it has
    either opened the round or joined the one still open (a sleep after "the thread started" only made
    joining likely: a thread descheduled between starting and scraping came late and opened a second one)."""

    def __init__(self, lock: Any, decided: threading.Semaphore) -> None:
        self.lock = lock
        self.decided = decided

    def __enter__(self) -> Any:
        return self.lock.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self.lock.__exit__(*exc)
        finally:
            self.decided.release()


def test_overlapping_scrapes_share_one_libvirt_round(tmp_path: Path) -> None:
    decided = threading.Semaphore(0)
    real = libvirt.openReadOnly(test_driver_fleet(tmp_path, n_domains=5, seed=6))
    conn = _SlowCountingConn(real, decided, overlapping=3)
    target = Target("test:///shared", DEFAULT_GROUPS, opener=lambda _uri: conn, parallelism=1)
    target._flight_lock = _Announcing(target._flight_lock, decided)  # type: ignore[assignment]
    results: list[Snapshot] = []

    def scrape() -> None:
        results.append(target.scrape(5))

    threads = [threading.Thread(target=scrape) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 3 and all(r.up and len(r.domains) == 5 for r in results)
    assert conn.bulk_calls == 1
    target.scrape(5)  # a later scrape asks libvirt again
    assert conn.bulk_calls == 2


class _HungDaemon:
    """A libvirtd that accepted the connection and then stopped answering (SIGSTOP, deadlock)."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def isAlive(self) -> bool:  # local in libvirt: the client's view of its socket
        return True

    def __getattr__(self, attr: str) -> Any:
        def hang(*_args: Any) -> Any:
            self.release.wait()
            raise libvirt.libvirtError("released")

        return hang


def test_a_hung_libvirtd_or_connect_is_up_zero_within_the_deadline() -> None:
    release = threading.Event()
    hung_conn = Target("qemu+ssh://hung/system", DEFAULT_GROUPS, opener=lambda _uri: _HungDaemon(release))
    hung_open = Target("qemu+ssh://hung/system", DEFAULT_GROUPS, opener=lambda _uri: release.wait(60))
    try:
        for target in (hung_conn, hung_open, hung_conn, hung_open):
            started = time.monotonic()
            snapshot = target.scrape(0.5)
            assert time.monotonic() - started < 1.5
            assert not snapshot.up and "in time" in snapshot.error
        # The hung open is waited for again, not started once per scrape.
        assert hung_open.pool.busy() == 1
    finally:
        release.set()
