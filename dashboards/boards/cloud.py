"""Cloud cost and API health: VM cost per provider and tenant, and the cloud exporter's provider API calls."""

from __future__ import annotations

from dashboards.sdk import (
    VM_FILTER,
    Board,
    Query,
    fleet_variables,
    nav_links,
    stat_panel,
    table_panel,
    ts,
)

COST_SUM = "provider_region_host_tenant:novacron_vm_cost_per_month:sum"  # rules/dashboards.rules.yml
SAVINGS_SUM = "provider_region_host_tenant:novacron_vm_potential_savings_per_month:sum"
API = 'provider=~"$provider", region=~"$region"'


def _rate(metric: str, by: str) -> str:
    return f"sum by({by}) (rate({metric}{{{API}}}[$__rate_interval]))"


def cloud() -> Board:
    board = Board(
        uid="novacron-cloud",
        title="NovaCron / Cloud cost and API health",
        description="Monthly VM cost per provider and tenant; health, freshness and cost of cloud API calls.",
        tags=["novacron", "cloud", "cost"],
        folder="NovaCron",
        tenant_scoped=True,
        variables=fleet_variables(),
        links=nav_links(),
    )
    board.row("Cost")
    board.add(
        stat_panel(
            "Cost per month",
            "Estimated monthly cost of the selected VMs (price catalogue).",
            "currencyUSD",
            Query(f"sum({COST_SUM}{{{VM_FILTER}}})"),
        ),
        w=6,
        h=5,
    )
    board.add(
        stat_panel(
            "Potential savings",
            "Monthly savings if every right-sizing recommendation were applied.",
            "currencyUSD",
            Query(f"sum({SAVINGS_SUM}{{{VM_FILTER}}})"),
        ),
        w=6,
        h=5,
    )
    board.add(
        stat_panel(
            "Cloud API cost",
            "Estimated cost of the exporter's own cloud API calls per day.",
            "currencyUSD",
            Query(f"sum(increase(novacron_cloud_api_cost_dollars_total{{{API}}}[1d]))"),
        ),
        w=6,
        h=5,
    )
    board.add(
        stat_panel(
            "Provider targets up",
            "Cloud accounts/regions whose last refresh succeeded.",
            "short",
            Query(f"sum(novacron_cloud_up{{{API}}})"),
        ),
        w=6,
        h=5,
    )
    board.add(
        ts(
            "Cost per month by provider",
            "Monthly cost per provider.",
            "currencyUSD",
            Query(
                f"sum by(provider) ({COST_SUM}{{{VM_FILTER}}})",
                "{{provider}}",
            ),
            stack=True,
        ),
        w=12,
        h=9,
    )
    board.add(
        table_panel(
            "Cost by tenant",
            "Monthly cost per tenant and provider.",
            "currencyUSD",
            Query(
                f"sum by(tenant, provider) ({COST_SUM}{{{VM_FILTER}}})",
                instant=True,
                table=True,
            ),
        ),
        w=12,
        h=9,
    )
    board.row("Provider APIs")
    board.add(
        ts(
            "API calls",
            "Cloud API calls per second by provider and operation.",
            "reqps",
            Query(
                _rate("novacron_cloud_api_calls_total", "provider, operation"), "{{provider}} {{operation}}"
            ),
        ),
        w=12,
    )
    board.add(
        ts(
            "API errors and throttling",
            "Failed and throttled calls per second.",
            "reqps",
            Query(_rate("novacron_cloud_api_errors_total", "provider"), "{{provider}} errors"),
            Query(_rate("novacron_cloud_api_throttled_total", "provider"), "{{provider}} throttled"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Data age",
            "Age of the oldest value served per metric (cloud metrics arrive late).",
            "s",
            Query(
                f"max by(provider, metric) (novacron_cloud_data_age_seconds{{{API}}})",
                "{{provider}} {{metric}}",
            ),
        ),
        w=12,
    )
    board.add(
        ts(
            "Refresh duration",
            "How long each account/region refresh takes.",
            "s",
            Query(
                f"max by(provider, region) (novacron_cloud_refresh_duration_seconds{{{API}}})",
                "{{provider}} {{region}}",
            ),
        ),
        w=12,
    )
    return board
