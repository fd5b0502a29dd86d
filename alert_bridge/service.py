"""The bridge's state changes: idempotent intake, lifecycle, incidents, storm protection, outbox, audit.

Every state change and the notifications it causes are written in ONE transaction (transactional outbox), so a
crash either keeps both or neither. The worker (worker.py) delivers the outbox afterwards.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from alert_bridge import automation
from alert_bridge import lifecycle as lc
from alert_bridge.config import BridgeConfig, Policy, UserPrefs, parse_user, severity_rank
from alert_bridge.db import (
    Database,
    alerts,
    audit,
    heartbeats,
    incidents,
    insert_id,
    insert_if_absent,
    insert_ignoring_conflict,
    maintenance,
    notes,
    outbox,
    user_prefs,
)
from alert_bridge.enrichment import CONTEXT_ACTION
from alert_bridge.payload import IncomingAlert, Notification
from alert_bridge.routing import Target, initial_targets, targets_for
from exporters.common.config import ConfigError

log = logging.getLogger(__name__)

PREFS_CACHE_SECONDS = 5.0

# Hot-path statements built once: SQLAlchemy then reuses their compiled form and cache key.
_LATEST = select(alerts).where(alerts.c.fingerprint == bindparam("fp")).order_by(alerts.c.id.desc()).limit(1)
_UPDATE_ALERT = alerts.update().where(alerts.c.id == bindparam("_id"))


class StorageUnavailable(RuntimeError):
    """The database refused or failed the transaction; callers answer 503 so Alertmanager retries."""


class NotFound(LookupError):
    pass


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass
class _IncidentState:
    id: int
    row: dict[str, Any]
    recent: int
    added: int
    storm_bucket: int | None


@dataclass
class IntakeResult:
    received: int = 0
    created: int = 0
    updated: int = 0
    resolved: int = 0
    duplicates: int = 0
    notifications: int = 0
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    incidents: dict[str, _IncidentState] = field(default_factory=dict)
    latest: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    group_labels: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, int)}


class Bridge:
    """State machine plus storage; the HTTP API, worker and UI call only these methods."""

    def __init__(
        self,
        config: BridgeConfig,
        db: Database,
        clock: Callable[[], float] = time.time,
        alertmanager: Any = None,
    ) -> None:
        self.config = config
        self.db = db
        self.clock = clock
        self.alertmanager = alertmanager  # AlertmanagerClient or None
        self.on_reconcile_request: Callable[[], None] | None = None
        self._buffer = threading.local()
        self._prefs: dict[str, UserPrefs] = {}
        self._prefs_loaded = -PREFS_CACHE_SECONDS

    # --- transactions --------------------------------------------------------------------------------------

    def _tx(self, fn: Callable[[Connection], Any], attempts: int = 4) -> Any:
        """Run fn in a write transaction, retrying unique-key races; storage failure -> StorageUnavailable."""
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                with self.db.write() as conn:
                    return fn(conn)
            except (
                IntegrityError
            ) as exc:  # another replica/thread opened the same episode first: redo with it
                last = exc
            except OperationalError as exc:
                last = exc
                time.sleep(0.05 * (attempt + 1))
        log.error("storage failure after %d attempts: %s", attempts, type(last).__name__)
        raise StorageUnavailable(str(type(last).__name__))

    # --- intake --------------------------------------------------------------------------------------------

    def ingest(self, note: Notification, actor: str) -> IntakeResult:
        """Apply one webhook payload idempotently; peer duplicates and repeats change only counters."""
        result = self._tx(lambda conn: self._ingest(conn, note, actor))
        for action in result.after_commit:
            _safe(action)
        if note.truncated and self.on_reconcile_request:
            self.on_reconcile_request()
        return result

    def _ingest(self, conn: Connection, note: Notification, actor: str) -> IntakeResult:
        result = IntakeResult()
        now = self.clock()
        result.group_labels = dict(note.group_labels)
        # Audit and outbox rows of one payload are written with one executemany each, in the same transaction.
        self._buffer.audit, self._buffer.outbox = [], []
        try:
            self._prefetch(conn, {a.fingerprint for a in note.alerts}, result)
            for alert in note.alerts:
                result.received += 1
                if self.config.heartbeat_alertname and alert.alertname == self.config.heartbeat_alertname:
                    self._beat(conn, alert.alertname, now, result)
                elif alert.status == "firing":
                    self._fire(conn, alert, note.group_key, actor, now, result)
                else:
                    self._resolve_incoming(conn, alert, actor, now, result)
            self._flush_new(conn, result)
            self._flush_incidents(conn, result, now)
            if self._buffer.audit:
                conn.execute(audit.insert(), self._buffer.audit)
            if self._buffer.outbox:
                conn.execute(insert_ignoring_conflict(conn, outbox, "dedup_key"), self._buffer.outbox)
        finally:
            self._buffer.audit, self._buffer.outbox = None, None
        return result

    def _fire(
        self, conn: Connection, a: IncomingAlert, group_key: str, actor: str, now: float, result: IntakeResult
    ) -> None:
        pending = result.pending.get(a.fingerprint)
        if pending is not None and a.severity == pending["values"]["severity"] and not a.silenced:
            pending["values"]["receipts"] += 1  # the same alert twice in one payload
            result.duplicates += 1
            return
        row, last = self._latest(conn, a.fingerprint, result)
        if row is not None and row["state"] == lc.EXPIRED and a.starts_at >= row["lease_until"]:
            # The lease ran out and this is a new firing period: close the old episode for good.
            conn.execute(update(alerts).where(alerts.c.id == row["id"]).values(open_key=None))
            last = {**row, "open_key": None}
            row = None
        if row is None:
            if _stale(last, a):
                result.duplicates += 1
                return
            self._open_episode(conn, a, group_key, actor, now, result)
            return
        rising = severity_rank(a.severity) > severity_rank(row["severity"])
        event = "rise" if rising else "fire"
        state = lc.transition(row["state"], event)
        if a.silenced:  # reconcile saw it silenced/inhibited in Alertmanager
            state = lc.transition(state, "suppress")
        lease = self._lease(a, now)
        values: dict[str, Any] = {
            "state": state,
            "starts_at": min(row["starts_at"], a.starts_at),
            "lease_until": max(row["lease_until"], lease),
            "last_seen_at": now,
            "receipts": row["receipts"] + 1,
            "labels": dumps(a.labels),
            "annotations": dumps(a.annotations),
            "severity": a.severity,
            "updated_at": now,
        }
        if state != row["state"] or rising:
            if row["state"] == lc.ACKNOWLEDGED and state == lc.FIRING:
                values.update(ack_by=None, ack_at=None, ack_reason=None)  # re-armed: severity rose
            values["updated_at"] = now
            self._audit(conn, actor, f"transition:{row['state']}->{state}", row, {"event": event}, now)
            result.updated += 1
        else:
            result.duplicates += 1
        conn.execute(_UPDATE_ALERT, {**values, "_id": row["id"]})
        result.latest[a.fingerprint] = {**row, **values}
        if rising and state == lc.FIRING:
            merged = {**dict(row), **values}
            routes = json.loads(row["routes"])
            targets = [Target(**t) for t in routes.get("targets", [])]
            result.notifications += self._enqueue(conn, merged, targets, f"rise-{a.severity}", now)

    def _latest(
        self, conn: Connection, fingerprint: str, result: IntakeResult
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(open episode, latest closed episode); the open episode is always a fingerprint's newest row."""
        if fingerprint in result.pending:
            self._flush_new(conn, result)
        if fingerprint in result.latest:
            row = result.latest[fingerprint]
        else:
            found = conn.execute(_LATEST, {"fp": fingerprint}).mappings().first()
            row = dict(found) if found else None
            result.latest[fingerprint] = row
        if row is None:
            return None, None
        return (row, None) if row["open_key"] is not None else (None, row)

    @staticmethod
    def _prefetch(conn: Connection, fingerprints: set[str], result: IntakeResult) -> None:
        """The newest row of every fingerprint in the payload, in one query instead of one per alert."""
        fps = sorted(fingerprints)
        for i in range(0, len(fps), 500):
            chunk = fps[i : i + 500]
            newest = (
                select(func.max(alerts.c.id))
                .where(alerts.c.fingerprint.in_(chunk))
                .group_by(alerts.c.fingerprint)
            )
            for row in conn.execute(select(alerts).where(alerts.c.id.in_(newest))).mappings():
                result.latest[row["fingerprint"]] = dict(row)
            for fp in chunk:
                result.latest.setdefault(fp, None)

    def _flush_new(self, conn: Connection, result: IntakeResult) -> None:
        """Insert the payload's new episodes with one executemany (RETURNING ids), then audit and notify."""
        if not result.pending:
            return
        pending = list(result.pending.values())
        result.pending.clear()
        rows = [p["values"] for p in pending]
        stmt = alerts.insert().returning(alerts.c.id, sort_by_parameter_order=True)
        ids: list[int] = list(conn.execute(stmt, rows).scalars().all())
        for new, alert_id in zip(pending, ids, strict=True):
            row = {**new["values"], "id": alert_id}
            result.latest[row["fingerprint"]] = row
            detail = {"state": row["state"], "policy": new["policy"]}
            self._audit(conn, new["actor"], "created", row, detail, new["now"])
            if row["state"] == lc.FIRING and not row["stormed"]:
                result.notifications += self._enqueue(conn, row, new["targets"], "firing", new["now"])
            if row["state"] == lc.FIRING:  # automation hooks: one call per episode (automation.py)
                result.notifications += automation.on_new_episode(self, conn, row, new["now"])

    def _lease(self, a: IncomingAlert, now: float) -> float:
        if a.ends_at is not None and a.ends_at > now:
            return a.ends_at
        return now + self.config.lease_seconds

    def _open_episode(
        self, conn: Connection, a: IncomingAlert, group_key: str, actor: str, now: float, result: IntakeResult
    ) -> None:
        incident_id, stormed = self._attach_incident(conn, a, group_key, now, result)
        policy, targets = initial_targets(self.config, a.labels, now, self.user_preferences())
        state = lc.SUPPRESSED if a.silenced else lc.FIRING
        routes = {"policy": policy.name if policy else None, "targets": [t.__dict__ for t in targets]}
        values = {
            "fingerprint": a.fingerprint,
            "open_key": a.fingerprint,
            "state": state,
            "alertname": a.alertname[:256],
            "severity": a.severity[:32],
            "labels": dumps(a.labels),
            "annotations": dumps(a.annotations),
            "group_key": group_key,
            "generator_url": a.generator_url,
            "incident_id": incident_id,
            "starts_at": a.starts_at,
            "ends_at": None,
            "lease_until": self._lease(a, now),
            "last_seen_at": now,
            "created_at": now,
            "updated_at": now,
            "receipts": 1,
            "escalation_level": 0,
            "repeat_count": 0,
            "routes": dumps(routes),
            "stormed": 1 if stormed else 0,
            "ack_by": None,
            "ack_at": None,
            "ack_reason": None,
            "silence_id": None,
            "next_action_at": self._next_action(policy, now, now, 0, 0),
        }
        pending = {
            "values": values,
            "targets": targets,
            "policy": routes["policy"],
            "actor": actor,
            "now": now,
        }
        result.pending[a.fingerprint] = pending
        result.created += 1

    def _resolve_incoming(
        self, conn: Connection, a: IncomingAlert, actor: str, now: float, result: IntakeResult
    ) -> None:
        row, last = self._latest(conn, a.fingerprint, result)
        if row is None:
            if _stale(last, a) or self._known_period(conn, a):
                result.duplicates += 1
                return
            # Resolved before we ever saw it fire (bridge was down): keep the history, notify nobody.
            self._insert_resolved(conn, a, actor, now)
            result.latest.pop(a.fingerprint, None)
            result.created += 1
            return
        self._close(
            conn, dict(row), "resolve", actor, now, a.ends_at or now, {"source": "alertmanager"}, result
        )
        result.resolved += 1

    def _known_period(self, conn: Connection, a: IncomingAlert) -> bool:
        ends = a.ends_at or self.clock()
        found = conn.execute(
            select(func.count())
            .select_from(alerts)
            .where(alerts.c.fingerprint == a.fingerprint, alerts.c.starts_at <= ends)
            .where((alerts.c.ends_at.is_(None)) | (alerts.c.ends_at >= a.starts_at))
        ).scalar_one()
        return bool(found)

    def _insert_resolved(self, conn: Connection, a: IncomingAlert, actor: str, now: float) -> None:
        values = {
            "fingerprint": a.fingerprint,
            "open_key": None,
            "state": lc.RESOLVED,
            "alertname": a.alertname[:256],
            "severity": a.severity[:32],
            "labels": dumps(a.labels),
            "annotations": dumps(a.annotations),
            "group_key": "",
            "generator_url": a.generator_url,
            "incident_id": None,
            "starts_at": a.starts_at,
            "ends_at": a.ends_at or now,
            "lease_until": now,
            "last_seen_at": now,
            "created_at": now,
            "updated_at": now,
            "routes": dumps({"policy": None, "targets": []}),
        }
        alert_id = insert_id(conn, alerts.insert(), values)
        self._audit(conn, actor, "created", {**values, "id": alert_id}, {"state": lc.RESOLVED}, now)

    def _close(
        self,
        conn: Connection,
        row: dict[str, Any],
        event: str,
        actor: str,
        now: float,
        ends_at: float,
        detail: dict[str, Any],
        result: IntakeResult | None,
    ) -> str:
        state = lc.transition(row["state"], event)
        if state == row["state"] and row["open_key"] is None:
            return state  # resolving a resolved episode again: idempotent, nothing to record
        values: dict[str, Any] = {"state": state, "updated_at": now, "next_action_at": None}
        if state == lc.RESOLVED:
            values.update(open_key=None, ends_at=ends_at, ack_by=None, ack_at=None, ack_reason=None)
        conn.execute(_UPDATE_ALERT, {**values, "_id": row["id"]})
        self._audit(conn, actor, f"transition:{row['state']}->{state}", row, {"event": event, **detail}, now)
        if state == lc.RESOLVED:
            merged = {**row, **values}
            routes = json.loads(row["routes"])
            if (
                self._notify_resolved(routes.get("policy"))
                and not row.get("stormed")
                and row["state"] != lc.SUPPRESSED
            ):
                targets = [Target(**t) for t in routes.get("targets", [])]
                sent = self._enqueue(conn, merged, targets, "resolved", now)
                if result is not None:
                    result.notifications += sent
            if row.get("silence_id") and self.alertmanager is not None and result is not None:
                silence_id = row["silence_id"]
                result.after_commit.append(lambda: self.alertmanager.expire_silence(silence_id))
            self._maybe_close_incident(conn, row.get("incident_id"), now)
        return state

    def _notify_resolved(self, policy_name: str | None) -> bool:
        for policy in self.config.policies:
            if policy.name == policy_name:
                return policy.notify_resolved
        return self.config.default_notify_resolved

    # --- incidents and storms ------------------------------------------------------------------------------

    def _incident_key(
        self, a: IncomingAlert, group_key: str, group_labels: dict[str, str]
    ) -> tuple[str, str, dict[str, str]]:
        by = self.config.incident_group_by
        if by and all(k in a.labels for k in by):
            labels = {k: a.labels[k] for k in by}
            return (
                "labels:" + ",".join(f"{k}={v}" for k, v in labels.items()),
                ", ".join(f"{k}={v}" for k, v in labels.items()),
                labels,
            )
        if group_key:
            # Title from Alertmanager's group labels (e.g. "alertname=HostDown"), not the raw groupKey.
            grouped = dict(group_labels)
            title = ", ".join(f"{k}={v}" for k, v in sorted(grouped.items())) or group_key
            return "group:" + group_key, title, grouped
        return "alert:" + a.fingerprint, a.alertname or a.fingerprint, dict(a.labels)

    def _attach_incident(
        self, conn: Connection, a: IncomingAlert, group_key: str, now: float, result: IntakeResult
    ) -> tuple[int, bool]:
        """Find or open the incident; say whether this alert is part of a storm (summary, not a page)."""
        key, title, labels = self._incident_key(a, group_key, result.group_labels)
        open_key = key[:255]
        state = result.incidents.get(open_key)
        if state is None:
            state = self._load_incident(conn, key, open_key, title, labels, now)
            result.incidents[open_key] = state
        state.recent += 1
        state.added += 1
        if state.recent <= self.config.storm_threshold:
            return state.id, False
        # One summary per storm: the next one only a whole window after this one (`storm_bucket` holds the
        # second it went out). Not `now // window`: a calendar bucket splits a storm across hh:mm:00 in two.
        window = self.config.storm_window_seconds
        if state.storm_bucket is None or now - state.storm_bucket >= window:
            bucket = int(now)
            state.storm_bucket = bucket
            conn.execute(update(incidents).where(incidents.c.id == state.id).values(storm_bucket=bucket))
            self._audit(
                conn, "system", "incident:storm", {"incident_id": state.id}, {"alerts": state.recent}, now
            )
            result.notifications += self._enqueue_storm(conn, state.row, a, state.recent, bucket, now)
        return state.id, True

    def _load_incident(
        self, conn: Connection, key: str, open_key: str, title: str, labels: dict[str, str], now: float
    ) -> _IncidentState:
        """Once per incident per payload: the row (or a new one) and its recent-alert count for storms."""
        row = conn.execute(select(incidents).where(incidents.c.open_key == open_key)).mappings().first()
        if row is None:
            values = {
                "key": key,
                "open_key": open_key,
                "status": "open",
                "title": title[:500],
                "labels": dumps(labels),
                "alert_count": 0,
                "created_at": now,
                "updated_at": now,
            }
            incident_id = insert_id(conn, incidents.insert(), values)
            self._audit(conn, "system", "incident:opened", {"incident_id": incident_id}, {"key": key}, now)
            return _IncidentState(incident_id, {**values, "id": incident_id}, 0, 0, None)
        recent = conn.execute(
            select(func.count())
            .select_from(alerts)
            .where(
                alerts.c.incident_id == row["id"],
                alerts.c.created_at >= now - self.config.storm_window_seconds,
            )
        ).scalar_one()
        return _IncidentState(row["id"], dict(row), int(recent), 0, row["storm_bucket"])

    def _flush_incidents(self, conn: Connection, result: IntakeResult, now: float) -> None:
        for state in result.incidents.values():
            if state.added:
                conn.execute(
                    update(incidents)
                    .where(incidents.c.id == state.id)
                    .values(alert_count=incidents.c.alert_count + state.added, updated_at=now)
                )

    def _enqueue_storm(
        self,
        conn: Connection,
        incident: dict[str, Any],
        a: IncomingAlert,
        count: int,
        bucket: int,
        now: float,
    ) -> int:
        _policy, targets = initial_targets(self.config, a.labels, now, self.user_preferences())
        payload = {
            "kind": "storm",
            "incident": {"id": incident["id"], "title": incident["title"], "key": incident["key"]},
            "count": count,
            "window_seconds": self.config.storm_window_seconds,
            "sample": {"alertname": a.alertname, "labels": a.labels},
            "url": self._ui_url(f"/ui/incidents/{incident['id']}"),
        }
        sent = 0
        for target in targets:
            key = f"i{incident['id']}:storm{bucket}:{target.key}"
            sent += self._insert_outbox(conn, key, target, "storm", None, incident["id"], payload, now)
        return sent

    def _maybe_close_incident(self, conn: Connection, incident_id: int | None, now: float) -> None:
        if incident_id is None:
            return
        still_open = conn.execute(
            select(func.count())
            .select_from(alerts)
            .where(alerts.c.incident_id == incident_id, alerts.c.open_key.is_not(None))
            .where(alerts.c.state != lc.EXPIRED)
        ).scalar_one()
        if still_open:
            return
        conn.execute(
            update(incidents)
            .where(incidents.c.id == incident_id, incidents.c.status == "open")
            .values(status="resolved", open_key=None, resolved_at=now, updated_at=now)
        )
        self._audit(conn, "system", "incident:resolved", {"incident_id": incident_id}, {}, now)

    # --- outbox --------------------------------------------------------------------------------------------

    def _enqueue(
        self, conn: Connection, row: dict[str, Any], targets: Iterable[Target], kind: str, now: float
    ) -> int:
        payload = {"kind": kind, "alert": alert_view(row), "url": self._ui_url(f"/ui/alerts/{row['id']}")}
        sent = 0
        for target in targets:
            key = f"a{row['id']}:{kind}:{target.key}"
            sent += self._insert_outbox(
                conn, key, target, kind, row["id"], row.get("incident_id"), payload, now
            )
        return sent

    def _insert_outbox(
        self,
        conn: Connection,
        key: str,
        target: Target,
        kind: str,
        alert_id: int | None,
        incident_id: int | None,
        payload: dict[str, Any],
        now: float,
    ) -> int:
        """Insert unless the idempotency key exists (then nothing): the outbox dedups, not the worker."""
        values = {
            "dedup_key": key[:255],
            "channel": target.channel,
            "recipient": target.recipient,
            "kind": kind,
            "alert_id": alert_id,
            "incident_id": incident_id,
            "payload": dumps({**payload, "user": target.user}),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "claimed_until": 0.0,
            "created_at": now,
        }
        pending = getattr(self._buffer, "outbox", None)
        if pending is not None:
            if any(p["dedup_key"] == values["dedup_key"] for p in pending[-16:]):
                return 0
            pending.append(values)
            return 1
        return int(insert_if_absent(conn, outbox, "dedup_key", values))

    def enqueue_test(self, channel: str, recipient: str, actor: str) -> int:
        """A test message through the normal outbox (so it is retried and logged like any other)."""
        if channel not in self.config.channels:
            raise NotFound(f"no channel {channel!r}")

        def run(conn: Connection) -> int:
            now = self.clock()
            payload = {
                "kind": "test",
                "text": f"Test notification from the NovaCron alert bridge, sent by {actor}",
            }
            key = f"test:{channel}:{now:.6f}:{recipient}"
            self._insert_outbox(conn, key, Target(channel, recipient), "test", None, None, payload, now)
            self._audit(conn, actor, "channel:test", {}, {"channel": channel, "recipient": recipient}, now)
            return int(conn.execute(select(outbox.c.id).where(outbox.c.dedup_key == key)).scalar_one())

        return int(self._tx(run))

    def _ui_url(self, path: str) -> str:
        return f"{self.config.external_url}{path}" if self.config.external_url else path

    # --- operator actions ----------------------------------------------------------------------------------

    def _load(self, conn: Connection, alert_id: int) -> dict[str, Any]:
        row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).mappings().first()
        if row is None:
            raise NotFound(f"no alert {alert_id}")
        return dict(row)

    def acknowledge(
        self, alert_id: int, actor: str, reason: str, silence_minutes: float | None = None
    ) -> dict[str, Any]:
        """Ack stops repeats and escalation; optionally silences the alert in Alertmanager until resolved."""
        row = self._tx(
            lambda conn: self._operator_transition(
                conn, alert_id, actor, "ack", reason, {"ack_by": actor, "ack_reason": reason}, "ack_at"
            )
        )
        minutes = silence_minutes if silence_minutes is not None else self.config.ack_silence_minutes
        if minutes and self.alertmanager is not None:
            self._silence_acked(row, actor, reason, minutes)
        return alert_view(row)

    def _silence_acked(self, row: dict[str, Any], actor: str, reason: str, minutes: float) -> None:
        now = self.clock()
        labels = json.loads(row["labels"])
        try:
            silence_id = self.alertmanager.create_silence(
                labels, now, now + minutes * 60, actor, reason or "acknowledged"
            )
        except Exception as exc:  # the ack itself stands; the missing silence is audited
            log.warning("could not create silence for alert %s: %s", row["id"], type(exc).__name__)
            error = {"error": str(exc)[:200]}
            self._tx(lambda c: self._audit(c, actor, "silence:failed", row, error, now))
            return

        def run(conn: Connection) -> None:
            conn.execute(update(alerts).where(alerts.c.id == row["id"]).values(silence_id=silence_id))
            self._audit(
                conn, actor, "silence:created", row, {"silence_id": silence_id, "minutes": minutes}, now
            )

        self._tx(run)

    def unacknowledge(self, alert_id: int, actor: str, reason: str) -> dict[str, Any]:
        undo = {"ack_by": None, "ack_at": None, "ack_reason": None}
        return alert_view(
            self._tx(lambda conn: self._operator_transition(conn, alert_id, actor, "unack", reason, undo))
        )

    def _operator_transition(
        self,
        conn: Connection,
        alert_id: int,
        actor: str,
        event: str,
        reason: str,
        values: dict[str, Any],
        stamp: str | None = None,
    ) -> dict[str, Any]:
        """A lifecycle step asked for by a person: new state, the given columns (`stamp` = now), audit."""
        now = self.clock()
        row = self._load(conn, alert_id)
        state = lc.transition(row["state"], event)
        values = {**values, "state": state, "updated_at": now, **({stamp: now} if stamp else {})}
        conn.execute(_UPDATE_ALERT, {**values, "_id": alert_id})
        self._audit(
            conn, actor, f"transition:{row['state']}->{state}", row, {"event": event, "reason": reason}, now
        )
        return {**row, **values}

    def resolve(self, alert_id: int, actor: str, reason: str) -> dict[str, Any]:
        result = IntakeResult()

        def run(conn: Connection) -> dict[str, Any]:
            now = self.clock()
            row = self._load(conn, alert_id)
            self._close(conn, row, "resolve", actor, now, now, {"reason": reason, "source": "api"}, result)
            return self._load(conn, alert_id)

        row = self._tx(run)
        for action in result.after_commit:
            _safe(action)
        return alert_view(row)

    def add_note(
        self, actor: str, text: str, alert_id: int | None = None, incident_id: int | None = None
    ) -> dict:
        def run(conn: Connection) -> dict[str, Any]:
            now = self.clock()
            subject: dict[str, Any] = {}
            if alert_id is not None:
                subject = self._load(conn, alert_id)
            elif incident_id is not None:
                found = conn.execute(select(incidents.c.id).where(incidents.c.id == incident_id)).first()
                if found is None:
                    raise NotFound(f"no incident {incident_id}")
                subject = {"incident_id": incident_id}
            values = {
                "alert_id": alert_id,
                "incident_id": incident_id,
                "author": actor,
                "text": text,
                "created_at": now,
            }
            note_id = insert_id(conn, notes.insert(), values)
            self._audit(conn, actor, "note", subject, {"note_id": note_id, "text": text[:500]}, now)
            return {"id": note_id, **values, "created_at": iso(now)}

        return dict(self._tx(run))

    def suppressed_fingerprints(self) -> set[str]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(alerts.c.fingerprint).where(
                    alerts.c.state == lc.SUPPRESSED, alerts.c.open_key.is_not(None)
                )
            )
            return {r[0] for r in rows}

    def set_suppressed(self, fingerprint: str, suppressed: bool, actor: str) -> bool:
        """Silenced/inhibited in Alertmanager (seen by reconcile) or in maintenance: suppress; and back."""

        def run(conn: Connection) -> bool:
            now = self.clock()
            row = conn.execute(select(alerts).where(alerts.c.open_key == fingerprint)).mappings().first()
            if row is None or row["state"] in (lc.RESOLVED, lc.EXPIRED):
                return False
            event = "suppress" if suppressed else "unsuppress"
            if (row["state"], event) not in lc.TRANSITIONS or lc.TRANSITIONS[(row["state"], event)] == row[
                "state"
            ]:
                return False
            state = lc.transition(row["state"], event)
            conn.execute(update(alerts).where(alerts.c.id == row["id"]).values(state=state, updated_at=now))
            self._audit(conn, actor, f"transition:{row['state']}->{state}", dict(row), {"event": event}, now)
            return True

        return bool(self._tx(run))

    # --- time-driven work ----------------------------------------------------------------------------------

    def expire_leases(self) -> int:
        """Absence is not resolution: an alert only expires when its lease (endsAt) has run out."""

        def run(conn: Connection) -> int:
            now = self.clock()
            rows = (
                conn.execute(
                    select(alerts)
                    .where(alerts.c.open_key.is_not(None), alerts.c.lease_until < now)
                    .where(alerts.c.state.in_(lc.OPEN_STATES))
                    .limit(500)
                )
                .mappings()
                .all()
            )
            for row in rows:
                self._close(
                    conn,
                    dict(row),
                    "expire",
                    "system",
                    now,
                    now,
                    {"lease_until": iso(row["lease_until"])},
                    None,
                )
                self._maybe_close_incident(conn, row["incident_id"], now)
            return len(rows)

        return int(self._tx(run))

    def run_escalations(self) -> int:
        """Repeat until acknowledged and escalate to the next tier; only alerts still `firing` qualify."""

        def run(conn: Connection) -> int:
            now = self.clock()
            rows = (
                conn.execute(
                    select(alerts)
                    .where(alerts.c.state == lc.FIRING, alerts.c.next_action_at <= now)
                    .order_by(alerts.c.next_action_at)
                    .limit(200)
                )
                .mappings()
                .all()
            )
            sent = 0
            for row in rows:
                sent += self._escalate_one(conn, dict(row), now)
            return sent

        return int(self._tx(run))

    def _policy(self, name: str | None) -> Policy | None:
        return next((p for p in self.config.policies if p.name == name), None)

    def _escalate_one(self, conn: Connection, row: dict[str, Any], now: float) -> int:
        routes = json.loads(row["routes"])
        policy = self._policy(routes.get("policy"))
        if policy is None:
            conn.execute(update(alerts).where(alerts.c.id == row["id"]).values(next_action_at=None))
            return 0
        elapsed = now - row["created_at"]
        level, repeats, sent = row["escalation_level"], row["repeat_count"], 0
        severity = row["severity"]
        while level < len(policy.escalation) and elapsed >= policy.escalation[level].after_minutes * 60:
            step = policy.escalation[level]
            targets = targets_for(
                self.config, step.channels, step.users, severity, now, self.user_preferences()
            )
            sent += self._enqueue(conn, row, targets, f"escalation{level + 1}", now)
            self._audit(conn, "system", "escalated", row, {"level": level + 1, "targets": len(targets)}, now)
            level += 1
        if policy.repeat_minutes:
            due = int(elapsed // (policy.repeat_minutes * 60))
            if due > repeats:
                targets = [Target(**t) for t in routes.get("targets", [])]
                sent += self._enqueue(conn, row, targets, f"repeat{due}", now)
                repeats = due
        values = {
            "escalation_level": level,
            "repeat_count": repeats,
            "next_action_at": self._next_action(policy, row["created_at"], now, level, repeats),
        }
        conn.execute(_UPDATE_ALERT, {**values, "_id": row["id"]})
        return sent

    @staticmethod
    def _next_action(
        policy: Policy | None, created: float, now: float, level: int, repeats: int
    ) -> float | None:
        if policy is None:
            return None
        times = []
        if level < len(policy.escalation):
            times.append(created + policy.escalation[level].after_minutes * 60)
        if policy.repeat_minutes:
            times.append(created + (repeats + 1) * policy.repeat_minutes * 60)
        return max(min(times), now) if times else None

    # --- user preferences (self-service overrides of the config) ----------------------------------------

    def user_preferences(self) -> dict[str, UserPrefs]:
        """Config users with their stored overrides; re-read at most every 5 s (shared by replicas)."""
        if time.monotonic() - self._prefs_loaded < PREFS_CACHE_SECONDS:
            return self._prefs
        merged = dict(self.config.users)
        with self.db.read() as conn:
            for row in conn.execute(select(user_prefs)).mappings():
                if row["name"] in merged:
                    try:
                        raw = json.loads(row["prefs"])
                        merged[row["name"]] = parse_user(row["name"], raw, self.config.channels, "prefs")
                    except (
                        ValueError,
                        ConfigError,
                    ) as exc:  # config changed under stored prefs: keep config's
                        log.warning("stored preferences of %s ignored: %s", row["name"], exc)
        self._prefs, self._prefs_loaded = merged, time.monotonic()
        return merged

    def set_user_preferences(self, name: str, raw: dict[str, Any], actor: str) -> UserPrefs:
        """Validate like the config file (ConfigError names the field), store, audit."""
        if name not in self.config.users:
            raise NotFound(f"no user {name!r} in the configuration")
        base = self.config.users[name]
        current = {
            "email": base.email,
            "phone": base.phone,
            "channels": list(base.channels),
            "min_severity": base.min_severity,
            "quiet_hours": user_view(base)["quiet_hours"],
        }
        merged = {k: v for k, v in {**current, **raw}.items() if v is not None}
        prefs = parse_user(name, merged, self.config.channels, "preferences")

        def run(conn: Connection) -> None:
            now = self.clock()
            conn.execute(delete(user_prefs).where(user_prefs.c.name == name))
            conn.execute(
                user_prefs.insert(),
                {"name": name, "prefs": dumps(merged), "updated_at": now, "updated_by": actor},
            )
            self._audit(conn, actor, "user:preferences", {}, {"user": name, "preferences": merged}, now)

        self._tx(run)
        self._prefs_loaded = -PREFS_CACHE_SECONDS
        return prefs

    # --- dead man's switch ------------------------------------------------------------------------------

    def _beat(self, conn: Connection, name: str, now: float, result: IntakeResult) -> None:
        """The watchdog alert arrived: record it (not an episode); announce the recovery after an alarm."""
        row = conn.execute(select(heartbeats).where(heartbeats.c.name == name)).mappings().first()
        if row is None:
            conn.execute(heartbeats.insert(), {"name": name, "last_seen_at": now, "alarmed": 0})
            return
        conn.execute(update(heartbeats).where(heartbeats.c.name == name).values(last_seen_at=now, alarmed=0))
        result.duplicates += 1
        if row["alarmed"]:
            self._audit(conn, "system", "heartbeat:restored", {}, {"name": name}, now)
            result.notifications += self._enqueue_heartbeat(conn, name, row["last_seen_at"], False, now)

    def check_heartbeat(self) -> bool:
        """Alarm once when the watchdog has been silent longer than the timeout; True if it alarmed now."""
        name = self.config.heartbeat_alertname
        if not name:
            return False

        def run(conn: Connection) -> bool:
            now = self.clock()
            row = conn.execute(select(heartbeats).where(heartbeats.c.name == name)).mappings().first()
            if row is None:  # never seen: start the clock at the bridge's first check
                conn.execute(heartbeats.insert(), {"name": name, "last_seen_at": now, "alarmed": 0})
                return False
            if row["alarmed"] or now - row["last_seen_at"] <= self.config.heartbeat_timeout_seconds:
                return False
            conn.execute(update(heartbeats).where(heartbeats.c.name == name).values(alarmed=1))
            self._audit(
                conn,
                "system",
                "heartbeat:missing",
                {},
                {"name": name, "last_seen": iso(row["last_seen_at"])},
                now,
            )
            self._enqueue_heartbeat(conn, name, row["last_seen_at"], True, now)
            return True

        return bool(self._tx(run))

    def _enqueue_heartbeat(
        self, conn: Connection, name: str, last_seen: float, missing: bool, now: float
    ) -> int:
        targets = targets_for(self.config, self.config.heartbeat_channels, (), "critical", now)
        payload = {"kind": "heartbeat", "name": name, "missing": missing, "lastSeen": iso(last_seen)}
        word = "missing" if missing else "restored"
        sent = 0
        for target in targets:
            key = f"hb:{name}:{word}:{last_seen:.0f}:{target.key}"
            sent += self._insert_outbox(conn, key, target, "heartbeat", None, None, payload, now)
        return sent

    # --- audit ---------------------------------------------------------------------------------------------

    def _audit(
        self, conn: Connection, actor: str, action: str, subject: Any, detail: dict[str, Any], now: float
    ) -> None:
        subject = subject or {}
        row = {
            "at": now,
            "actor": actor,
            "action": action,
            "alert_id": subject.get("id") if "fingerprint" in subject else None,
            "incident_id": subject.get("incident_id"),
            "fingerprint": subject.get("fingerprint"),
            "labels": subject.get("labels", "{}") if isinstance(subject.get("labels"), str) else dumps({}),
            "detail": dumps(detail),
        }
        pending = getattr(self._buffer, "audit", None)
        if pending is not None:
            pending.append(row)
        else:
            conn.execute(audit.insert(), row)

    def record_context(self, alert_id: int, context: dict[str, Any]) -> None:
        """Keep the root-cause context a notification carried in the alert's history (enrichment.py)."""

        def run(conn: Connection) -> None:
            row = self._load(conn, alert_id)
            self._audit(conn, "enrichment", CONTEXT_ACTION, row, context, self.clock())

        self._tx(run)

    def audit_event(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        """Audit something that is not an alert change (tokens, maintenance, silences, replays)."""
        self._tx(lambda conn: self._audit(conn, actor, action, {}, detail, self.clock()))

    def add_maintenance(
        self,
        matchers: dict[str, str],
        starts: float,
        ends: float,
        comment: str,
        actor: str,
        silence_ids: list[str],
    ) -> dict[str, Any]:
        """Record a maintenance window (its Alertmanager silences are already created) and audit it."""

        def run(conn: Connection) -> dict[str, Any]:
            now = self.clock()
            values = {
                "matchers": dumps(matchers),
                "starts_at": starts,
                "ends_at": ends,
                "comment": comment,
                "created_by": actor,
                "created_at": now,
                "silence_ids": dumps(silence_ids),
            }
            mid = insert_id(conn, maintenance.insert(), values)
            detail = {"maintenance_id": mid, "matchers": matchers, "silence_ids": silence_ids}
            self._audit(conn, actor, "maintenance:created", {}, detail, now)
            return maintenance_view({**values, "id": mid})

        return dict(self._tx(run))

    def list_maintenance(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = (
                conn.execute(select(maintenance).order_by(maintenance.c.id.desc()).limit(500))
                .mappings()
                .all()
            )
        return [maintenance_view(r) for r in rows]

    def replay_dead_letter(self, outbox_id: int, actor: str) -> bool:
        def run(conn: Connection) -> bool:
            now = self.clock()
            changed = conn.execute(
                update(outbox)
                .where(and_(outbox.c.id == outbox_id, outbox.c.status == "dead"))
                .values(status="pending", attempts=0, next_attempt_at=now, claimed_until=0.0)
            ).rowcount
            if changed:
                self._audit(conn, actor, "dead_letter:replay", {}, {"outbox_id": outbox_id}, now)
            return bool(changed)

        return bool(self._tx(run))


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"


def maintenance_view(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "matchers": json.loads(row["matchers"]),
        "startsAt": iso(row["starts_at"]),
        "endsAt": iso(row["ends_at"]),
        "comment": row["comment"],
        "createdBy": row["created_by"],
        "silenceIds": json.loads(row["silence_ids"]),
    }


def alert_view(row: Any) -> dict[str, Any]:
    """The public JSON shape of an alert episode (API, notifications, UI)."""
    return {
        "id": row["id"],
        "fingerprint": row["fingerprint"],
        "state": row["state"],
        "status": "resolved" if row["state"] in (lc.RESOLVED, lc.EXPIRED) else "firing",
        "alertname": row["alertname"],
        "severity": row["severity"],
        "labels": json.loads(row["labels"]),
        "annotations": json.loads(row["annotations"]),
        "startsAt": iso(row["starts_at"]),
        "endsAt": iso(row["ends_at"]),
        "leaseUntil": iso(row["lease_until"]),
        "lastSeenAt": iso(row["last_seen_at"]),
        "incidentId": row.get("incident_id") if hasattr(row, "get") else row["incident_id"],
        "generatorURL": row["generator_url"],
        "receipts": row["receipts"],
        "acknowledgedBy": row["ack_by"],
        "acknowledgedAt": iso(row["ack_at"]),
        "ackReason": row["ack_reason"],
        "silenceId": row["silence_id"],
        "escalationLevel": row["escalation_level"],
    }


def _stale(last: dict[str, Any] | None, a: IncomingAlert) -> bool:
    """A late copy of an ended episode (a peer's repeat after the resolve) is not a new one."""
    return last is not None and last["ends_at"] is not None and a.starts_at < last["ends_at"]


def _safe(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception as exc:  # side effects after commit (AM silences) must not fail the request
        log.warning("post-commit action failed: %s", type(exc).__name__)


def user_view(prefs: UserPrefs) -> dict[str, Any]:
    window = prefs.quiet_hours
    return {
        "name": prefs.name,
        "email": prefs.email,
        "phone": prefs.phone,
        "channels": list(prefs.channels),
        "min_severity": prefs.min_severity,
        "quiet_hours": f"{window.start:%H:%M}-{window.end:%H:%M}" if window else None,
    }
