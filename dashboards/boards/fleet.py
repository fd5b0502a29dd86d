"""Fleet overview, host detail and VM detail: the drill-down path fleet -> host -> VM."""

from __future__ import annotations

from dashboards.sdk import (
    UTIL_THRESHOLDS,
    VM_INFO,
    Board,
    Query,
    by_vm,
    fleet_variables,
    gauge_bars,
    heatmap_panel,
    host_link,
    host_variables,
    nav_links,
    only_vm,
    stat_panel,
    table_panel,
    ts,
    vm_link,
)

CPU = "vm:novacron_vm_cpu_utilisation:ratio"
MEM = "vm:novacron_vm_memory_utilisation:ratio"
# KVM exposes counters, clouds expose per-second gauges: one expression covers both.
NET_RX = (
    "sum by(vm_id) (rate(novacron_vm_network_receive_bytes_total[$__rate_interval]))"
    " or novacron_vm_network_receive_bytes_per_second"
)
NET_TX = (
    "sum by(vm_id) (rate(novacron_vm_network_transmit_bytes_total[$__rate_interval]))"
    " or novacron_vm_network_transmit_bytes_per_second"
)
DISK_RD = (
    "sum by(vm_id) (rate(novacron_vm_disk_read_bytes_total[$__rate_interval]))"
    " or novacron_vm_disk_read_bytes_per_second"
)
DISK_WR = (
    "sum by(vm_id) (rate(novacron_vm_disk_write_bytes_total[$__rate_interval]))"
    " or novacron_vm_disk_write_bytes_per_second"
)


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
        stat_panel("VMs", "VMs known to NovaCron in the selection.", "short", Query(f"count({VM_INFO})")),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "Running",
            "VMs in state running (libvirt code 1, cloud running).",
            "short",
            Query(f"count({only_vm('novacron_vm_state == 1')})"),
        ),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "Not running",
            "VMs in any other state (paused, shut off, crashed...).",
            "short",
            Query(f"count({only_vm('novacron_vm_state != 1')}) or vector(0)"),
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
            Query(f"sum({only_vm('novacron_vm_vcpus')})"),
        ),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "Memory",
            "Allocated memory across the selection.",
            "bytes",
            Query(f"sum({only_vm('novacron_vm_memory_bytes')})"),
        ),
        w=4,
        h=4,
    )
    board.add(
        stat_panel(
            "Mean CPU",
            "Mean CPU utilisation of the selected VMs.",
            "percentunit",
            Query(f"avg({only_vm(CPU)})"),
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
            Query(f"count by(provider) ({VM_INFO})", "{{provider}}"),
            stack=True,
        ),
        w=12,
    )
    board.add(
        ts(
            "VMs by state",
            "VM count per libvirt state code (1 running, 3 paused, 5 shut off, 6 crashed).",
            "short",
            Query(f"count_values(\"state\", {only_vm('novacron_vm_state')})", "state {{state}}"),
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
            Query(only_vm(CPU), "{{vm_id}}"),
        ),
        w=12,
    )
    board.add(
        heatmap_panel(
            "Memory utilisation heatmap",
            "Distribution of per-VM memory utilisation over time.",
            "percentunit",
            Query(only_vm(MEM), "{{vm_id}}"),
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
        ts(
            "Top 10 VMs by network",
            "Receive plus transmit rate of the ten busiest VMs.",
            "Bps",
            Query(f"topk(10, {by_vm(f'({NET_RX}) + on(vm_id) ({NET_TX})', 'vm_name')})", "{{vm_name}}"),
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
    host_vms = 'novacron_vm_info{host="$host"}'
    board = Board(
        uid="novacron-host-detail",
        title="NovaCron / Host detail",
        description="One hypervisor host: capacity, allocation and the VMs placed on it.",
        tags=["novacron", "host"],
        folder="NovaCron",
        variables=host_variables(),
        links=nav_links(),
    )
    board.row("Capacity")
    board.add(
        stat_panel("VMs on host", "Domains defined on this host.", "short", Query(f"count({host_vms})")),
        w=6,
        h=4,
    )
    board.add(
        stat_panel(
            "Host CPUs",
            "Physical CPUs (threads) reported by libvirt.",
            "short",
            Query('novacron_host_cpus{host="$host"}'),
        ),
        w=6,
        h=4,
    )
    board.add(
        stat_panel(
            "vCPU overcommit",
            "Allocated vCPUs per physical CPU.",
            "short",
            Query(
                f"sum(novacron_vm_vcpus * on(vm_id) group_left() {host_vms})"
                ' / sum(novacron_host_cpus{host="$host"})'
            ),
            steps=((None, "green"), (2, "orange"), (4, "red")),
        ),
        w=6,
        h=4,
    )
    board.add(
        stat_panel(
            "Memory allocated",
            "VM memory as a share of the host's memory.",
            "percentunit",
            Query(
                f"sum(novacron_vm_memory_bytes * on(vm_id) group_left() {host_vms})"
                ' / sum(novacron_host_memory_bytes{host="$host"})'
            ),
            steps=UTIL_THRESHOLDS,
        ),
        w=6,
        h=4,
    )
    board.add(
        ts(
            "CPU used by VMs",
            "Sum of the VMs' CPU time per second on this host (cores busy).",
            "short",
            Query(
                f"sum(rate(novacron_vm_cpu_seconds_total[$__rate_interval]) * on(vm_id) group_left() "
                f"{host_vms})",
                "cores busy",
            ),
            Query('sum(novacron_host_cpus{host="$host"})', "host CPUs"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Memory",
            "Memory allocated to VMs against the host's total.",
            "bytes",
            Query(f"sum(novacron_vm_memory_bytes * on(vm_id) group_left() {host_vms})", "allocated to VMs"),
            Query('sum(novacron_host_memory_bytes{host="$host"})', "host total"),
        ),
        w=12,
    )
    board.row("VMs on this host")
    board.add(
        ts(
            "CPU utilisation per VM",
            "Per-VM CPU utilisation on this host.",
            "percentunit",
            Query(f"{CPU} * on(vm_id) group_left(vm_name) {host_vms}", "{{vm_name}}"),
            max_value=1,
        ),
        w=12,
    )
    board.add(
        ts(
            "Network per VM",
            "Per-VM receive plus transmit rate.",
            "Bps",
            Query(
                f"(({NET_RX}) + on(vm_id) ({NET_TX})) * on(vm_id) group_left(vm_name) {host_vms}",
                "{{vm_name}}",
            ),
        ),
        w=12,
    )
    board.add(
        table_panel(
            "VMs",
            "The VMs on this host; click one for its detail.",
            "short",
            Query(
                f"novacron_vm_vcpus * on(vm_id) group_left(vm_name, tenant, flavor) {host_vms}",
                instant=True,
                table=True,
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
            Query(f"novacron_baseline_upper{{{vm}}}", "baseline upper"),
            Query(f"novacron_baseline_lower{{{vm}}}", "baseline lower"),
            max_value=1,
        ),
        w=12,
    )
    board.add(
        ts(
            "Memory utilisation",
            "Share of the VM's memory in use (guest or balloon statistics).",
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
            Query(f"({NET_RX}) * on(vm_id) group_left() novacron_vm_info{{{vm}}}", "receive"),
            Query(f"({NET_TX}) * on(vm_id) group_left() novacron_vm_info{{{vm}}}", "transmit"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Disk",
            "Read and write throughput.",
            "Bps",
            Query(f"({DISK_RD}) * on(vm_id) group_left() novacron_vm_info{{{vm}}}", "read"),
            Query(f"({DISK_WR}) * on(vm_id) group_left() novacron_vm_info{{{vm}}}", "write"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Anomaly score",
            "The analytics sidecar's anomaly score for this VM (0 normal, 1 anomalous).",
            "short",
            Query(f"novacron_anomaly_score{{{vm}}}", "{{resource}}"),
            max_value=1,
        ),
        w=24,
    )
    return board
