"""Fleet overview, host detail and VM detail: the drill-down path fleet -> host -> VM."""

from __future__ import annotations

from dashboards.sdk import (
    UTIL_THRESHOLDS,
    VM_FILTER,
    Board,
    Query,
    by_vm,
    fleet_variables,
    gauge_bars,
    heatmap_panel,
    host_link,
    host_variables,
    nav_links,
    stat_panel,
    table_panel,
    ts,
    vm_link,
)

CPU = "vm:novacron_vm_cpu_utilisation:ratio"
MEM = "vm:novacron_vm_memory_utilisation:ratio"
# The recording rules in rules/vm.rules.yml unify KVM counters and cloud per-second gauges per concept.
NET_RX = "vm:novacron_vm_network_receive_bytes:rate1m"
NET_TX = "vm:novacron_vm_network_transmit_bytes:rate1m"
DISK_RD = "vm:novacron_vm_disk_read_bytes:rate1m"
DISK_WR = "vm:novacron_vm_disk_write_bytes:rate1m"
HOST_CPU = "host:novacron_host_cpu_utilisation:ratio"
HOST_MEM = "host:novacron_host_memory_utilisation:ratio"
# Pre-aggregated per (provider, region, host, tenant) by rules/dashboards.rules.yml.
VMS_COUNT = "provider_region_host_tenant:novacron_vms:count"
VMS_BY_STATE = "provider_region_host_tenant_state:novacron_vms:count"
CPU_BUCKETS = "provider_region_host_tenant_le:novacron_vm_cpu_utilisation:count"
MEM_BUCKETS = "provider_region_host_tenant_le:novacron_vm_memory_utilisation:count"
VCPUS_SUM = "provider_region_host_tenant:novacron_vm_vcpus:sum"
MEMORY_SUM = "provider_region_host_tenant:novacron_vm_memory_bytes:sum"
CPU_SUM = "provider_region_host_tenant:novacron_vm_cpu_utilisation:sum"


def fleet_overview() -> Board:
    board = Board(
        uid="novacron-fleet-overview",
        title="NovaCron / Fleet overview",
        description="Every VM of KVM, AWS, Azure and GCP: counts, utilisation heatmaps and the busiest VMs.",
        tags=["novacron", "fleet"],
        folder="NovaCron",
        tenant_scoped=True,
        variables=fleet_variables(),
        links=nav_links(),
    )
    board.row("Inventory")
    board.add(
        stat_panel(
            "VMs",
            "VMs known to NovaCron in the selection.",
            "short",
            Query(f"sum({VMS_COUNT}{{{VM_FILTER}}})"),
        ),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "Running",
            "VMs in state running (libvirt code 1, cloud running).",
            "short",
            Query(f'sum({VMS_BY_STATE}{{{VM_FILTER}, state="1"}}) or vector(0)'),
        ),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "Not running",
            "VMs in any other state (paused, shut off, crashed...).",
            "short",
            Query(f'sum({VMS_BY_STATE}{{{VM_FILTER}, state!="1"}}) or vector(0)'),
            steps=((None, "green"), (1, "orange")),
        ),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "vCPUs",
            "Allocated vCPUs across the selection.",
            "short",
            Query(f"sum({VCPUS_SUM}{{{VM_FILTER}}})"),
        ),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "Memory",
            "Allocated memory across the selection.",
            "bytes",
            Query(f"sum({MEMORY_SUM}{{{VM_FILTER}}})"),
        ),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "Mean CPU",
            "Mean CPU utilisation of the selected VMs.",
            "percentunit",
            # Each VM with a CPU value is in exactly one heatmap row: the rows' sum is the divisor.
            Query(f"sum({CPU_SUM}{{{VM_FILTER}}}) / sum({CPU_BUCKETS}{{{VM_FILTER}}})"),
            steps=UTIL_THRESHOLDS,
        ),
        w=4,
        h=4,
    )
    board.add(
        ts(
            "VMs by provider",
            "VM count per provider over time.",
            "short",
            Query(f"sum by(provider) ({VMS_COUNT}{{{VM_FILTER}}})", "{{provider}}"),
            stack=True,
        ),
        w=12,
    )
    board.add(
        ts(
            "VMs by state",
            "VM count per libvirt state code (1 running, 3 paused, 5 shut off, 6 crashed).",
            "short",
            Query(f"sum by(state) ({VMS_BY_STATE}{{{VM_FILTER}}})", "state {{state}}"),
            stack=True,
        ),
        w=12,
    )
    board.row("Utilisation")
    board.add(
        heatmap_panel(
            "CPU utilisation heatmap",
            "Distribution of per-VM CPU utilisation over time.",
            "percentunit",
            f"sum by(le) ({CPU_BUCKETS}{{{VM_FILTER}}})",
        ),
        w=12,
    )
    board.add(
        heatmap_panel(
            "Memory utilisation heatmap",
            "Distribution of per-VM memory utilisation over time.",
            "percentunit",
            f"sum by(le) ({MEM_BUCKETS}{{{VM_FILTER}}})",
        ),
        w=12,
    )
    board.add(
        gauge_bars(
            "Top 10 VMs by CPU",
            "The ten busiest VMs right now (click through to the VM).",
            "percentunit",
            Query(f"topk(10, {by_vm(CPU, 'vm_name')})", "{{vm_name}}", instant=True),
        ),
        w=8,
        h=9,
    )
    board.add(
        gauge_bars(
            "Top 10 VMs by memory",
            "The ten VMs using most of their memory.",
            "percentunit",
            Query(f"topk(10, {by_vm(MEM, 'vm_name')})", "{{vm_name}}", instant=True),
        ),
        w=8,
        h=9,
    )
    board.add(
        gauge_bars(
            "Top 10 VMs by network",
            "Receive plus transmit rate of the ten busiest VMs right now.",
            "Bps",
            Query(
                f"topk(10, {by_vm(f'{NET_RX} + on(vm_id) {NET_TX}', 'vm_name')})", "{{vm_name}}", instant=True
            ),
            max_value=None,
        ),
        w=8,
        h=9,
    )
    board.row("VMs")
    board.add(
        table_panel(
            "VM list",
            "Every selected VM with its placement; click a VM or host to drill down.",
            "percentunit",
            Query(by_vm(CPU, "vm_name, host, tenant, provider, region"), instant=True, table=True),
            links=[vm_link(), host_link()],
        ),
        w=24,
        h=10,
    )
    return board


