"""Automation hooks: call NovaCron automation webhooks for configured alert types, with the decision context.

    automation:
      dry_run: false            # true: record what would be called in the audit trail, call nothing
      hooks:
        - name: migrate
          channel: novacron-automation   # a webhook channel: Standard Webhooks signature, outbox retries
          match: {alertname: NovaCronMigrationRecommended}
          match_re: {}
          action: migrate_vm
          disruptive: true               # wait for POST /api/v1/automation/actions/<id>/approve
          dry_run: false                 # per hook, or-ed with the global switch
          dedupe_seconds: 1800           # same decision again within this time of its last firing: no call

When a new alert episode starts firing (not silenced) and a hook matches, the bridge builds one request
`{"type": "automation", "action", "hook", "dry_run": false, "decision": {vm_id, source_host, target_host,
...}, "alert": {...}}` and puts it in the outbox under the idempotency key `auto:<hook>:<alert id>`, so the
same decision is called exactly once whatever Alertmanager repeats or how many bridge replicas receive it.
A disruptive hook instead writes `automation:awaiting_approval` to the audit trail; an operator approves or
rejects it through the API (each recorded as `automation:approved` / `automation:rejected`); approval
enqueues the call. Every step is an audit record.

A decision is also called once across firing periods: when the deciding sidecar replica changes or restarts,
its decision series vanish, the alert resolves and the next decider raises it again as a new episode. Each
hook keeps a row per **decision key** (the hook, the alertname and the decision context minus `reason`:
group/direction/desired_vms, vm_id/source_host/target_host, host, tenant, ...) in `automation_decisions`; a
new episode whose key was firing less than `dedupe_seconds` ago (still firing, or resolved less than that
before) calls nothing and records `automation:duplicate`. The check is one upsert plus a row lock in the same
transaction as the outbox insert, so two bridge replicas on one PostgreSQL database cannot both call.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from alert_bridge.db import alerts, automation_decisions, insert_if_absent
from exporters.common.config import ConfigError, check_keys, parse_number

# Labels of the decision alerts (rules/decisions.rules.yml) that form the context the automation receives.
CONTEXT_LABELS = (
    "vm_id",
    "source_host",
    "target_host",
    "host",
    "reason",
    "group",
    "direction",
    "tenant",
    "size",
    "provider",
    "target",
)
# Annotations of the decision alerts that carry machine-readable values (the group's desired size), added to
# the context too: a label would make every new value a new alert.
CONTEXT_ANNOTATIONS = ("desired_vms",)
AWAITING = "automation:awaiting_approval"
DUPLICATE = "automation:duplicate"
# Why a decision was made does not change what it asks for: a move proposed for "steal" after "hot" is the
# same move, so `reason` is left out of the decision key.
KEY_EXCLUDE = frozenset({"reason"})
DEFAULT_DEDUPE_SECONDS = 1800.0  # the sidecar's default cooldown: longer than a decider change (TTL+interval)


@dataclass(frozen=True)
class Hook:
    name: str
    channel: str
    action: str
    match: Mapping[str, str] = field(default_factory=dict)
    match_re: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    disruptive: bool = False
    dry_run: bool = False
    dedupe_seconds: float = DEFAULT_DEDUPE_SECONDS

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match.items()):
            return False
        return all(p.fullmatch(labels.get(k, "")) for k, p in self.match_re.items())


@dataclass(frozen=True)
class AutomationConfig:
    dry_run: bool = False
    hooks: tuple[Hook, ...] = ()


def parse_automation(section: Mapping[str, Any], channels: Mapping[str, Any]) -> AutomationConfig:
    """Validate `automation:`; a hook's channel must be a configured webhook channel."""
    check_keys(section, {"dry_run", "hooks", "dedupe_seconds"}, "automation")
    dry = section.get("dry_run", False)
    if not isinstance(dry, bool):
        raise ConfigError("automation.dry_run", "must be true or false")
    window = _seconds(section.get("dedupe_seconds", DEFAULT_DEDUPE_SECONDS), "automation.dedupe_seconds")
    raw = section.get("hooks") or []
    if not isinstance(raw, list):
        raise ConfigError("automation.hooks", "must be a list")
    hooks, names = [], set()
    for i, h in enumerate(raw):
        hook = _hook(h, f"automation.hooks[{i}]", channels, window)
        if hook.name in names:
            raise ConfigError(f"automation.hooks[{i}].name", f"duplicate hook name {hook.name!r}")
        names.add(hook.name)
        hooks.append(hook)
    return AutomationConfig(dry, tuple(hooks))


