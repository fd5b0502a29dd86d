"""Turn a Snapshot into Prometheus metric families (pure functions; no libvirt calls here).

Sample output (one running domain, abridged):

    novacron_libvirt_up 1.0
    novacron_vm_info{account="kvm01",flavor="m1.small",host="kvm01",instance_type="",novacron_group="web",
        project="web",provider="kvm",region="",tenant="acme",vm_id="6695eb01-f6a4-8304-79aa-97f2502e193f",
        vm_name="web-1",zone=""} 1.0
    novacron_vm_state{vm_id="6695eb01-f6a4-8304-79aa-97f2502e193f"} 1.0
    novacron_vm_cpu_seconds_total{vm_id="6695eb01-f6a4-8304-79aa-97f2502e193f"} 48.77
    novacron_vm_vcpu_delay_seconds_total{vcpu="0",vm_id="6695eb01-..."} 0.12
    novacron_vm_memory_bytes{vm_id="6695eb01-..."} 2.147483648e+09
    novacron_vm_disk_read_bytes_total{device="vda",vm_id="6695eb01-..."} 8.97e+13
    novacron_vm_network_receive_bytes_total{device="vnet0",vm_id="6695eb01-..."} 1.79e+14
    novacron_host_cpu_overcommit_ratio{host="kvm01"} 2.5
    novacron_storage_pool_available_bytes{host="kvm01",pool="default"} 1.07e+11
    novacron_topology_edge{host="kvm01",id="host:kvm01->vm:6695eb01-...",kind="runs",source="host:kvm01",
        target="vm:6695eb01-..."} 1.0
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from exporters.common.schema import VM_INFO_LABELS
from exporters.libvirt.gather import ACTIVE_STATES, DomainSample, HostSample, Snapshot

KIB = 1024
NS = 1e-9
STATE_NAMES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}
POOL_STATES = "0 inactive, 1 building, 2 running, 3 degraded, 4 inaccessible"
HOST_CPU_MODES = {"user": "user", "kernel": "system", "idle": "idle", "iowait": "iowait"}


@dataclass(frozen=True)
class Spec:
    """One metric read from one stats key; `scale` converts libvirt units to base units."""

    group: str
    key: str
    name: str
    counter: bool
    help: str
    scale: float = 1.0


# Per-domain values: key is the bulk-stats key.
VM_SPECS = (
    Spec("state", "state.reason", "novacron_vm_state_reason", False, "libvirt reason code for the state"),
    Spec(
        "cpu",
        "cpu.time",
        "novacron_vm_cpu_seconds_total",
        True,
        "CPU time used by the VM (libvirt cpu.time)",
        NS,
    ),
    Spec("cpu", "cpu.user", "novacron_vm_cpu_user_seconds_total", True, "User CPU time of the VM", NS),
    Spec("cpu", "cpu.system", "novacron_vm_cpu_system_seconds_total", True, "System CPU time of the VM", NS),
    Spec("vcpu", "vcpu.current", "novacron_vm_vcpus", False, "vCPUs currently online"),
    Spec("vcpu", "vcpu.maximum", "novacron_vm_vcpus_max", False, "Maximum vCPUs"),
    Spec(
        "memory",
        "balloon.current",
        "novacron_vm_memory_bytes",
        False,
        "Memory given to the VM (balloon)",
        KIB,
    ),
    Spec("memory", "balloon.maximum", "novacron_vm_memory_max_bytes", False, "Maximum memory of the VM", KIB),
    Spec(
        "memory",
        "balloon.rss",
        "novacron_vm_memory_rss_bytes",
        False,
        "Resident memory of the QEMU process",
        KIB,
    ),
    Spec(
        "memory",
        "balloon.usable",
        "novacron_vm_memory_usable_bytes",
        False,
        "Guest memory usable without swap",
        KIB,
    ),
    Spec(
        "memory",
        "balloon.available",
        "novacron_vm_memory_available_bytes",
        False,
        "Guest-visible memory",
        KIB,
    ),
    Spec(
        "memory", "balloon.unused", "novacron_vm_memory_unused_bytes", False, "Guest memory left unused", KIB
    ),
    Spec(
        "memory",
        "balloon.disk_caches",
        "novacron_vm_memory_disk_caches_bytes",
        False,
        "Guest page cache",
        KIB,
    ),
    Spec("memory", "balloon.swap_in", "novacron_vm_memory_swap_in_bytes_total", True, "Guest swap-in", KIB),
    Spec(
        "memory", "balloon.swap_out", "novacron_vm_memory_swap_out_bytes_total", True, "Guest swap-out", KIB
    ),
    Spec(
        "memory",
        "balloon.major_fault",
        "novacron_vm_memory_major_faults_total",
        True,
        "Guest major page faults",
    ),
    Spec(
        "memory",
        "balloon.minor_fault",
        "novacron_vm_memory_minor_faults_total",
        True,
        "Guest minor page faults",
    ),
    Spec(
        "memory",
        "balloon.last-update",
        "novacron_vm_memory_stats_updated_timestamp_seconds",
        False,
        "When the guest balloon driver last reported",
    ),
    Spec(
        "dirtyrate",
        "dirtyrate.megabytes_per_second",
        "novacron_vm_memory_dirty_rate_bytes_per_second",
        False,
        "Memory dirty rate last measured by libvirt (virsh domdirtyrate-calc)",
        1024 * 1024,
    ),
)
VCPU_SPECS = (
    Spec("vcpu", "time", "novacron_vm_vcpu_seconds_total", True, "CPU time of one vCPU", NS),
    Spec("vcpu", "wait", "novacron_vm_vcpu_wait_seconds_total", True, "Time a vCPU waited on I/O", NS),
    Spec(
        "vcpu",
        "delay",
        "novacron_vm_vcpu_delay_seconds_total",
        True,
        "Time a vCPU was runnable but not run (steal)",
        NS,
    ),
)
BLOCK_SPECS = (
    Spec("block", "rd.bytes", "novacron_vm_disk_read_bytes_total", True, "Bytes read from a disk"),
    Spec("block", "wr.bytes", "novacron_vm_disk_write_bytes_total", True, "Bytes written to a disk"),
    Spec("block", "rd.reqs", "novacron_vm_disk_read_requests_total", True, "Read requests to a disk"),
    Spec("block", "wr.reqs", "novacron_vm_disk_write_requests_total", True, "Write requests to a disk"),
    Spec("block", "fl.reqs", "novacron_vm_disk_flush_requests_total", True, "Flush requests to a disk"),
    Spec("block", "rd.times", "novacron_vm_disk_read_time_seconds_total", True, "Time spent reading", NS),
    Spec("block", "wr.times", "novacron_vm_disk_write_time_seconds_total", True, "Time spent writing", NS),
    Spec("block", "fl.times", "novacron_vm_disk_flush_time_seconds_total", True, "Time spent flushing", NS),
    Spec("block", "capacity", "novacron_vm_disk_capacity_bytes", False, "Disk size seen by the guest"),
    Spec(
        "block",
        "allocation",
        "novacron_vm_disk_allocation_bytes",
        False,
        "Highest written offset in the image",
    ),
    Spec("block", "physical", "novacron_vm_disk_physical_bytes", False, "Size of the image on the host"),
)
NET_SPECS = (
    Spec("interface", "rx.bytes", "novacron_vm_network_receive_bytes_total", True, "Bytes received"),
    Spec("interface", "tx.bytes", "novacron_vm_network_transmit_bytes_total", True, "Bytes transmitted"),
    Spec("interface", "rx.pkts", "novacron_vm_network_receive_packets_total", True, "Packets received"),
    Spec("interface", "tx.pkts", "novacron_vm_network_transmit_packets_total", True, "Packets transmitted"),
    Spec("interface", "rx.errs", "novacron_vm_network_receive_errors_total", True, "Receive errors"),
    Spec("interface", "tx.errs", "novacron_vm_network_transmit_errors_total", True, "Transmit errors"),
    Spec("interface", "rx.drop", "novacron_vm_network_receive_drops_total", True, "Received packets dropped"),
    Spec(
        "interface",
        "tx.drop",
        "novacron_vm_network_transmit_drops_total",
        True,
        "Transmitted packets dropped",
    ),
)
JOB_SPECS = (
    Spec(
        "job", "type", "novacron_vm_job_type", False, "Job type: 0 none, 1 bounded, 2 unbounded, 3 completed"
    ),
    Spec(
        "job",
        "operation",
        "novacron_vm_job_operation",
        False,
        "Job operation: 6 outgoing migration, 5 incoming",
    ),
    Spec("job", "time_elapsed", "novacron_vm_job_elapsed_seconds", False, "Time the job has run", 1e-3),
    Spec("job", "data_total", "novacron_vm_job_data_total_bytes", False, "Bytes the job has to move"),
    Spec("job", "data_processed", "novacron_vm_job_data_processed_bytes", False, "Bytes the job has moved"),
    Spec(
        "job",
        "data_remaining",
        "novacron_vm_job_data_remaining_bytes",
        False,
        "Bytes the job still has to move",
    ),
)
INFO_LABELS = VM_INFO_LABELS


def _sample_name(fam: Metric) -> str:
    """The sample name prometheus_client's add_metric would use (counters get `_total`)."""
    return fam.name + "_total" if fam.type == "counter" else fam.name


