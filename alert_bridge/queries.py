"""Read-side queries shared by the JSON API and the web UI: alerts, incidents, history, audit, deliveries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select

from alert_bridge import lifecycle as lc
from alert_bridge.db import Database, alerts, audit, deliveries, incidents, notes, outbox
from alert_bridge.enrichment import CONTEXT_ACTION
from alert_bridge.service import NotFound, alert_view, dumps, iso


class QueryError(ValueError):
    """A bad filter; the message is returned to the client with a 400."""


def label_filters(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise QueryError(f"label filter must be name=value (got {item[:60]!r})")
        out[name] = value.strip('"')
    return out


def _with_labels(stmt: Select[Any], column: Any, labels: dict[str, str]) -> Select[Any]:
    # Labels are stored as compact sorted JSON, so `"k":"v"` is an exact substring for an exact label match.
    for name, value in labels.items():
        stmt = stmt.where(column.contains(dumps({name: value})[1:-1], autoescape=True))
    return stmt


def list_alerts(
    db: Database,
    states: Sequence[str] = (),
    status: str | None = None,
    labels: dict[str, str] | None = None,
    incident_id: int | None = None,
    alertname: str | None = None,
    severity: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 500,
    offset: int = 0,
) -> list[dict[str, Any]]:
    for state in states:
        if state not in lc.STATES:
            raise QueryError(f"state must be one of {', '.join(lc.STATES)}")
    stmt = select(alerts)
    if states:
        stmt = stmt.where(alerts.c.state.in_(states))
    if status == "firing":
        stmt = stmt.where(alerts.c.state.in_(lc.OPEN_STATES))
    elif status == "resolved":
        stmt = stmt.where(alerts.c.state.in_((lc.RESOLVED, lc.EXPIRED)))
    elif status:
        raise QueryError("status must be firing or resolved")
    if incident_id is not None:
        stmt = stmt.where(alerts.c.incident_id == incident_id)
    if alertname:
        stmt = stmt.where(alerts.c.alertname == alertname)
    if severity:
        stmt = stmt.where(alerts.c.severity == severity)
    if since is not None:
        stmt = stmt.where(alerts.c.updated_at >= since)
    if until is not None:
        stmt = stmt.where(alerts.c.starts_at <= until)
    stmt = _with_labels(stmt, alerts.c.labels, labels or {})
    stmt = stmt.order_by(alerts.c.id.desc()).limit(limit).offset(offset)
    with db.read() as conn:
        return [alert_view(r) for r in conn.execute(stmt).mappings().all()]


def get_alert(db: Database, alert_id: int) -> dict[str, Any]:
    """An alert with its notes, full history (audit) and delivery attempts."""
    with db.read() as conn:
        row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).mappings().first()
        if row is None:
            raise NotFound(f"no alert {alert_id}")
        note_rows = conn.execute(
            select(notes).where(notes.c.alert_id == alert_id).order_by(notes.c.id)
        ).mappings()
        history = conn.execute(
            select(audit).where(audit.c.alert_id == alert_id).order_by(audit.c.id)
        ).mappings()
        sends = conn.execute(
            select(
                outbox.c.id,
                outbox.c.channel,
                outbox.c.recipient,
                outbox.c.kind,
                outbox.c.status,
                outbox.c.attempts,
            )
            .where(outbox.c.alert_id == alert_id)
            .order_by(outbox.c.id)
        ).mappings()
        view = alert_view(row)
        view["notes"] = [_note(n) for n in note_rows]
        view["history"] = [_audit(a) for a in history]
        # The newest likely-cause context a notification carried (enrichment.py), shown with the alert.
        contexts = [h["detail"] for h in view["history"] if h["action"] == CONTEXT_ACTION]
        view["context"] = contexts[-1] if contexts else None
        view["notifications"] = [dict(s) for s in sends]
    return view


def list_incidents(db: Database, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    stmt = select(incidents)
    if status:
        if status not in ("open", "resolved"):
            raise QueryError("status must be open or resolved")
        stmt = stmt.where(incidents.c.status == status)
    with db.read() as conn:
        rows = conn.execute(stmt.order_by(incidents.c.id.desc()).limit(limit)).mappings().all()
    return [_incident(r) for r in rows]


def get_incident(db: Database, incident_id: int) -> dict[str, Any]:
    with db.read() as conn:
        row = conn.execute(select(incidents).where(incidents.c.id == incident_id)).mappings().first()
        if row is None:
            raise NotFound(f"no incident {incident_id}")
        members = conn.execute(
            select(alerts).where(alerts.c.incident_id == incident_id).order_by(alerts.c.id)
        )
        note_rows = conn.execute(select(notes).where(notes.c.incident_id == incident_id).order_by(notes.c.id))
        view = _incident(row)
        view["alerts"] = [alert_view(a) for a in members.mappings()]
        view["notes"] = [_note(n) for n in note_rows.mappings()]
    return view


def list_audit(
    db: Database,
    since: float | None,
    until: float | None,
    labels: dict[str, str],
    actor: str | None,
    action: str | None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    stmt = select(audit)
    if since is not None:
        stmt = stmt.where(audit.c.at >= since)
    if until is not None:
        stmt = stmt.where(audit.c.at <= until)
    if actor:
        stmt = stmt.where(audit.c.actor == actor)
    if action:
        stmt = stmt.where(audit.c.action.startswith(action, autoescape=True))
    stmt = _with_labels(stmt, audit.c.labels, labels)
    with db.read() as conn:
        return [_audit(r) for r in conn.execute(stmt.order_by(audit.c.id).limit(limit)).mappings()]


def list_deliveries(
    db: Database, channel: str | None, status: str | None, limit: int = 500
) -> list[dict[str, Any]]:
    stmt = select(outbox)
    if channel:
        stmt = stmt.where(outbox.c.channel == channel)
    if status:
        if status not in ("pending", "delivered", "dead"):
            raise QueryError("status must be pending, delivered or dead")
        stmt = stmt.where(outbox.c.status == status)
    with db.read() as conn:
        rows = conn.execute(stmt.order_by(outbox.c.id.desc()).limit(limit)).mappings().all()
        ids = [r["id"] for r in rows]
        attempts: dict[int, list[dict[str, Any]]] = {}
        if ids:
            for a in conn.execute(
                select(deliveries).where(deliveries.c.outbox_id.in_(ids)).order_by(deliveries.c.id)
            ).mappings():
                attempts.setdefault(a["outbox_id"], []).append(
                    {
                        "attempt": a["attempt"],
                        "at": iso(a["at"]),
                        "result": a["result"],
                        "latencySeconds": round(a["latency_seconds"], 4),
                        "error": a["error"],
                    }
                )
    return [
        {
            "id": r["id"],
            "key": r["dedup_key"],
            "channel": r["channel"],
            "recipient": r["recipient"],
            "kind": r["kind"],
            "alertId": r["alert_id"],
            "status": r["status"],
            "attempts": r["attempts"],
            "lastError": r["last_error"],
            "createdAt": iso(r["created_at"]),
            "deliveredAt": iso(r["delivered_at"]),
            "log": attempts.get(r["id"], []),
        }
        for r in rows
    ]


def _note(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "author": row["author"],
        "text": row["text"],
        "createdAt": iso(row["created_at"]),
    }


def _audit(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "at": iso(row["at"]),
        "actor": row["actor"],
        "action": row["action"],
        "alertId": row["alert_id"],
        "incidentId": row["incident_id"],
        "fingerprint": row["fingerprint"],
        "labels": json.loads(row["labels"]),
        "detail": json.loads(row["detail"]),
    }


def _incident(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "key": row["key"],
        "status": row["status"],
        "title": row["title"],
        "labels": json.loads(row["labels"]),
        "alertCount": row["alert_count"],
        "createdAt": iso(row["created_at"]),
        "resolvedAt": iso(row["resolved_at"]),
    }
