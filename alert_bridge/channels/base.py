"""The channel plugin interface and the rendering of an outbox payload into text, HTML and JSON."""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass
from typing import Any

import requests

from alert_bridge.config import ChannelConfig
from alert_bridge.enrichment import context_lines


class DeliveryError(Exception):
    """A failed delivery; `permanent` ones go straight to the dead-letter queue (retrying cannot help)."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


@dataclass(frozen=True)
class Message:
    """What a channel sends: an idempotency key, a recipient override, and the rendered forms."""

    key: str
    kind: str
    recipient: str
    subject: str
    text: str
    html: str
    payload: dict[str, Any]


class Channel:
    """Subclass and implement `send`; raise DeliveryError on failure. Must be thread-safe."""

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config
        self.name = config.name
        self._local = threading.local()

    @property
    def http(self) -> requests.Session:
        """A keep-alive HTTP session per delivery thread (requests sessions are not thread-safe)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def send(self, message: Message) -> None:
        raise NotImplementedError


def _alert_lines(alert: dict[str, Any]) -> list[str]:
    lines = [
        f"State: {alert['state']}",
        f"Severity: {alert.get('severity') or '-'}",
        f"Started: {alert['startsAt']}",
    ]
    if alert.get("endsAt"):
        lines.append(f"Ended: {alert['endsAt']}")
    lines.append("Labels:")
    lines += [f"  {k}={v}" for k, v in sorted(alert["labels"].items())]
    if alert.get("annotations"):
        lines.append("Annotations:")
        lines += [f"  {k}: {v}" for k, v in sorted(alert["annotations"].items())]
    return lines


def render_message(key: str, kind: str, recipient: str, payload: dict[str, Any], prefix: str = "") -> Message:
    """Subject, plain text and HTML for a firing/resolved/repeat/escalation/storm/test payload."""
    url = payload.get("url") or ""
    if kind == "storm":
        inc = payload["incident"]
        subject = f"{prefix} ALERT STORM: {payload['count']} alerts in incident {inc['title']}".strip()
        lines = [
            f"{payload['count']} alerts fired within {payload['window_seconds']:.0f}s "
            f"in incident #{inc['id']}.",
            "Individual notifications are held back; see the incident.",
            f"Example: {payload['sample']['alertname']} {payload['sample']['labels']}",
        ]
    elif kind == "heartbeat":
        state = "MISSING" if payload["missing"] else "restored"
        subject = (
            f"{prefix} [{'FIRING' if payload['missing'] else 'RESOLVED'}] alerting heartbeat {state}".strip()
        )
        lines = [
            f"The heartbeat alert {payload['name']} from Alertmanager is {state}.",
            f"Last seen: {payload['lastSeen']}.",
            "While it is missing, alerts may reach nobody: check Prometheus, Alertmanager and the bridge.",
        ]
    elif kind == "test":
        subject = f"{prefix} test notification".strip()
        lines = [payload.get("text", "test")]
    else:
        alert = payload["alert"]
        label = {"firing": "FIRING", "resolved": "RESOLVED"}.get(kind, kind.upper())
        summary = alert["annotations"].get("summary", "")
        subject = f"{prefix} [{label}] {alert['alertname']} {summary}".strip()
        lines = [f"{label}: {alert['alertname']}", *_alert_lines(alert)]
        if payload.get("context"):  # likely cause from the analytics sidecar (alert_bridge/enrichment.py)
            lines += context_lines(payload["context"])
    if url:
        lines.append(f"Details: {url}")
    text = "\n".join(lines) + "\n"
    body = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    page = f"<html><body><h2>{html.escape(subject)}</h2><ul>{body}</ul></body></html>"
    return Message(key, kind, recipient, subject, text, page, payload)
