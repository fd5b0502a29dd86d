"""Analytics and capacity planning from the sidecar's write-back metrics (recommendations, forecasts)."""

from __future__ import annotations

from dashboards.sdk import (
    VM_FILTER,
    VM_INFO,
    Board,
    Query,
    by_vm,
    fleet_variables,
    gauge_bars,
    nav_links,
    stat_panel,
    table_panel,
    ts,
    vm_link,
)

CPU = "vm:novacron_vm_cpu_utilisation:ratio"
SAVINGS = "novacron_vm_potential_savings_per_month"
# Pre-aggregated per (provider, region, host, tenant) by rules/dashboards.rules.yml.
FORECAST_1D = "provider_region_host_tenant_bound:novacron_vm_cpu_forecast_cores:sum1d"
CLASSES = "provider_region_host_tenant_class:novacron_vm_workload_class:count"
# The sidecar rewrites its results once a cycle (15 min by default): a finer step only repeats values.
SIDECAR_STEP = "5m"
IDLE_SUM = "provider_region_host_tenant:novacron_vm_idle:sum"
VCPUS_SUM = "provider_region_host_tenant:novacron_vm_vcpus:sum"
RECOMMENDED_SUM = "provider_region_host_tenant_risk:novacron_vm_recommended_vcpus:sum"
EFFICIENCY_SUM = "provider_region_host_tenant:novacron_vm_efficiency_ratio:sum"
EFFICIENCY_COUNT = "provider_region_host_tenant:novacron_vm_efficiency_ratio:count"


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
            "VMs meeting the sidecar's idle thresholds.",
            "short",
            Query(f"sum({IDLE_SUM}{{{VM_FILTER}}}) or vector(0)"),
            steps=((None, "green"), (1, "orange")),
        ),
        w=6,
        h=5,
    )
    board.add(
        stat_panel(
            "vCPUs reclaimable",
            "Allocated minus recommended vCPUs over the selection.",
            "short",
            Query(
                f"sum({VCPUS_SUM}{{{VM_FILTER}}})"
                f' - sum({RECOMMENDED_SUM}{{{VM_FILTER}, risk="balanced"}})'
            ),
        ),
        w=6,
        h=5,
    )
    board.add(
        stat_panel(
            "Hosts freed by consolidation",
            "Hosts in use now minus hosts the bin packing needs.",
            "short",
            Query(
                'sum(novacron_consolidation_hosts{scenario="current"}) - '
                'sum(novacron_consolidation_hosts{scenario="needed"})'
            ),
        ),
        w=6,
        h=5,
    )
    board.add(
        stat_panel(
            "Fleet efficiency",
            "Mean efficiency score: p95 usage over allocation, capped at 1.",
            "percentunit",
            Query(f"sum({EFFICIENCY_SUM}{{{VM_FILTER}}}) / sum({EFFICIENCY_COUNT}{{{VM_FILTER}}})"),
            steps=((None, "red"), (0.3, "orange"), (0.6, "green")),
        ),
        w=6,
        h=5,
    )
    board.add(
        table_panel(
            "Top 50 savings",
            "VMs whose right-sizing saves most per month (balanced risk); click a VM for its detail.",
            "currencyUSD",
            Query(f"topk(50, {by_vm(SAVINGS, 'vm_name, host, tenant')})", instant=True, table=True),
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
            Query(
                f"sum by(class) ({CLASSES}{{{VM_FILTER}}})",
                "{{class}}",
            ),
            stack=True,
            min_interval=SIDECAR_STEP,
        ),
        w=12,
        h=9,
    )
    board.row("Forecasts and anomalies")
    board.add(
        ts(
            "Fleet CPU forecast (1 day)",
            "Forecast busy cores one day ahead with its prediction interval.",
            "short",
            Query(f"sum by(bound) ({FORECAST_1D}{{{VM_FILTER}}})", "{{bound}}"),
            min_interval=SIDECAR_STEP,
        ),
        w=12,
    )
    board.add(
        gauge_bars(
            "Top anomaly scores",
            "The ten highest anomaly scores right now (0 normal, 1 anomalous).",
            "short",
            Query(
                f"topk(10, {by_vm('novacron_anomaly_score', 'vm_name')})",
                "{{vm_name}} {{resource}}",
                instant=True,
            ),
        ),
        w=12,
    )
    board.add(
        table_panel(
            "CPU against its baseline band",
            "VMs whose CPU is above the upper edge of the learned "
            "band, or whose anomaly score is over 0.5.",
            "percentunit",
            Query(
                f'({CPU} > on(vm_id) novacron_baseline_upper{{resource="cpu"}} '
                f'or on(vm_id) {CPU} and on(vm_id) novacron_anomaly_score{{resource="cpu"}} > 0.5)'
                f" * on(vm_id) group_left(vm_name, host) {VM_INFO}",
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
        description="Allocation against capacity per host; forecast time to exhaustion of hosts and pools.",
        tags=["novacron", "capacity"],
        folder="NovaCron",
        variables=fleet_variables(),
        links=nav_links(),
        time_from="now-7d",
        refresh="5m",
    )
    board.add(
        table_panel(
            "Host time to exhaustion",
            "Forecast days until a host resource runs out (sidecar).",
            "d",
            Query(
                'min by(host, resource) (novacron_host_time_to_exhaustion_seconds{host=~"$host"})' " / 86400",
                instant=True,
                table=True,
            ),
        ),
        w=12,
        h=9,
    )
    board.add(
        table_panel(
            "Storage pool time to exhaustion",
            "Forecast days until a pool fills (sidecar).",
            "d",
            Query(
                'min by(host, pool) (novacron_storage_pool_time_to_exhaustion_seconds{host=~"$host"})'
                " / 86400",
                instant=True,
                table=True,
            ),
        ),
        w=12,
        h=9,
    )
    board.add(
        ts(
            "vCPU overcommit per host",
            "Allocated vCPUs per logical CPU.",
            "short",
            Query('max by(host) (novacron_host_cpu_overcommit_ratio{host=~"$host"})', "{{host}}"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Memory overcommit per host",
            "Allocated VM memory over host memory.",
            "percentunit",
            Query('max by(host) (novacron_host_memory_overcommit_ratio{host=~"$host"})', "{{host}}"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Storage pool usage",
            "Allocated share of each storage pool.",
            "percentunit",
            Query(
                'max by(host, pool) (novacron_storage_pool_allocation_bytes{host=~"$host"}) / '
                'max by(host, pool) (novacron_storage_pool_capacity_bytes{host=~"$host"} > 0)',
                "{{host}} {{pool}}",
            ),
            max_value=1,
        ),
        w=12,
    )
    board.add(
        ts(
            "VM count trend",
            "VMs per provider, for growth planning.",
            "short",
            Query(
                f"sum by(provider) (provider_region_host_tenant:novacron_vms:count{{{VM_FILTER}}})",
                "{{provider}}",
            ),
        ),
        w=12,
    )
    return board
