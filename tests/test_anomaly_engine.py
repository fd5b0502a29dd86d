"""Anomaly engine: incremental cycles, state over restarts, write-back metrics, incidents and the API."""

from __future__ import annotations

import math
import pickle
import random

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry, generate_latest

from analytics_sidecar.anomaly.api import anomaly_api, init_anomaly_api
from analytics_sidecar.anomaly.correlation import find_incidents
from analytics_sidecar.anomaly.detector import AnomalyDetector
from analytics_sidecar.anomaly.engine import (
    STATE_VERSION,
    AnomalyCollector,
    AnomalyEngine,
    Episode,
    SeriesKey,
    SeriesState,
)

STEP = 60.0
T0 = 1_764_000_000.0


def cpu(n: int, seed: int, start: int = 0) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    ts = [T0 + (start + i) * STEP for i in range(n)]
    xs = [0.4 + 0.1 * math.sin((start + i) / 60) + rng.gauss(0, 0.01) for i in range(n)]
    return ts, xs


KEY = SeriesKey("vm-1", "cpu", host="kvm-a", tenant="t1")


def test_cycles_only_score_new_points() -> None:
    engine = AnomalyEngine()
    ts, xs = cpu(600, seed=1)
    engine.update(KEY, ts[:400], xs[:400])
    st = engine.series()[0]
    assert st.detector.n == 400
    # the next cycle re-reads an overlapping range: only the 200 new points are scored
    score, upper, lower = engine.update(KEY, ts[300:], xs[300:])
    assert st.detector.n == 600
    assert st.last_t == ts[-1]
    assert 0.0 <= score <= 1.0 and lower <= upper


def test_state_survives_restart(tmp_path) -> None:
    ts, xs = cpu(900, seed=2)
    one = AnomalyEngine(tmp_path)
    one.update(KEY, ts[:500], xs[:500])
    assert one.save() == 1
    assert one.save() == 0  # nothing changed since
    two = AnomalyEngine(tmp_path)  # a restarted sidecar
    after_restart = two.update(KEY, ts[500:], xs[500:])
    straight = AnomalyEngine()
    straight.update(KEY, ts[:500], xs[:500])
    assert straight.update(KEY, ts[500:], xs[500:]) == after_restart
    assert two.series()[0].detector.n == 900


def test_updates_autosave_changed_series(tmp_path) -> None:
    engine = AnomalyEngine(tmp_path, autosave_seconds=0.0)
    ts, xs = cpu(30, seed=7)
    engine.update(KEY, ts, xs)
    assert len(list(tmp_path.glob("*.pkl"))) == 1
    assert AnomalyEngine(tmp_path).update(KEY, ts, xs) == engine.update(KEY, ts, xs)


def test_corrupt_or_foreign_state_starts_afresh(tmp_path) -> None:
    engine = AnomalyEngine(tmp_path)
    ts, xs = cpu(50, seed=3)
    engine.update(KEY, ts, xs)
    engine.save()
    for path in tmp_path.glob("*.pkl"):
        path.write_bytes(b"not a pickle")
    fresh = AnomalyEngine(tmp_path)
    fresh.update(KEY, ts[:10], xs[:10])
    assert fresh.series()[0].detector.n == 10


def test_state_of_an_older_release_starts_afresh(tmp_path) -> None:
    """A state file written under another STATE_VERSION (an older detector's object layout) is not loaded,
    even when the parameters it names compare equal (new fields fall back to their class defaults)."""
    engine = AnomalyEngine(tmp_path)
    ts, xs = cpu(50, seed=4)
    engine.update(KEY, ts, xs)
    engine.save()
    (path,) = tmp_path.glob("*.pkl")
    blob = pickle.loads(path.read_bytes())
    path.write_bytes(pickle.dumps({**blob, "version": STATE_VERSION - 1}))
    fresh = AnomalyEngine(tmp_path)
    fresh.update(KEY, ts[:10], xs[:10])
    assert fresh.series()[0].detector.n == 10


def test_forget_removes_series_and_file(tmp_path) -> None:
    engine = AnomalyEngine(tmp_path)
    ts, xs = cpu(20, seed=4)
    engine.update(KEY, ts, xs)
    engine.save()
    engine.forget(KEY)
    assert engine.series() == [] and not list(tmp_path.glob("*.pkl"))


def test_length_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError):
        AnomalyEngine().update(KEY, [1.0, 2.0], [1.0])


def test_collector_exposes_score_and_band() -> None:
    engine = AnomalyEngine()
    ts, xs = cpu(300, seed=5)
    engine.update(KEY, ts, xs)
    registry = CollectorRegistry()
    registry.register(AnomalyCollector(engine))
    text = generate_latest(registry).decode()
    for name in ("novacron_anomaly_score", "novacron_baseline_upper", "novacron_baseline_lower"):
        assert f'{name}{{resource="cpu",vm_id="vm-1"}}' in text
    assert "# HELP novacron_anomaly_score " in text
    assert 'novacron_anomaly_alarms_total{resource="cpu",vm_id="vm-1"}' in text


