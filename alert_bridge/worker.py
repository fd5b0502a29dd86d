"""The outbox worker: claims due notifications, delivers them with backoff and jitter, a circuit breaker per
channel and a dead-letter queue; records every attempt. Also runs lease expiry, escalation and reconcile."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from sqlalchemy import bindparam, select, update

from alert_bridge.channels import Channel, DeliveryError, render_message
from alert_bridge.db import deliveries, outbox
from alert_bridge.enrichment import Enricher
from alert_bridge.metrics import BridgeMetrics
from alert_bridge.payload import PayloadError, parse_api_alert
from alert_bridge.service import Bridge, StorageUnavailable

log = logging.getLogger(__name__)

_UPDATE_OUTBOX = outbox.update().where(outbox.c.id == bindparam("_id"))


@dataclass
class Breaker:
    """Closed -> open after N consecutive failures -> half-open (one trial) after the reset time."""

    failures_to_open: int
    reset_seconds: float
    failures: int = 0
    open_until: float = 0.0

    def allow(self, now: float) -> bool:
        return now >= self.open_until

    def success(self) -> None:
        self.failures = 0
        self.open_until = 0.0

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.failures_to_open:
            self.open_until = now + self.reset_seconds

    @property
    def state(self) -> str:
        if self.open_until == 0.0:
            return "closed"
        return "open" if time.time() < self.open_until else "half-open"


@dataclass
class Outcome:
    """What happened to one claimed outbox row: delivered, failed, dead, or deferred (breaker open)."""

    row: dict[str, Any]
    result: str
    error: str | None
    took: float
    permanent: bool = False
    retry_at: float = 0.0


def backoff(attempt: int, base: float, maximum: float) -> float:
    """Exponential backoff with full jitter (AWS style), capped at `maximum`."""
    return random.uniform(0, min(maximum, base * (2 ** max(attempt - 1, 0))))


class Worker:
    def __init__(
        self,
        bridge: Bridge,
        channels: dict[str, Channel],
        metrics: BridgeMetrics,
        enricher: Enricher | None = None,
    ) -> None:
        self.bridge = bridge
        self.channels = channels
        self.metrics = metrics
        self.enricher = enricher
        # (alert, incident) pairs whose context is in the history; bounded: a repeat only adds a history line.
        self._context_recorded: LRUCache[tuple[int, str], bool] = LRUCache(10_000)
        cfg = bridge.config
        self.breakers = {name: Breaker(cfg.breaker_failures, cfg.breaker_reset_seconds) for name in channels}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reconcile_now = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bridge-channel")
        self._fanout = ThreadPoolExecutor(max_workers=8, thread_name_prefix="bridge-deliver")
        self._last_reconcile = 0.0
        # A claimed row returns to the queue after this if its replica dies mid-delivery: longer than any
        # send can take, so a live replica never loses its claim.
        timeouts = [c.config.timeout_seconds for c in channels.values()] or [10.0]
        self.claim_seconds = 2 * max(timeouts) + 5 + (enricher.config.timeout_seconds if enricher else 0)
        bridge.on_reconcile_request = self.request_reconcile

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.bridge.db.is_sqlite:
            # SQLite has one bridge process per file: claims left by a killed predecessor are stale.
            with self.bridge.db.write() as conn:
                conn.execute(update(outbox).where(outbox.c.status == "pending").values(claimed_until=0.0))
        for target, name in (
            (self._deliver_loop, "bridge-outbox"),
            (self._housekeeping_loop, "bridge-timers"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._pool.shutdown(wait=True)
        self._fanout.shutdown(wait=True)

    def poke(self) -> None:
        """New outbox rows were committed: deliver now instead of at the next tick."""
        self._wake.set()

    def request_reconcile(self) -> None:
        self._reconcile_now.set()

    # --- delivery ------------------------------------------------------------------------------------------

    def _deliver_loop(self) -> None:
        interval = self.bridge.config.worker_interval_seconds
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except StorageUnavailable:
                busy = 0
            except Exception:  # never let the worker thread die; the next tick retries
                log.exception("outbox worker iteration failed")
                busy = 0
            if not busy:
                self._wake.wait(interval)
                self._wake.clear()

    def run_once(self, limit: int = 256) -> int:
        """Claim and deliver one batch, then record all outcomes in one transaction; returns rows tried."""
        rows = self._claim(limit)
        if not rows:
            return 0
        by_channel: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_channel.setdefault(row["channel"], []).append(row)
        outcomes = [o for group in self._pool.map(self._deliver_channel, by_channel.values()) for o in group]
        self._record(outcomes)
        return len(rows)

    def _deliver_channel(self, rows: list[dict[str, Any]]) -> list[Outcome]:
        """Probe with one message; fan out only while the channel is healthy, so a dead channel sees at most
        `breaker_failures` calls before its breaker opens."""
        outcomes = [self._deliver(rows[0])]
        rest = rows[1:]
        breaker = self.breakers.get(rows[0]["channel"])
        if breaker is not None and breaker.failures == 0:
            outcomes += list(self._fanout.map(self._deliver, rest))
        else:
            outcomes += [self._deliver(row) for row in rest]
        return outcomes

    def _claim(self, limit: int) -> list[dict[str, Any]]:
        db = self.bridge.db

        def run(conn: Any) -> list[dict[str, Any]]:
            now = time.time()
            query = (
                select(outbox)
                .where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now)
                .where(outbox.c.claimed_until < now)
                .order_by(outbox.c.next_attempt_at, outbox.c.id)
                .limit(limit)
            )
            if not db.is_sqlite:
                # Replicas skip rows another replica is claiming right now instead of waiting on them.
                query = query.with_for_update(skip_locked=True)
            rows = [dict(r) for r in conn.execute(query).mappings().all()]
            if rows:
                ids = [r["id"] for r in rows]
                conn.execute(
                    update(outbox).where(outbox.c.id.in_(ids)).values(claimed_until=now + self.claim_seconds)
                )
            return rows

        try:
            with db.write() as conn:
                return run(conn)
        except Exception as exc:
            log.warning("outbox claim failed: %s", type(exc).__name__)
            raise StorageUnavailable(type(exc).__name__) from None

    def _deliver(self, row: dict[str, Any]) -> Outcome:
        name = row["channel"]
        channel = self.channels.get(name)
        now = time.time()
        if channel is None:
            return Outcome(row, "dead", f"channel {name!r} is no longer configured", 0.0, permanent=True)
        breaker = self.breakers[name]
        if not breaker.allow(now):
            # Not an attempt: the channel is known to be down; come back when the breaker half-opens.
            return Outcome(row, "deferred", None, 0.0, retry_at=breaker.open_until)
        payload = self._enrich(row, json.loads(row["payload"]))
        prefix = channel.config.options.get("subject_prefix", "[NovaCron]")
        message = render_message(row["dedup_key"], row["kind"], row["recipient"], payload, prefix)
        started = time.monotonic()
        try:
            channel.send(message)
        except DeliveryError as exc:
            breaker.failure(time.time())
            return Outcome(row, "failed", str(exc), time.monotonic() - started, permanent=exc.permanent)
        except Exception as exc:  # a plugin bug must not kill the worker; treat as retryable
            breaker.failure(time.time())
            return Outcome(row, "failed", type(exc).__name__, time.monotonic() - started)
        breaker.success()
        return Outcome(row, "delivered", None, time.monotonic() - started)

    def _enrich(self, row: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        """Add the sidecar's likely cause to an anomaly alert (never fails: without it on any trouble), and
        keep the first context per alert and incident in its history for the API and UI."""
        if self.enricher is None:
            return payload
        payload = self.enricher.enrich(payload)
        context, alert_id = payload.get("context"), row.get("alert_id")
        if context and alert_id is not None:
            key = (int(alert_id), str(context.get("incident")))
            if key not in self._context_recorded:
                self._context_recorded[key] = True
                try:
                    self.bridge.record_context(int(alert_id), context)
                except Exception as exc:  # the notification matters more than its history line
                    log.warning("could not record the anomaly context of alert %s: %s", alert_id, exc)
        return payload

    def _record(self, outcomes: list[Outcome]) -> None:
        """Write every outcome and attempt of the batch in one transaction (retried)."""
        cfg = self.bridge.config
        now = time.time()
        updates: list[tuple[int, dict[str, Any]]] = []
        attempts: list[dict[str, Any]] = []
        for o in outcomes:
            row = o.row
            if o.result == "deferred":
                updates.append((row["id"], {"next_attempt_at": o.retry_at, "claimed_until": 0.0}))
                continue
            attempt = row["attempts"] + 1
            values: dict[str, Any] = {"attempts": attempt, "claimed_until": 0.0, "last_error": o.error}
            if o.result == "delivered":
                values.update(status="delivered", delivered_at=now)
            elif o.permanent or attempt >= cfg.max_attempts:
                values.update(status="dead")
                o.result = "dead"
            else:
                delay = backoff(attempt, cfg.backoff_base_seconds, cfg.backoff_max_seconds)
                values.update(next_attempt_at=now + delay)
            updates.append((row["id"], values))
            attempts.append(
                {
                    "outbox_id": row["id"],
                    "channel": row["channel"],
                    "attempt": attempt,
                    "at": now,
                    "result": o.result,
                    "latency_seconds": o.took,
                    "error": o.error,
                }
            )
        for tries in range(5):
            try:
                with self.bridge.db.write() as conn:
                    # One executemany per shape of update (delivered / retry / dead / deferred).
                    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
                    for outbox_id, values in updates:
                        shapes.setdefault(tuple(sorted(values)), []).append({**values, "_id": outbox_id})
                    for params in shapes.values():
                        conn.execute(_UPDATE_OUTBOX, params)
                    if attempts:
                        conn.execute(deliveries.insert(), attempts)
                break
            except Exception as exc:
                # Delivered but not recorded: the claim expires and the message goes again (at-least-once,
                # with the same idempotency key), which is the documented trade-off.
                log.warning(
                    "recording %d outcomes failed: %s (try %d)", len(updates), type(exc).__name__, tries + 1
                )
                time.sleep(0.2 * (tries + 1))
        for o in outcomes:
            self._count(o, now)

    def _count(self, o: Outcome, now: float) -> None:
        channel = o.row["channel"]
        if o.result == "deferred":
            return
        self.metrics.notifications.labels(channel, o.result).inc()
        if o.result == "delivered":
            self.metrics.latency.labels(channel).observe(max(0.0, now - o.row["created_at"]))
        else:
            self.metrics.failed.labels(channel).inc()
            log.warning("delivery %s on %s %s: %s", o.row["id"], channel, o.result, o.error)

    # --- timers --------------------------------------------------------------------------------------------

    def _housekeeping_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.housekeeping()
            except Exception as exc:
                log.warning("housekeeping failed: %s", type(exc).__name__)
            self._reconcile_now.wait(1.0)

    def housekeeping(self) -> None:
        expired = self.bridge.expire_leases()
        sent = self.bridge.run_escalations()
        alarmed = self.bridge.check_heartbeat()
        if expired or sent or alarmed:
            self.poke()
        cfg = self.bridge.config
        due = (
            cfg.reconcile_interval_seconds
            and time.time() - self._last_reconcile >= cfg.reconcile_interval_seconds
        )
        if self._reconcile_now.is_set() or due:
            self._reconcile_now.clear()
            self.reconcile()

    def reconcile(self) -> int:
        """Pull Alertmanager's full alert list (after truncatedAlerts, or periodically) and apply it."""
        from alert_bridge.payload import Notification

        am = self.bridge.alertmanager
        self._last_reconcile = time.time()
        if am is None:
            return 0
        try:
            raw = am.alerts()
        except Exception as exc:
            log.warning("reconcile: Alertmanager unavailable: %s", exc)
            return 0
        parsed = []
        for item in raw:
            try:
                parsed.append((parse_api_alert(item), _group_of(item)))
            except PayloadError as exc:
                log.warning("reconcile: skipping an alert: %s", exc)
        groups: dict[str, list[Any]] = {}
        for alert, group in parsed:
            groups.setdefault(group, []).append(alert)
        for group, members in groups.items():
            # One transaction per receiver group, in chunks, rather than one per alert.
            for i in range(0, len(members), 500):
                chunk = tuple(members[i : i + 500])
                self.bridge.ingest(Notification(group, "firing", "reconcile", 0, "", {}, chunk), "reconcile")
        suppressed = self.bridge.suppressed_fingerprints()
        for alert, _group in parsed:
            if not alert.silenced and alert.fingerprint in suppressed:  # the silence ended: back to firing
                self.bridge.set_suppressed(alert.fingerprint, False, "reconcile")
        self.poke()
        return len(parsed)


def _group_of(item: dict[str, Any]) -> str:
    receivers = item.get("receivers") or []
    names = ",".join(sorted(r.get("name", "") for r in receivers if isinstance(r, dict)))
    return f"reconcile:{names}" if names else ""