def _family(spec: Spec, labels: list[str]) -> GaugeMetricFamily | CounterMetricFamily:
    cls = CounterMetricFamily if spec.counter else GaugeMetricFamily
    return cls(spec.name, spec.help, labels=labels)


def _numbered(stats: dict[str, Any], prefix: str, count_key: str | None) -> Iterator[tuple[str, str]]:
    """(index, name) of the numbered entries `block.N` / `net.N` / `vcpu.N`."""
    if count_key is not None:
        for i in range(int(stats.get(count_key, 0))):
            yield str(i), str(stats.get(f"{prefix}.{i}.name", i))
        return
    # vCPUs: block.count-style count is absent; vcpu.maximum bounds the indices.
    for i in range(int(stats.get("vcpu.maximum", stats.get("vcpu.current", 0)))):
        if f"vcpu.{i}.time" in stats or f"vcpu.{i}.state" in stats:
            yield str(i), str(i)


def account_of(host: HostSample) -> str:
    """The libvirt URI's host, or the hypervisor's hostname for a local URI (qemu:///system)."""
    try:
        netloc = urlsplit(host.uri).hostname or ""
    except ValueError:
        netloc = ""
    return netloc or host.hostname


def vm_families(snapshot: Snapshot, groups: frozenset[str]) -> Iterator[Metric]:
    """Per-domain metrics: identity, state and every enabled stats group."""
    domains = [d for d in snapshot.domains if d.stats]
    if "info" in groups:
        yield _vm_info(snapshot.domains, snapshot.host)
    state = GaugeMetricFamily(
        "novacron_vm_state",
        "VM state: " + ", ".join(f"{k} {v}" for k, v in STATE_NAMES.items()),
        labels=["vm_id"],
    )
    # One labels dict per domain, shared by all its single-series metrics (nothing mutates sample labels).
    vm_labels = [({"vm_id": d.uuid}, d.stats) for d in domains]
    append = state.samples.append
    for labels, stats in vm_labels:
        if "state.state" in stats:
            append(Sample("novacron_vm_state", labels, stats["state.state"]))
    yield state
    for spec in VM_SPECS:
        if spec.group in groups or spec.group == "state":
            fam = _family(spec, ["vm_id"])
            key, scale, name, append = spec.key, spec.scale, _sample_name(fam), fam.samples.append
            for labels, stats in vm_labels:
                value = stats.get(key)
                if value is not None:
                    append(Sample(name, labels, value * scale))
            yield fam
    if "vcpu" in groups:
        yield from _indexed(domains, VCPU_SPECS, "vcpu", None, "vcpu")
    if "block" in groups:
        yield from _indexed(domains, BLOCK_SPECS, "block", "block.count", "device")
        yield _disk_info(domains)
    if "interface" in groups:
        yield from _indexed(domains, NET_SPECS, "net", "net.count", "device")
        yield _nic_info(snapshot.domains)
    if "job" in groups:
        yield from _jobs(snapshot.domains)