def host_detail() -> Board:
    host = 'host="$host"'
    host_vms = f"novacron_vm_info{{{host}}}"
    board = Board(
        uid="novacron-host-detail",
        title="NovaCron / Host detail",
        description="One hypervisor host: capacity, utilisation, overcommit and the VMs placed on it.",
        tags=["novacron", "host"],
        folder="NovaCron",
        variables=host_variables(),
        links=nav_links(),
    )
    board.row("Capacity")
    board.add(
        stat_panel(
            "VMs on host",
            "Domains defined on this host, whatever their state.",
            "short",
            Query(f"sum(novacron_host_domains{{{host}}})"),
        ),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "Host CPUs",
            "Logical CPUs reported by libvirt (sockets x cores x threads).",
            "short",
            Query(f"max(novacron_host_cpus{{{host}}})"),
        ),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "Host memory",
            "Physical memory of the host.",
            "bytes",
            Query(f"max(novacron_host_memory_bytes{{{host}}})"),
        ),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "vCPU overcommit",
            "Allocated vCPUs per logical CPU (over 1 means overcommitted).",
            "short",
            Query(f"max(novacron_host_cpu_overcommit_ratio{{{host}}})"),
            steps=((None, "green"), (2, "orange"), (4, "red")),
        ),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "Memory overcommit",
            "Memory allocated to VMs over the host's memory.",
            "percentunit",
            Query(f"max(novacron_host_memory_overcommit_ratio{{{host}}})"),
            steps=((None, "green"), (1, "orange"), (1.5, "red")),
        ),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "Running VMs",
            "Domains in the running state.",
            "short",
            Query(f'sum(novacron_host_domains{{{host}, state="running"}})'),
        ),
        w=4,
        h=4,
    )
    board.add(
        ts(
            "Host CPU utilisation",
            "Busy share of the host's CPUs (all modes but idle).",
            "percentunit",
            Query(f"{HOST_CPU}{{{host}}}", "host CPU"),
            max_value=1,
        ),
        w=12,
    )
    board.add(
        ts(
            "Host memory",
            "Used memory against the host's total.",
            "bytes",
            Query(
                f"max(novacron_host_memory_bytes{{{host}}}) - max(novacron_host_memory_free_bytes{{{host}}})",
                "used",
            ),
            Query(f"max(novacron_host_memory_allocated_bytes{{{host}}})", "allocated to VMs"),
            Query(f"max(novacron_host_memory_bytes{{{host}}})", "total"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Domains by state",
            "Domains on the host per libvirt state.",
            "short",
            Query(f"sum by(state) (novacron_host_domains{{{host}}}) > 0", "{{state}}"),
            stack=True,
        ),
        w=12,
    )
    board.add(
        ts(
            "Host CPU time by mode",
            "Host CPU seconds per second by mode (user, system, iowait).",
            "short",
            Query(
                f'sum by(mode) (rate(novacron_host_cpu_seconds_total{{{host}, mode!="idle"}}'
                "[$__rate_interval]))",
                "{{mode}}",
            ),
            stack=True,
        ),
        w=12,
    )
    board.row("VMs on this host")
    board.add(
        gauge_bars(
            "Top 10 VMs by CPU",
            "The ten busiest VMs on this host right now.",
            "percentunit",
            Query(f"topk(10, {CPU} * on(vm_id) group_left(vm_name) {host_vms})", "{{vm_name}}", instant=True),
        ),
        w=12,
    )
    board.add(
        gauge_bars(
            "Top 10 VMs by network",
            "Receive plus transmit rate of the ten busiest VMs on this host right now.",
            "Bps",
            Query(
                f"topk(10, ({NET_RX} + on(vm_id) {NET_TX}) * on(vm_id) group_left(vm_name) {host_vms})",
                "{{vm_name}}",
                instant=True,
            ),
            max_value=None,
        ),
        w=12,
    )
    board.add(
        table_panel(
            "VMs",
            "The VMs on this host with their CPU utilisation; click one for its detail.",
            "percentunit",
            Query(
                f"{CPU} * on(vm_id) group_left(vm_name, tenant, flavor) {host_vms}", instant=True, table=True
            ),
            links=[vm_link()],
        ),
        w=24,
        h=9,
    )
    return board


def vm_detail() -> Board:
    vm = 'vm_id="$vm"'
    board = Board(
        uid="novacron-vm-detail",
        title="NovaCron / VM detail",
        description="One VM, whatever its provider: state, CPU, memory, network and disk, with its baseline.",
        tags=["novacron", "vm"],
        folder="NovaCron",
        tenant_scoped=True,
        variables=fleet_variables(with_vm=True),
        links=nav_links(),
    )
    board.row("State")
    board.add(
        stat_panel(
            "State",
            "libvirt state code: 1 running, 3 paused, 5 shut off, 6 crashed.",
            "short",
            Query(f"novacron_vm_state{{{vm}}}"),
            steps=((None, "orange"), (1, "green"), (2, "orange")),
        ),
        w=6,
        h=4,
    )
    board.add(
        stat_panel("vCPUs", "vCPUs allocated to the VM.", "short", Query(f"novacron_vm_vcpus{{{vm}}}")),
        w=6,
        h=4,
    )
    board.add(
        stat_panel(
            "Memory", "Memory allocated to the VM.", "bytes", Query(f"novacron_vm_memory_bytes{{{vm}}}")
        ),
        w=6,
        h=4,
    )
    board.add(
        table_panel(
            "Placement",
            "Provider, region, host and tenant of the VM (click the host).",
            "short",
            Query(f"novacron_vm_info{{{vm}}}", instant=True, table=True),
            links=[host_link()],
            hide=("Time", "__name__", "job", "instance", "Value"),
        ),
        w=6,
        h=4,
    )
    board.row("Usage")
    board.add(
        ts(
            "CPU utilisation",
            "CPU utilisation with the learned seasonal band from the analytics sidecar.",
            "percentunit",
            Query(f"{CPU}{{{vm}}}", "cpu"),
            Query(f'novacron_baseline_upper{{{vm}, resource="cpu"}}', "baseline upper"),
            Query(f'novacron_baseline_lower{{{vm}, resource="cpu"}}', "baseline lower"),
            max_value=1,
        ),
        w=12,
    )
    board.add(
        ts(
            "Memory utilisation",
            "Share of the VM's memory in use (balloon statistics or cloud agent).",
            "percentunit",
            Query(f"{MEM}{{{vm}}}", "memory"),
            max_value=1,
        ),
        w=12,
    )
    board.add(
        ts(
            "Network",
            "Receive and transmit rate.",
            "Bps",
            Query(f"{NET_RX}{{{vm}}}", "receive"),
            Query(f"{NET_TX}{{{vm}}}", "transmit"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Disk",
            "Read and write throughput.",
            "Bps",
            Query(f"{DISK_RD}{{{vm}}}", "read"),
            Query(f"{DISK_WR}{{{vm}}}", "write"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Anomaly score",
            "The analytics sidecar's anomaly score per resource (0 normal, 1 anomalous).",
            "short",
            Query(f"novacron_anomaly_score{{{vm}}}", "{{resource}}"),
            max_value=1,
        ),
        w=12,
    )
    board.add(
        ts(
            "CPU forecast",
            "Forecast busy cores for the next day with its prediction interval.",
            "short",
            Query(f'novacron_vm_cpu_forecast_cores{{{vm}, horizon="1d"}}', "{{bound}}"),
        ),
        w=12,
    )
    return board
