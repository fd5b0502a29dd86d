"""Analytics and capacity planning from the sidecar's write-back metrics (recommendations, forecasts)."""

from __future__ import annotations

from dashboards.sdk import (
    VM_INFO,
    Board,
    Query,
    by_vm,
    fleet_variables,
    nav_links,
    only_vm,
    stat_panel,
    table_panel,
    ts,
    vm_link,
)

IDLE = 'novacron_vm_workload_class{class="idle"} == 1'


def analytics() -> Board:
    board = Board(
        uid="novacron-analytics",
        title="NovaCron / Analytics",
        description="Right-sizing, idle VMs, consolidation, efficiency, forecasts, anomaly scores.",
        tags=["novacron", "analytics"],
        folder="NovaCron",
        tenant_scoped=True,
        variables=fleet_variables(),
        links=nav_links(),
        time_from="now-24h",
    )
    board.row("Right-sizing")
    board.add(
        stat_panel(
            "Idle VMs",
            "VMs the sidecar classifies as idle.",
            "short",
            Query(f"count({only_vm(IDLE)}) or vector(0)"),
            steps=((None, "green"), (1, "orange")),
        ),
        w=6,
        h=5,
    )
    board.add(
        stat_panel(
            "vCPUs reclaimable",
            "Allocated minus recommended vCPUs, summed over the selection.",
            "short",
            Query(
                f"sum({only_vm('novacron_vm_vcpus')}) - " f"sum({only_vm('novacron_vm_recommended_vcpus')})"
            ),
        ),
        w=6,
        h=5,
    )
    board.add(
        stat_panel(
            "Hosts freed by consolidation",
            "Hosts the consolidation plan would empty.",
            "short",
            Query("max(novacron_consolidation_hosts_freed)"),
        ),
        w=6,
        h=5,
    )
    board.add(
        stat_panel(
            "Fleet efficiency",
            "Used CPU over allocated CPU across the selection.",
            "percentunit",
            Query(f"avg({only_vm('vm:novacron_vm_cpu_utilisation:ratio')})"),
            steps=((None, "red"), (0.3, "orange"), (0.6, "green")),
        ),
        w=6,
        h=5,
    )
    board.add(
        table_panel(
            "Recommendations",
            "Recommended vCPUs per VM (click a VM for its detail).",
            "short",
            Query(by_vm("novacron_vm_recommended_vcpus", "vm_name, host, tenant"), instant=True, table=True),
            links=[vm_link()],
        ),
        w=12,
        h=9,
    )
    board.add(
        ts(
            "Workload classes",
            "VMs per workload class (idle, steady, diurnal, bursty, growing).",
            "short",
            Query(f"count by(class) ({only_vm('novacron_vm_workload_class == 1')})", "{{class}}"),
            stack=True,
        ),
        w=12,
        h=9,
    )
    board.row("Forecasts and anomalies")
    board.add(
        ts(
            "Fleet CPU forecast",
            "Forecast of busy cores with its prediction interval.",
            "short",
            Query(f"sum({only_vm('novacron_vm_cpu_forecast_cores')})", "forecast"),
            Query(f"sum({only_vm('novacron_vm_cpu_forecast_upper_cores')})", "upper"),
            Query(f"sum({only_vm('novacron_vm_cpu_forecast_lower_cores')})", "lower"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Anomaly scores",
            "The ten highest anomaly scores (0 normal, 1 anomalous).",
            "short",
            Query(f"topk(10, {by_vm('novacron_anomaly_score', 'vm_name')})", "{{vm_name}}"),
            max_value=1,
        ),
        w=12,
    )
    board.add(
        table_panel(
            "Outside baseline band",
            "Series whose value left the learned seasonal band.",
            "short",
            Query(
                "(novacron_baseline_upper < on(vm_id) group_left() "
                f"vm:novacron_vm_cpu_utilisation:ratio) * on(vm_id) group_left(vm_name) {VM_INFO} "
                f"or novacron_anomaly_score * on(vm_id) group_left(vm_name) {VM_INFO} > 0.9",
                instant=True,
                table=True,
            ),
            links=[vm_link()],
        ),
        w=24,
        h=8,
    )
    return board


def capacity() -> Board:
    board = Board(
        uid="novacron-capacity",
        title="NovaCron / Capacity planning",
        description="Allocation against capacity per host, headroom and forecast time to exhaustion.",
        tags=["novacron", "capacity"],
        folder="NovaCron",
        variables=fleet_variables(),
        links=nav_links(),
        time_from="now-7d",
        refresh="5m",
    )
    board.add(
        table_panel(
            "Time to exhaustion",
            "Forecast days until a host resource runs out (sidecar).",
            "d",
            Query(
                "min by(host, resource) (novacron_host_exhaustion_seconds) / 86400", instant=True, table=True
            ),
        ),
        w=12,
        h=9,
    )
    board.add(
        ts(
            "vCPU allocation per host",
            "Allocated vCPUs divided by the host's CPUs.",
            "percentunit",
            Query(
                f"sum by(host) (novacron_vm_vcpus * on(vm_id) group_left(host) {VM_INFO}) "
                "/ on(host) group_left() max by(host) (novacron_host_cpus)",
                "{{host}}",
            ),
        ),
        w=12,
        h=9,
    )
    board.add(
        ts(
            "Memory allocation per host",
            "Allocated VM memory divided by the host's memory.",
            "percentunit",
            Query(
                f"sum by(host) (novacron_vm_memory_bytes * on(vm_id) group_left(host) {VM_INFO}) "
                "/ on(host) group_left() max by(host) (novacron_host_memory_bytes)",
                "{{host}}",
            ),
        ),
        w=12,
    )
    board.add(
        ts(
            "VM count trend",
            "VMs per provider, for growth planning.",
            "short",
            Query(f"count by(provider) ({VM_INFO})", "{{provider}}"),
        ),
        w=12,
    )
    return board