def _indexed(
    domains: list[DomainSample], specs: tuple[Spec, ...], prefix: str, count_key: str | None, label: str
) -> Iterator[Metric]:
    families = [_family(spec, ["vm_id", label]) for spec in specs]
    # Hot loop at thousands of domains: samples are built directly, one shared labels dict per device.
    plan = [
        (spec.key, spec.scale, _sample_name(fam), fam.samples.append)
        for spec, fam in zip(specs, families, strict=True)
    ]
    for d in domains:
        stats = d.stats
        for index, name in _numbered(stats, prefix, count_key):
            base = f"{prefix}.{index}."
            labels = {"vm_id": d.uuid, label: name}
            for key, scale, sample_name, append in plan:
                value = stats.get(base + key)
                if value is not None:
                    append(Sample(sample_name, labels, value * scale))
    yield from families


def _vm_info(domains: list[DomainSample], host: HostSample) -> Metric:
    fam = GaugeMetricFamily(
        "novacron_vm_info", "VM identity and NovaCron/OpenStack metadata (value 1)", labels=list(INFO_LABELS)
    )
    account = account_of(host)
    for d in domains:
        labels = d.meta.labels if d.meta else {}
        values = {
            "provider": "kvm",
            "account": account,
            "host": host.hostname,
            "vm_id": d.uuid,
            "vm_name": labels.get("vm_name") or d.name,
        }
        fam.add_metric([values.get(name) or labels.get(name, "") for name in INFO_LABELS], 1)
    return fam


