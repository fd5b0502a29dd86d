"""Property tests: random event orders follow the transition table; fuzzed payloads never 500 nor change."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from alert_bridge import lifecycle as lc
from alert_bridge.config import TokenSpec, parse_config, severity_rank
from alert_bridge.db import alerts, audit, outbox
from alert_bridge.main import build_service
from alert_bridge.testing import ADMIN_TOKEN, WEBHOOK_TOKEN, alert, payload

_counter = itertools.count()
HOOK = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    path = tmp_path_factory.mktemp("props") / "bridge.db"
    svc = build_service(parse_config({}), f"sqlite:///{path}")
    svc.tokens.ensure(TokenSpec("admin", "admin", ADMIN_TOKEN))
    svc.tokens.ensure(TokenSpec("am", "webhook", WEBHOOK_TOKEN))
    yield svc
    svc.close()


OPS = st.lists(
    st.sampled_from(["fire", "fire_higher", "fire_new", "resolve_am", "ack", "unack", "resolve_api"]),
    min_size=1,
    max_size=16,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_event_orders_follow_the_table(service, ops):
    client = service.app.test_client()
    fp = f"{next(_counter):08x}"
    severities = iter(["info", "warning", "error", "critical", "page"] + ["page"] * 20)
    severity = next(severities)
    starts, last_end = 1_000_000, None
    day = 0
    state: str | None = None  # the model: state of the open episode, or None
    for op in ops:
        if op in ("fire", "fire_higher", "fire_new"):
            previous = severity
            if op == "fire_higher":
                severity = next(severities)
            rising = severity_rank(severity) > severity_rank(previous)
            if op == "fire_new":
                day += 1
            begin = starts + day * 86400
            a = alert("Prop", starts=_ts(begin), fingerprint=fp, severity=severity)
            resp = client.post("/webhook/alertmanager", json=payload([a]), headers=HOOK)
            assert resp.status_code == 200
            if state is not None:
                state = lc.transition(state, "rise" if rising else "fire")
            elif last_end is None or begin >= last_end:
                state = lc.FIRING
        elif op == "resolve_am":
            end = starts + day * 86400 + 3600
            a = alert("Prop", "resolved", starts=_ts(starts + day * 86400), ends=_ts(end), fingerprint=fp)
            assert client.post("/webhook/alertmanager", json=payload([a]), headers=HOOK).status_code == 200
            if state is not None:
                state, last_end = None, end
            else:
                # Unknown period: kept as a resolved history record, which then bounds stale copies.
                last_end = _latest_end(service, fp)
        else:
            current = _open(service, fp)
            target = current["id"] if current else _latest_id(service, fp)
            if target is None:
                continue
            event = {"ack": "ack", "unack": "unack", "resolve_api": "resolve"}[op]
            resp = client.post(f"/api/v1/alerts/{target}/{op.replace('_api', '')}", json={}, headers=ADMIN)
            model_state = state if current else lc.RESOLVED
            allowed = (model_state, event) in lc.TRANSITIONS
            assert resp.status_code == (200 if allowed else 409), (op, model_state, resp.get_json())
            if allowed and current:
                state = lc.transition(state, event)  # type: ignore[arg-type]
                if state == lc.RESOLVED:
                    state, last_end = None, _latest_end(service, fp)
        opened = _open(service, fp)
        assert (opened["state"] if opened else None) == state, ops
    with service.db.read() as conn:
        open_rows = conn.execute(
            select(func.count())
            .select_from(alerts)
            .where(alerts.c.fingerprint == fp, alerts.c.open_key.is_not(None))
        ).scalar_one()
    assert open_rows <= 1


def _ts(epoch: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _open(service, fp):
    with service.db.read() as conn:
        row = conn.execute(select(alerts).where(alerts.c.open_key == fp)).mappings().first()
    return dict(row) if row else None


def _latest_id(service, fp):
    with service.db.read() as conn:
        return conn.execute(select(func.max(alerts.c.id)).where(alerts.c.fingerprint == fp)).scalar_one()


def _latest_end(service, fp):
    with service.db.read() as conn:
        return conn.execute(
            select(alerts.c.ends_at).where(alerts.c.fingerprint == fp).order_by(alerts.c.id.desc()).limit(1)
        ).scalar_one()


def _snapshot(service):
    with service.db.read() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(t)).scalar_one() for t in (alerts, audit, outbox)
        )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
VALID = payload([alert("Fuzz", host="h1")])


def _mutations():
    """Valid payloads with one part replaced by junk, plus arbitrary JSON."""
    keys = st.sampled_from(["version", "alerts", "groupKey", "truncatedAlerts", "status"])
    alert_keys = st.sampled_from(
        ["status", "labels", "annotations", "startsAt", "endsAt", "fingerprint", "generatorURL"]
    )

    def top(key, junk):
        body = json.loads(json.dumps(VALID))
        body[key] = junk
        return body

    def inner(key, junk):
        body = json.loads(json.dumps(VALID))
        body["alerts"][0][key] = junk
        return body

    return st.one_of(JSON, st.builds(top, keys, JSON), st.builds(inner, alert_keys, JSON))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_mutations())
def test_fuzzed_payloads_never_500_and_change_nothing_when_rejected(service, body):
    client = service.app.test_client()
    before = _snapshot(service)
    resp = client.post(
        "/webhook/alertmanager", data=json.dumps(body), headers={**HOOK, "Content-Type": "application/json"}
    )
    assert resp.status_code in (200, 400), resp.get_data()
    assert resp.is_json and "Traceback" not in resp.get_data(as_text=True)
    if resp.status_code == 400:
        assert resp.get_json()["error"]
        assert _snapshot(service) == before


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_garbage_bytes_are_400(service, raw):
    client = service.app.test_client()
    before = _snapshot(service)
    resp = client.post(
        "/webhook/alertmanager", data=raw, headers={**HOOK, "Content-Type": "application/json"}
    )
    assert resp.status_code in (200, 400)
    if resp.status_code == 400:
        assert _snapshot(service) == before
