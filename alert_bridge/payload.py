"""Strict parsing of Alertmanager's webhook payload (version 4) into typed alerts; errors say why."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

MAX_ALERTS = 10_000
_TS = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)
_FP = re.compile(r"^[0-9a-fA-F]{1,64}$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class PayloadError(ValueError):
    """The request body is not an acceptable Alertmanager payload; the message is safe to return."""


@dataclass(frozen=True)
class IncomingAlert:
    status: str
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None
    generator_url: str = ""
    silenced: bool = False

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")


@dataclass(frozen=True)
class Notification:
    group_key: str
    status: str
    receiver: str
    truncated: int
    external_url: str
    group_labels: dict[str, str] = field(default_factory=dict)
    alerts: tuple[IncomingAlert, ...] = ()


def parse_time(value: Any, where: str) -> float | None:
    """RFC 3339 with up to nanoseconds, as Go writes it; Go's zero time means unset (None)."""
    if not isinstance(value, str):
        raise PayloadError(f"{where} must be an RFC 3339 timestamp string")
    m = _TS.match(value)
    if not m:
        raise PayloadError(f"{where} is not an RFC 3339 timestamp: {value[:40]!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if year <= 1:
        return None
    frac = m.group(7) or "0"
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise PayloadError(f"{where} is not a valid date: {value[:40]!r}") from None
    zone = m.group(8)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        moment -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return moment.timestamp() + float("0." + frac)


def label_fingerprint(labels: dict[str, str]) -> str:
    """A stable fingerprint when a sender gives none (Alertmanager always does)."""
    canonical = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _string_map(value: Any, where: str, check_names: bool) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be an object of strings")
    for k, v in value.items():
        if not isinstance(v, str):
            raise PayloadError(f"{where}.{k} must be a string")
        if check_names and not _LABEL.match(k):
            raise PayloadError(f"{where} has an invalid label name {k[:40]!r}")
    return dict(value)


def parse_alert(raw: Any, where: str) -> IncomingAlert:
    if not isinstance(raw, dict):
        raise PayloadError(f"{where} must be an object")
    status = raw.get("status")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"{where}.status must be 'firing' or 'resolved'")
    labels = _string_map(raw.get("labels"), f"{where}.labels", True)
    if not labels:
        raise PayloadError(f"{where}.labels must not be empty")
    annotations = _string_map(raw.get("annotations"), f"{where}.annotations", False)
    starts = parse_time(raw.get("startsAt"), f"{where}.startsAt")
    if starts is None:
        raise PayloadError(f"{where}.startsAt must be set")
    ends = parse_time(raw.get("endsAt", "0001-01-01T00:00:00Z"), f"{where}.endsAt")
    fp = raw.get("fingerprint")
    if fp is None or fp == "":
        fp = label_fingerprint(labels)
    elif not isinstance(fp, str) or not _FP.match(fp):
        raise PayloadError(f"{where}.fingerprint must be a hex string of at most 64 characters")
    gen = raw.get("generatorURL", "")
    if not isinstance(gen, str):
        raise PayloadError(f"{where}.generatorURL must be a string")
    return IncomingAlert(status, fp.lower(), labels, annotations, starts, ends, gen)


def parse_notification(body: Any) -> Notification:
    """Validate the whole payload before anything is stored, so a bad request changes nothing."""
    if not isinstance(body, dict):
        raise PayloadError("body must be a JSON object")
    if str(body.get("version")) != "4":
        raise PayloadError('version must be "4" (Alertmanager webhook payload version 4)')
    raw_alerts = body.get("alerts")
    if not isinstance(raw_alerts, list):
        raise PayloadError("alerts must be a list")
    if len(raw_alerts) > MAX_ALERTS:
        raise PayloadError(f"alerts has more than {MAX_ALERTS} entries")
    group_key = body.get("groupKey", "")
    status = body.get("status", "firing")
    receiver = body.get("receiver", "")
    external = body.get("externalURL", "")
    truncated = body.get("truncatedAlerts", 0)
    for name, value in (
        ("groupKey", group_key),
        ("status", status),
        ("receiver", receiver),
        ("externalURL", external),
    ):
        if not isinstance(value, str):
            raise PayloadError(f"{name} must be a string")
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise PayloadError("truncatedAlerts must be a non-negative integer")
    alerts = tuple(parse_alert(a, f"alerts[{i}]") for i, a in enumerate(raw_alerts))
    return Notification(
        group_key=group_key,
        status=status,
        receiver=receiver,
        truncated=truncated,
        external_url=external,
        group_labels=_string_map(body.get("groupLabels"), "groupLabels", False),
        alerts=alerts,
    )


def parse_api_alert(raw: Any) -> IncomingAlert:
    """An alert from Alertmanager's GET /api/v2/alerts (used by reconcile); its endsAt is the real lease."""
    if not isinstance(raw, dict):
        raise PayloadError("alert must be an object")
    state = (raw.get("status") or {}).get("state", "active")
    base = parse_alert({**raw, "status": "firing"}, "alert")
    return IncomingAlert(
        "firing",
        base.fingerprint,
        base.labels,
        base.annotations,
        base.starts_at,
        base.ends_at,
        base.generator_url,
        silenced=state == "suppressed",
    )