def _disk_info(domains: list[DomainSample]) -> Metric:
    fam = GaugeMetricFamily(
        "novacron_vm_disk_info",
        "Disk of a VM and its source path (value 1)",
        labels=["vm_id", "device", "path"],
    )
    for d in domains:
        for index, name in _numbered(d.stats, "block", "block.count"):
            fam.add_metric([d.uuid, name, str(d.stats.get(f"block.{index}.path", ""))], 1)
    return fam


def _nic_info(domains: list[DomainSample]) -> Metric:
    fam = GaugeMetricFamily(
        "novacron_vm_network_info",
        "NIC of a VM: MAC and the libvirt network or bridge it is attached to (value 1)",
        labels=["vm_id", "device", "mac", "network", "bridge"],
    )
    for d in domains:
        for nic in d.meta.interfaces if d.meta else ():
            fam.add_metric([d.uuid, nic.device, nic.mac, nic.network, nic.bridge], 1)
    return fam


def _jobs(domains: list[DomainSample]) -> Iterator[Metric]:
    families = [_family(spec, ["vm_id"]) for spec in JOB_SPECS]
    for d in domains:
        if not d.job or not d.job.get("type"):
            continue  # no job running: no series, so "a migration is running" is simply presence
        for spec, fam in zip(JOB_SPECS, families, strict=True):
            if spec.key in d.job:
                fam.add_metric([d.uuid], d.job[spec.key] * spec.scale)
    yield from families


