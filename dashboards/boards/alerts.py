"""Alerts: Prometheus alert states, Alertmanager delivery, and the alert bridge's lifecycle and channels."""

from __future__ import annotations

from dashboards.sdk import Board, Query, nav_links, stack_variables, stat_panel, table_panel, ts


def alerts() -> Board:
    board = Board(
        uid="novacron-alerts",
        title="NovaCron / Alerts",
        description="What fires, what Alertmanager delivered, and the bridge's alert lifecycle.",
        tags=["novacron", "alerts"],
        folder="NovaCron",
        variables=stack_variables(),
        links=nav_links(),
        refresh="30s",
    )
    board.row("Prometheus")
    board.add(
        stat_panel(
            "Firing",
            "Alerts firing in Prometheus now.",
            "short",
            Query('count(ALERTS{alertstate="firing"}) or vector(0)'),
            steps=((None, "green"), (1, "red")),
        ),
        w=6,
        h=5,
    )
    board.add(
        stat_panel(
            "Pending",
            "Alerts whose condition holds but whose `for` has not elapsed.",
            "short",
            Query('count(ALERTS{alertstate="pending"}) or vector(0)'),
            steps=((None, "green"), (1, "orange")),
        ),
        w=6,
        h=5,
    )
    board.add(
        ts(
            "Firing by severity",
            "Firing alerts over time, per severity label.",
            "short",
            Query('count by(severity) (ALERTS{alertstate="firing"})', "{{severity}}"),
            stack=True,
        ),
        w=12,
        h=10,
    )
    board.add(
        table_panel(
            "Firing alerts",
            "Every firing alert with its labels.",
            "short",
            Query('ALERTS{alertstate="firing"}', instant=True, table=True),
        ),
        w=12,
        h=8,
    )
    board.row("Alertmanager")
    board.add(
        ts(
            "Alertmanager alerts",
            "Alerts held by Alertmanager by state (active, suppressed).",
            "short",
            Query("sum by(state) (alertmanager_alerts)", "{{state}}"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Notifications",
            "Notifications sent and failed per integration.",
            "ops",
            Query(
                "sum by(integration) (rate(alertmanager_notifications_total[$__rate_interval]))",
                "{{integration}} sent",
            ),
            Query(
                "sum by(integration) (rate(alertmanager_notifications_failed_total[$__rate_interval]))",
                "{{integration}} failed",
            ),
        ),
        w=12,
    )
    board.row("Alert bridge")
    board.add(
        ts(
            "Bridge alerts by state",
            "Alert episodes in the bridge: firing, acknowledged, resolved...",
            "short",
            Query("sum by(state) (novacron_bridge_alerts)", "{{state}}"),
            stack=True,
        ),
        w=12,
    )
    board.add(
        ts(
            "Bridge deliveries",
            "Notifications per channel and result (delivered, failed, dead).",
            "ops",
            Query(
                "sum by(channel, result) (rate(novacron_bridge_notifications_total[$__rate_interval]))",
                "{{channel}} {{result}}",
            ),
        ),
        w=12,
    )
    board.add(
        ts(
            "Outbox and dead letters",
            "Notifications waiting to be sent, and those given up on.",
            "short",
            Query("max(novacron_bridge_outbox_depth)", "outbox"),
            Query("max(novacron_bridge_dead_letters)", "dead letters"),
        ),
        w=12,
    )
    board.add(
        ts(
            "Delivery latency p95",
            "95th percentile from state change to delivery, per channel.",
            "s",
            Query(
                "histogram_quantile(0.95, sum by(channel, le) "
                "(rate(novacron_bridge_delivery_latency_seconds_bucket[$__rate_interval])))",
                "{{channel}}",
            ),
        ),
        w=12,
    )
    return board