def _seconds(raw: Any, key: str) -> float:
    """A window in seconds: a finite number >= 0 (0 turns the cross-episode check off)."""
    return parse_number(raw, key, 0)


_HOOK_KEYS = {"name", "channel", "action", "match", "match_re", "disruptive", "dry_run", "dedupe_seconds"}


def _hook(raw: Any, where: str, channels: Mapping[str, Any], window: float) -> Hook:
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "must be a mapping")
    check_keys(raw, _HOOK_KEYS, where)
    for key in ("name", "channel", "action"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ConfigError(f"{where}.{key}", "must be a non-empty string")
    channel = channels.get(raw["channel"])
    if channel is None or getattr(channel, "type", "") != "webhook":
        raise ConfigError(f"{where}.channel", f"{raw['channel']!r} is not a configured webhook channel")
    match = raw.get("match") or {}
    match_re = raw.get("match_re") or {}
    if not isinstance(match, Mapping) or not isinstance(match_re, Mapping):
        raise ConfigError(f"{where}.match", "match and match_re must map label names to values")
    if not match and not match_re:
        raise ConfigError(f"{where}.match", "a hook must match something (e.g. alertname)")
    patterns = {}
    for k, v in match_re.items():
        try:
            patterns[str(k)] = re.compile(str(v))
        except re.error as exc:
            raise ConfigError(f"{where}.match_re.{k}", f"bad regex: {exc}") from None
    flags = {}
    for key in ("disruptive", "dry_run"):
        flags[key] = raw.get(key, False)
        if not isinstance(flags[key], bool):
            raise ConfigError(f"{where}.{key}", "must be true or false")
    return Hook(
        raw["name"],
        raw["channel"],
        raw["action"],
        {str(k): str(v) for k, v in match.items()},
        patterns,
        flags["disruptive"],
        flags["dry_run"],
        _seconds(raw.get("dedupe_seconds", window), f"{where}.dedupe_seconds"),
    )


def request_body(hook: Hook, alert: Mapping[str, Any]) -> dict[str, Any]:
    """What the automation endpoint receives (the webhook channel adds `type` and `subject`)."""
    labels, annotations = alert.get("labels", {}), alert.get("annotations") or {}
    decision = {k: labels[k] for k in CONTEXT_LABELS if labels.get(k)}
    decision.update({k: annotations[k] for k in CONTEXT_ANNOTATIONS if str(annotations.get(k, "")).strip()})
    return {
        "kind": "automation",
        "action": hook.action,
        "hook": hook.name,
        "dry_run": False,
        "decision": decision,
        "alert": dict(alert),
    }


def decision_key(
    hook: Hook, alert: Mapping[str, Any], decision: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """(key, identity): what makes two firings the same decision for this hook.

    The identity is the alertname and the decision context without `reason`; an alert that carries no
    decision context is identified by all its labels (as its fingerprint is)."""
    labels = alert.get("labels", {})
    context = {k: str(v) for k, v in decision.items() if k not in KEY_EXCLUDE}
    identity = {"alertname": labels.get("alertname", ""), **context} if context else dict(labels)
    raw = json.dumps([hook.name, identity], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest(), identity


def _last_active(conn: Any, rec: Mapping[str, Any], now: float) -> float:
    """When the decision was last seen firing: now while its newest episode is open, else when it closed
    (the bridge's clock, as the window is; Alertmanager's endsAt comes from another clock)."""
    prev = (
        conn.execute(select(alerts.c.open_key, alerts.c.updated_at).where(alerts.c.id == rec["alert_id"]))
        .mappings()
        .first()
    )
    if prev is None:  # pruned history: the time it was last raised is all we know
        return float(rec["seen_at"])
    return now if prev["open_key"] is not None else max(float(prev["updated_at"]), float(rec["seen_at"]))


def claim(
    conn: Any, hook: Hook, key: str, identity: Mapping[str, Any], alert_id: int, now: float
) -> dict[str, Any] | None:
    """None: this episode acts on the decision. Else the decision's record: a duplicate within the window.

    Race-free across replicas: the INSERT ... ON CONFLICT DO NOTHING takes the key (a concurrent insert waits
    on the unique index), and SELECT ... FOR UPDATE holds the row until commit on PostgreSQL; on SQLite the
    insert statement already holds the database's write lock until commit."""
    t = automation_decisions
    values = {
        "key": key,
        "hook": hook.name[:128],
        "decision": json.dumps(identity, sort_keys=True),
        "alert_id": alert_id,
        "acted_alert_id": alert_id,
        "acted_at": now,
        "seen_at": now,
    }
    if insert_if_absent(conn, t, "key", values):
        return None
    rec = dict(conn.execute(select(t).where(t.c.key == key).with_for_update()).mappings().one())
    if rec["alert_id"] == alert_id:  # this very episode again (a retried transaction): it acted
        return None
    duplicate = now - _last_active(conn, rec, now) < hook.dedupe_seconds
    seen = {"alert_id": alert_id, "seen_at": now}
    acted = {} if duplicate else {"acted_alert_id": alert_id, "acted_at": now}
    conn.execute(update(t).where(t.c.key == key).values(**seen, **acted))
    return rec if duplicate else None


def on_new_episode(bridge: Any, conn: Any, row: Mapping[str, Any], now: float) -> int:
    """Called by intake for a new firing episode: outbox rows enqueued (dry-run and held ones: none)."""
    cfg: AutomationConfig | None = getattr(bridge.config, "automation", None)
    if cfg is None or not cfg.hooks:
        return 0
    from alert_bridge.routing import Target
    from alert_bridge.service import alert_view

    alert = alert_view(row)
    sent = 0
    for hook in cfg.hooks:
        if not hook.matches(alert["labels"]):
            continue
        body = request_body(hook, alert)
        detail = {"hook": hook.name, "action": hook.action, "channel": hook.channel, "request": body}
        key, identity = decision_key(hook, alert, body["decision"])
        prior = claim(conn, hook, key, identity, row["id"], now) if hook.dedupe_seconds > 0 else None
        if prior is not None:
            dup = {
                **{k: detail[k] for k in ("hook", "action", "channel")},
                "decision": body["decision"],
                "decision_key": key,
                "duplicate_of": prior["acted_alert_id"],
                "dedupe_seconds": hook.dedupe_seconds,
            }
            bridge._audit(conn, "automation", DUPLICATE, row, dup, now)
        elif cfg.dry_run or hook.dry_run:
            bridge._audit(conn, "automation", "automation:dry_run", row, detail, now)
        elif hook.disruptive:
            bridge._audit(conn, "automation", AWAITING, row, detail, now)
        else:
            key = f"auto:{hook.name}:{row['id']}"
            sent += bridge._insert_outbox(
                conn, key, Target(hook.channel), "automation", row["id"], row.get("incident_id"), body, now
            )
            bridge._audit(conn, "automation", "automation:requested", row, {**detail, "dedup_key": key}, now)
    return sent


# --- approvals -------------------------------------------------------------------------------------------


class ActionNotFound(LookupError):
    pass


class ActionDecided(RuntimeError):
    pass


def _decisions(conn: Any, action_ids: list[int]) -> dict[int, dict[str, Any]]:
    """action id -> the audit row that approved or rejected it."""
    import json

    from sqlalchemy import select

    from alert_bridge.db import audit

    if not action_ids:
        return {}
    rows = conn.execute(
        select(audit).where(audit.c.action.in_(("automation:approved", "automation:rejected")))
    ).mappings()
    wanted, out = set(action_ids), {}
    for r in rows:
        aid = json.loads(r["detail"]).get("action_id")
        if aid in wanted:
            out[aid] = dict(r)
    return out


def list_actions(bridge: Any, limit: int = 200) -> list[dict[str, Any]]:
    """Disruptive actions, newest first, with their state: awaiting_approval, approved or rejected."""
    import json

    from sqlalchemy import select

    from alert_bridge.db import audit
    from alert_bridge.service import iso

    with bridge.db.read() as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                select(audit).where(audit.c.action == AWAITING).order_by(audit.c.id.desc()).limit(limit)
            ).mappings()
        ]
        decided = _decisions(conn, [r["id"] for r in rows])
    out = []
    for r in rows:
        d = json.loads(r["detail"])
        dec = decided.get(r["id"])
        out.append(
            {
                "id": r["id"],
                "at": iso(r["at"]),
                "hook": d.get("hook"),
                "action": d.get("action"),
                "alertId": r["alert_id"],
                "decision": d.get("request", {}).get("decision", {}),
                "state": dec["action"].split(":", 1)[1] if dec else "awaiting_approval",
                "decidedBy": dec["actor"] if dec else None,
            }
        )
    return out


def decide(bridge: Any, action_id: int, actor: str, approve: bool, reason: str) -> dict[str, Any]:
    """Approve (enqueue the call, once) or reject a held action; both are audit records."""
    import json

    from sqlalchemy import select

    from alert_bridge.db import audit
    from alert_bridge.routing import Target

    def run(conn: Any) -> dict[str, Any]:
        row = (
            conn.execute(select(audit).where(audit.c.id == action_id, audit.c.action == AWAITING))
            .mappings()
            .first()
        )
        if row is None:
            raise ActionNotFound(f"no automation action {action_id} awaiting approval")
        if _decisions(conn, [action_id]):
            raise ActionDecided(f"automation action {action_id} was already decided")
        d = json.loads(row["detail"])
        now = bridge.clock()
        subject = {"id": row["alert_id"], "fingerprint": row["fingerprint"], "labels": row["labels"]}
        detail: dict[str, Any] = {"action_id": action_id, "hook": d["hook"], "reason": reason}
        if approve:
            key = f"auto:{d['hook']}:{row['alert_id']}"
            target = Target(d["channel"])
            bridge._insert_outbox(conn, key, target, "automation", row["alert_id"], None, d["request"], now)
            detail["dedup_key"] = key
        bridge._audit(
            conn, actor, "automation:approved" if approve else "automation:rejected", subject, detail, now
        )
        return {"id": action_id, "state": "approved" if approve else "rejected"}

    result: dict[str, Any] = bridge._tx(run, attempts=1)
    return result


def register_routes(app: Any, bridge: Any, poke: Any) -> None:
    """GET /api/v1/automation/actions (viewer); POST .../<id>/approve and .../<id>/reject (operator)."""
    from flask import jsonify, request

    from alert_bridge.api import ApiError, principal, requires

    @app.get("/api/v1/automation/actions")
    @requires("viewer")
    def automation_actions() -> Any:
        return jsonify(list_actions(bridge))

    def _decide(action_id: int, approve: bool) -> Any:
        body = request.get_json(silent=True) if request.data else {}
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 4000:
            raise ApiError(400, "reason must be a string of at most 4000 characters")
        try:
            out = decide(bridge, action_id, principal().name, approve, reason)
        except ActionNotFound as exc:
            raise ApiError(404, str(exc)) from None
        except ActionDecided as exc:
            raise ApiError(409, str(exc)) from None
        if approve:
            poke()
        return jsonify(out)

    @app.post("/api/v1/automation/actions/<int:action_id>/approve")
    @requires("operator")
    def automation_approve(action_id: int) -> Any:
        return _decide(action_id, True)

    @app.post("/api/v1/automation/actions/<int:action_id>/reject")
    @requires("operator")
    def automation_reject(action_id: int) -> Any:
        return _decide(action_id, False)


def openapi_paths(op: Any) -> dict[str, Any]:
    """The routes above for the bridge's OpenAPI document (`op` is its operation builder)."""
    pid = [{"name": "action_id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    return {
        "/api/v1/automation/actions": {
            "get": op("Automation actions awaiting approval or decided", "viewer")
        },
        "/api/v1/automation/actions/{action_id}/approve": {
            "post": op("Approve a disruptive automation action: its webhook is called once", "operator", pid)
        },
        "/api/v1/automation/actions/{action_id}/reject": {
            "post": op("Reject a disruptive automation action", "operator", pid)
        },
    }