def host_families(snapshot: Snapshot, groups: frozenset[str]) -> Iterator[Metric]:
    """Node info, host CPU and memory, allocation and overcommit, versions."""
    host = snapshot.host
    h = [host.hostname]
    info = GaugeMetricFamily(
        "novacron_host_info",
        "Hypervisor host identity and versions (value 1)",
        labels=["host", "arch", "hypervisor", "hypervisor_version", "libvirt_version", "account"],
    )
    arch = str(host.node_info[0]) if host.node_info else ""
    info.add_metric(
        [
            host.hostname,
            arch,
            host.hv_type,
            _version(host.hv_version),
            _version(host.lib_version),
            account_of(host),
        ],
        1,
    )
    yield info
    if "host" not in groups or not host.node_info:
        return
    _arch, mem_mib, cpus, mhz, nodes, sockets, cores, threads = host.node_info
    yield _gauge("novacron_host_cpus", "Logical CPUs of the host", h, cpus)
    yield _gauge("novacron_host_numa_nodes", "NUMA nodes of the host", h, nodes)
    yield _gauge("novacron_host_cpu_sockets", "CPU sockets of the host", h, nodes * sockets)
    yield _gauge("novacron_host_cpu_cores_per_socket", "Cores per socket", h, cores)
    yield _gauge("novacron_host_cpu_threads_per_core", "Threads per core", h, threads)
    yield _gauge("novacron_host_cpu_frequency_hertz", "CPU frequency", h, mhz * 1e6)
    total_bytes = _host_memory_total(host, mem_mib)
    yield _gauge("novacron_host_memory_bytes", "Physical memory of the host", h, total_bytes)
    yield from _host_memory(host)
    if host.cpu_times:
        fam = CounterMetricFamily(
            "novacron_host_cpu_seconds_total", "Host CPU time by mode", labels=["host", "mode"]
        )
        for key, mode in HOST_CPU_MODES.items():
            if key in host.cpu_times:
                fam.add_metric([host.hostname, mode], host.cpu_times[key] * NS)
        yield fam
    yield from _allocation(snapshot, cpus, total_bytes)


def _host_memory_total(host: HostSample, mem_mib: int) -> float:
    if host.memory and "total" in host.memory:
        return float(host.memory["total"] * KIB)
    return float(mem_mib * 1024 * 1024)


def _host_memory(host: HostSample) -> Iterator[Metric]:
    h = [host.hostname]
    mem = host.memory or {}
    if "free" in mem:
        yield _gauge("novacron_host_memory_free_bytes", "Free host memory", h, mem["free"] * KIB)
    elif host.free_memory is not None:
        yield _gauge("novacron_host_memory_free_bytes", "Free host memory", h, host.free_memory)
    if "cached" in mem:
        yield _gauge("novacron_host_memory_cached_bytes", "Host page cache", h, mem["cached"] * KIB)
    if "buffers" in mem:
        yield _gauge("novacron_host_memory_buffers_bytes", "Host buffers", h, mem["buffers"] * KIB)


def _allocation(snapshot: Snapshot, cpus: int, memory_bytes: float) -> Iterator[Metric]:
    """What running domains were given, against what the host has."""
    h = [snapshot.host.hostname]
    vcpus = 0
    memory = 0.0
    by_state: dict[str, int] = dict.fromkeys(STATE_NAMES.values(), 0)
    for d in snapshot.domains:
        state = d.stats.get("state.state")
        if state is None:
            continue
        by_state[STATE_NAMES.get(state, "nostate")] += 1
        if state in ACTIVE_STATES:
            vcpus += int(d.stats.get("vcpu.current", 0))
            memory += d.stats.get("balloon.current", 0) * KIB
    fam = GaugeMetricFamily("novacron_host_domains", "Domains on the host by state", labels=["host", "state"])
    for name, count in by_state.items():
        fam.add_metric([*h, name], count)
    yield fam
    yield _gauge("novacron_host_vcpus_allocated", "vCPUs of active domains", h, vcpus)
    yield _gauge("novacron_host_memory_allocated_bytes", "Memory of active domains", h, memory)
    if cpus:
        yield _gauge(
            "novacron_host_cpu_overcommit_ratio", "Allocated vCPUs / host logical CPUs", h, vcpus / cpus
        )
    if memory_bytes:
        yield _gauge(
            "novacron_host_memory_overcommit_ratio",
            "Allocated memory / host memory",
            h,
            memory / memory_bytes,
        )