def test_engine_marks_an_episode_when_a_series_breaks() -> None:
    engine = AnomalyEngine()
    ts, xs = cpu(800, seed=6)
    xs[700:] = [x + 0.5 for x in xs[700:]]  # a VM pinned at +50 points of CPU
    engine.update(KEY, ts, xs)
    st = engine.series()[0]
    assert st.episodes, "no episode recorded"
    assert ts[700] <= st.episodes[-1].onset <= ts[730]
    assert st.alarms >= 1


# --- correlation -------------------------------------------------------------------------------------


def state(vm_id: str, kind: str, host: str, tenant: str, onset: float, trace: list[float]) -> SeriesState:
    st = SeriesState(SeriesKey(vm_id, "cpu", host, tenant, kind), AnomalyDetector())
    st.episodes.append(Episode(onset, None, 0.9))
    for i, x in enumerate(trace):
        st.trace.append((T0 + i * STEP, x, 0.0))
    return st


def ramp(n: int, at: int, noise: int) -> list[float]:
    rng = random.Random(noise)
    return [(1.0 if i >= at else 0.0) + rng.gauss(0, 0.05) for i in range(n)]


def test_host_with_earliest_onset_ranks_first() -> None:
    host = state("kvm-a", "host", "kvm-a", "", T0 + 100 * STEP, ramp(200, 100, 1))
    vm1 = state("vm-1", "vm", "kvm-a", "t1", T0 + 102 * STEP, ramp(200, 102, 2))
    vm2 = state("vm-2", "vm", "kvm-a", "t2", T0 + 103 * STEP, ramp(200, 103, 3))
    other = state(
        "vm-9", "vm", "kvm-b", "t9", T0 + 101 * STEP, [random.Random(4).random() for _ in range(200)]
    )
    incidents = find_incidents([vm2, other, vm1, host], since=T0, gap=600)
    assert len(incidents) == 2
    main = next(i for i in incidents if len(i.members) == 3)
    assert [m.vm_id for m in main.members] == ["kvm-a", "vm-1", "vm-2"]
    assert main.members[0].correlation > 0.8
    lone = next(i for i in incidents if len(i.members) == 1)
    assert lone.members[0].vm_id == "vm-9"


def test_vm_that_leads_and_correlates_outranks_later_vms_of_a_tenant() -> None:
    first = state("vm-1", "vm", "kvm-a", "t1", T0 + 50 * STEP, ramp(200, 50, 5))
    second = state("vm-2", "vm", "kvm-b", "t1", T0 + 55 * STEP, ramp(200, 55, 6))
    unrelated_time = state("vm-3", "vm", "kvm-c", "t1", T0 + 150 * STEP, ramp(200, 150, 7))
    incidents = find_incidents([second, unrelated_time, first], since=T0, gap=600)
    grouped = next(i for i in incidents if len(i.members) == 2)
    assert grouped.members[0].vm_id == "vm-1"
    assert grouped.to_json()["tenants"] == ["t1"]
    assert len(incidents) == 2


def test_ended_episodes_before_since_are_left_out() -> None:
    old = state("vm-1", "vm", "kvm-a", "t1", T0, ramp(10, 0, 8))
    old.episodes[-1].end = T0 + 60
    assert find_incidents([old], since=T0 + 3600) == []


# --- API ------------------------------------------------------------------------------------------------


@pytest.fixture
def app() -> Flask:
    app = Flask("test")
    app.register_blueprint(anomaly_api)
    return app


def test_api_503_without_engine(app: Flask) -> None:
    resp = app.test_client().get("/api/v1/anomalies/incidents")
    assert resp.status_code == 503 and resp.get_json()["status"] == "error"


def test_api_lists_incidents_and_rejects_bad_parameters(app: Flask) -> None:
    engine = AnomalyEngine()
    host = state("kvm-a", "host", "kvm-a", "", T0 + 100 * STEP, ramp(200, 100, 1))
    vm1 = state("vm-1", "vm", "kvm-a", "t1", T0 + 102 * STEP, ramp(200, 102, 2))
    engine._series = {s.key.ident: s for s in (host, vm1)}
    init_anomaly_api(app, engine, clock=lambda: T0 + 200 * STEP)
    http = app.test_client()
    body = http.get("/api/v1/anomalies/incidents?since=3600").get_json()
    [incident] = body["data"]["incidents"]
    assert incident["likely_cause"]["vm_id"] == "kvm-a"
    assert incident["likely_cause"]["kind"] == "host"
    assert incident["vm_ids"] == ["vm-1"] and incident["ongoing"] is True
    assert http.get("/api/v1/anomalies/incidents?tenant=t1").get_json()["data"]["incidents"]
    assert not http.get("/api/v1/anomalies/incidents?tenant=zz").get_json()["data"]["incidents"]
    for bad in ("since=abc", "since=-5", "gap=nan", "min_score=2"):
        resp = http.get(f"/api/v1/anomalies/incidents?{bad}")
        assert resp.status_code == 400, bad
        assert bad.split("=")[0] in resp.get_json()["error"]
    for path in ("incidents?colour=blue", "series?vmid=vm-1"):
        resp = http.get(f"/api/v1/anomalies/{path}")
        assert resp.status_code == 400 and path.split("?")[1].split("=")[0] in resp.get_json()["error"]
    series = http.get("/api/v1/anomalies/series?vm_id=vm-1").get_json()["data"]["series"]
    assert [s["vm_id"] for s in series] == ["vm-1"]
