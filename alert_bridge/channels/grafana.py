"""Grafana annotations for firing and resolved alerts through grafana-client (POST /api/annotations)."""

from __future__ import annotations

import calendar
import time
from typing import Any

from alert_bridge.channels.base import Channel, DeliveryError, Message


class GrafanaChannel(Channel):
    def send(self, message: Message) -> None:
        from grafana_client import GrafanaApi

        alert: dict[str, Any] = message.payload.get("alert") or {}
        if message.kind not in ("firing", "resolved") or not alert:
            return  # annotations mark state changes only; repeats and storms add nothing to a graph
        opts = self.config.options
        api = GrafanaApi.from_url(
            opts["url"], credential=self.config.secret, timeout=self.config.timeout_seconds
        )
        start_ms = int(_epoch(alert["startsAt"]) * 1000)
        end_ms = int(_epoch(alert["endsAt"]) * 1000) if alert.get("endsAt") else start_ms
        tags = ["novacron", message.kind, alert.get("alertname", ""), *opts["tags"]]
        try:
            api.annotations.add_annotation(
                dashboard_uid=opts["dashboard_uid"],
                time_from=start_ms if message.kind == "firing" else end_ms,
                time_to=start_ms if message.kind == "firing" else end_ms,
                tags=[t for t in tags if t],
                text=message.text,
            )
        except Exception as exc:  # grafana-client raises its own hierarchy plus transport errors
            status = getattr(exc, "status_code", None)
            permanent = isinstance(status, int) and 400 <= status < 500 and status != 429
            raise DeliveryError(
                f"grafana: {type(exc).__name__} {status or ''}".strip(), permanent=permanent
            ) from None


def _epoch(iso: str) -> float:
    return float(calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")))
