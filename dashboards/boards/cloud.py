"""Cloud cost and API health: spend per provider and tenant, and the cloud exporter's provider API calls."""

from __future__ import annotations

from dashboards.sdk import (
    VM_INFO,
    Board,
    Query,
    fleet_variables,
    nav_links,
    only_vm,
    stat_panel,
    table_panel,
    ts,
)

COST = "novacron_vm_cost_per_hour"
API = 'provider=~"$provider"'


def cloud() -> Board:
    board = Board(
        uid="novacron-cloud",
        title="NovaCron / Cloud cost and API health",
        description="Hourly VM cost per provider and tenant, and the health and cost of provider API calls.",
        tags=["novacron", "cloud", "cost"],
        folder="NovaCron",
        tenant_scoped=True,
        variables=fleet_variables(),
        links=nav_links(),
    )
    board.row("Cost")
    board.add(
        stat_panel(
            "Cost per hour",
            "Estimated spend per hour of the selected VMs (price catalogue).",
            "currencyUSD",
            Query(f"sum({only_vm(COST)})"),
        ),
        w=6,
        h=5,
    )
    board.add(
        stat_panel(
            "Cost per 30 days",
            "The current hourly cost extrapolated to 30 days.",
            "currencyUSD",
            Query(f"sum({only_vm(COST)}) * 24 * 30"),
        ),
        w=6,
        h=5,
    )
    board.add(
        ts(
            "Cost per hour by provider",
            "Hourly spend per provider.",
            "currencyUSD",
            Query(f"sum by(provider) ({COST} * on(vm_id) group_left(provider) {VM_INFO})", "{{provider}}"),
            stack=True,
        ),
        w=12,
        h=10,
    )
    board.add(
        table_panel(
            "Cost by tenant",
            "Hourly spend per tenant and provider.",
            "currencyUSD",
            Query(
                f"sum by(tenant, provider) ({COST} * on(vm_id) group_left(tenant, provider) {VM_INFO})",
                instant=True,
                table=True,
            ),
        ),
        w=12,
        h=8,
    )
    board.row("Provider APIs")
    board.add(
        ts(
            "API requests",
            "Provider API calls per second by provider and outcome.",
            "reqps",
            Query(
                f"sum by(provider, outcome) (rate(novacron_cloud_api_requests_total{{{API}}}"
                "[$__rate_interval]))",
                "{{provider}} {{outcome}}",
            ),
        ),
        w=12,
    )
    board.add(
        ts(
            "API error ratio",
            "Share of provider API calls that failed (throttling, auth, server errors).",
            "percentunit",
            Query(
                f'sum by(provider) (rate(novacron_cloud_api_requests_total{{{API}, outcome!="success"}}'
                f"[$__rate_interval])) / sum by(provider) (rate(novacron_cloud_api_requests_total{{{API}}}"
                "[$__rate_interval]))",
                "{{provider}}",
            ),
        ),
        w=12,
    )
    board.add(
        ts(
            "API latency p95",
            "95th percentile of provider API call latency.",
            "s",
            Query(
                "histogram_quantile(0.95, sum by(provider, le) (rate("
                f"novacron_cloud_api_request_duration_seconds_bucket{{{API}}}[$__rate_interval])))",
                "{{provider}}",
            ),
        ),
        w=12,
    )
    board.add(
        ts(
            "Data age",
            "Age of the newest cloud datapoint served (cloud metrics arrive late).",
            "s",
            Query(f"max by(provider) (novacron_cloud_data_age_seconds{{{API}}})", "{{provider}}"),
        ),
        w=12,
    )
    return board