def pool_families(snapshot: Snapshot) -> Iterator[Metric]:
    """Storage pools: capacity, allocation, available and state."""
    host = snapshot.host.hostname
    names = [
        ("capacity", "novacron_storage_pool_capacity_bytes", "Pool capacity"),
        ("allocation", "novacron_storage_pool_allocation_bytes", "Pool bytes allocated to volumes"),
        ("available", "novacron_storage_pool_available_bytes", "Pool bytes free"),
    ]
    fams = [GaugeMetricFamily(n, d, labels=["host", "pool"]) for _, n, d in names]
    state = GaugeMetricFamily(
        "novacron_storage_pool_state", f"Pool state: {POOL_STATES}", labels=["host", "pool"]
    )
    info = GaugeMetricFamily(
        "novacron_storage_pool_info",
        "Pool type and target path (value 1)",
        labels=["host", "pool", "type", "path"],
    )
    for pool in snapshot.host.pools or ():
        for (attr, _, _), fam in zip(names, fams, strict=True):
            fam.add_metric([host, pool.name], getattr(pool, attr))
        state.add_metric([host, pool.name], pool.state)
        info.add_metric([host, pool.name, pool.pool_type, pool.path], 1)
    yield from (*fams, state, info)


def network_families(snapshot: Snapshot) -> Iterator[Metric]:
    """libvirt virtual networks and whether they are active."""
    fam = GaugeMetricFamily(
        "novacron_network_active",
        "libvirt network is active (1) or not (0)",
        labels=["host", "network", "bridge"],
    )
    for net in snapshot.host.networks or ():
        fam.add_metric([snapshot.host.hostname, net.name, net.bridge], 1 if net.active else 0)
    yield fam


def topology_families(snapshot: Snapshot) -> Iterator[Metric]:
    """Nodes and edges (host -> VM, VM -> storage pool, VM -> network) for Grafana's node graph."""
    host = snapshot.host
    nodes = GaugeMetricFamily(
        "novacron_topology_node",
        "A node of the host/VM/pool/network graph (value 1)",
        labels=["id", "title", "kind", "host"],
    )
    edges = GaugeMetricFamily(
        "novacron_topology_edge",
        "An edge of the host/VM/pool/network graph (value 1)",
        labels=["id", "source", "target", "kind", "host"],
    )
    host_id = f"host:{host.hostname}"
    nodes.add_metric([host_id, host.hostname, "host", host.hostname], 1)
    pools = {p.name: p for p in host.pools or ()}
    by_path = sorted(((p.path.rstrip("/") + "/", p.name) for p in pools.values() if p.path), reverse=True)
    for pool_sample in pools.values():
        nodes.add_metric(
            [_pool_id(host.hostname, pool_sample.name), pool_sample.name, "pool", host.hostname], 1
        )
    bridges = {n.bridge: n.name for n in host.networks or () if n.bridge}
    for net in host.networks or ():
        nodes.add_metric([_net_id(host.hostname, net.name), net.name, "network", host.hostname], 1)
    for d in snapshot.domains:
        vm_id = f"vm:{d.uuid}"
        nodes.add_metric(
            [vm_id, d.meta.labels.get("vm_name", d.name) if d.meta else d.name, "vm", host.hostname], 1
        )
        _edge(edges, host_id, vm_id, "runs", host.hostname)
        targets: dict[str, str] = {}
        for disk in d.meta.disks if d.meta else ():
            pool = disk.pool or next((name for prefix, name in by_path if disk.path.startswith(prefix)), "")
            if pool in pools:
                targets[_pool_id(host.hostname, pool)] = "disk"
        for nic in d.meta.interfaces if d.meta else ():
            network = nic.network or bridges.get(nic.bridge, "")
            if network:
                targets[_net_id(host.hostname, network)] = "nic"
        for target, kind in targets.items():
            _edge(edges, vm_id, target, kind, host.hostname)
    yield nodes
    yield edges


def _edge(fam: GaugeMetricFamily, source: str, target: str, kind: str, host: str) -> None:
    labels = {"id": f"{source}->{target}", "source": source, "target": target, "kind": kind, "host": host}
    fam.samples.append(Sample("novacron_topology_edge", labels, 1))


def _pool_id(host: str, pool: str) -> str:
    return f"pool:{host}/{pool}"


def _net_id(host: str, network: str) -> str:
    return f"network:{host}/{network}"


def _gauge(name: str, help_text: str, labels: list[str], value: float) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, help_text, labels=["host"])
    fam.add_metric(labels, value)
    return fam


def _version(number: int) -> str:
    """libvirt encodes versions as major * 1,000,000 + minor * 1,000 + release."""
    if not number:
        return ""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"
