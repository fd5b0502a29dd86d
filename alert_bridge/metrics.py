"""The bridge's /metrics: alerts by state, outbox depth and dead letters (from the store), delivery counters.

# HELP novacron_bridge_alerts Alert episodes by lifecycle state.
# TYPE novacron_bridge_alerts gauge
novacron_bridge_alerts{state="firing"} 3.0
novacron_bridge_notifications_total{channel="email",result="delivered"} 12.0
novacron_bridge_notifications_failed_total{channel="sms"} 2.0
novacron_bridge_outbox_depth 0.0
novacron_bridge_dead_letters 1.0
novacron_bridge_delivery_latency_seconds_bucket{channel="email",le="0.5"} 11.0
novacron_bridge_enrichment_failures_total{reason="timeout"} 1.0
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import func, select

from alert_bridge import lifecycle as lc
from alert_bridge.db import Database, alerts, heartbeats, outbox

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class StoreCollector(Collector):
    """Reads counts from the database at scrape time, so every replica reports the shared truth."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        states = GaugeMetricFamily(
            "novacron_bridge_alerts", "Alert episodes by lifecycle state.", labels=["state"]
        )
        depth = GaugeMetricFamily("novacron_bridge_outbox_depth", "Notifications waiting in the outbox.")
        dead = GaugeMetricFamily("novacron_bridge_dead_letters", "Notifications in the dead-letter queue.")
        up = GaugeMetricFamily("novacron_bridge_store_up", "1 when the last read of the store succeeded.")
        beat = GaugeMetricFamily(
            "novacron_bridge_heartbeat_last_seen_timestamp_seconds",
            "When the watchdog (dead man's switch) alert last arrived.",
            labels=["alertname"],
        )
        try:
            with self.db.read() as conn:
                counts: dict[str, int] = dict(
                    conn.execute(select(alerts.c.state, func.count()).group_by(alerts.c.state)).all()
                )
                beats = conn.execute(select(heartbeats.c.name, heartbeats.c.last_seen_at)).all()
                by_status: dict[str, int] = dict(
                    conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all()
                )
        except Exception as exc:  # a scrape must still answer, with store_up 0
            log.warning("metrics: store unavailable: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        for state in lc.STATES:
            states.add_metric([state], counts.get(state, 0))
        depth.add_metric([], by_status.get("pending", 0))
        dead.add_metric([], by_status.get("dead", 0))
        up.add_metric([], 1)
        for name, seen in beats:
            beat.add_metric([str(name)], float(seen))  # type: ignore[arg-type]
        yield from (states, depth, dead, up, beat)


class BridgeMetrics:
    """Per-process counters and the delivery latency histogram, plus the store collector."""

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(db))
        self.notifications = Counter(
            "novacron_bridge_notifications",
            "Delivery attempts by channel and result (delivered, failed, dead).",
            ["channel", "result"],
            registry=self.registry,
        )
        self.failed = Counter(
            "novacron_bridge_notifications_failed",
            "Failed delivery attempts by channel.",
            ["channel"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "novacron_bridge_delivery_latency_seconds",
            "From the state change that caused a notification to its successful delivery.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.intake = Counter(
            "novacron_bridge_webhook_alerts",
            "Alerts received on the webhook by outcome (created, updated, resolved, duplicate).",
            ["outcome"],
            registry=self.registry,
        )
        self.requests = Counter(
            "novacron_bridge_webhook_requests",
            "Webhook requests by HTTP status code.",
            ["code"],
            registry=self.registry,
        )
        self.enrichment_failures = Counter(
            "novacron_bridge_enrichment_failures",
            "Anomaly alert notifications sent without the sidecar's likely-cause context, by reason.",
            ["reason"],
            registry=self.registry,
        )
