"""Decisions under sharding: the replica holding shard 0's share decides; when replica 0 dies, the shard lease
hands that share (and so the decisions) to replica 1 within the lease TTL, and back when replica 0 returns."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.wrappers import Request

from analytics_sidecar.config import Config, Shard
from analytics_sidecar.decisions.config import DecisionSettings
from analytics_sidecar.decisions.engine import DecisionEngine, Decisions
from analytics_sidecar.decisions.scaling import _Track
from analytics_sidecar.decisions.wiring import attach, holds_decision_lease
from stack.plan import console_script
from stack.processes import ManagedProcess, free_port, wait_until
from tests.harness import fleet_prometheus, test_driver_fleet
from tests.test_decisions_chain import start_all, stop_all

pytestmark = pytest.mark.slow

TOKEN = "sharding-decisions-token"
INTERVAL = 1.0
VMS = 8  # four groups of two (the fleet generator's <novacron:group> is "<tenant>-web")
TTL = 3.0


def test_the_decision_lease_is_shard_zeros_share() -> None:
    assert holds_decision_lease(Shard(0, 1))
    assert holds_decision_lease(Shard(0, 3))
    assert not holds_decision_lease(Shard(1, 3))
    # Shard 0 dead: the lease hands its share to the next live shard, which then decides.
    assert holds_decision_lease(Shard(1, 3, adopted=frozenset({0})))
    assert not holds_decision_lease(Shard(2, 3, adopted=frozenset({1})))


def test_the_hook_decides_with_the_lease_and_forgets_its_state_on_standby(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def run(self: DecisionEngine, results: Any, catalogue: Any) -> Decisions:
        self.state.decisions = Decisions(generated_at=time.time(), duration_seconds=0.0)
        return self.state.decisions

    monkeypatch.setattr(DecisionEngine, "run", run)
    cfg = replace(Config(), shard=Shard(1, 2))
    engine = SimpleNamespace(cfg=cfg, catalogue=None)
    routes: dict[str, Any] = {}
    collectors: list[Any] = []
    hook = attach(cfg, None, engine, routes, collectors, lambda handler: handler)  # type: ignore[arg-type]
    assert hook is not None
    health = routes["/api/v1/decisions/health"]
    no_results: Any = None  # the patched run ignores the analysis results

    def active() -> float:
        return next(
            f.samples[0].value for f in collectors[0].collect() if f.name == "novacron_decisions_active"
        )

    hook(no_results)  # peer 0 alive: stand by
    assert active() == 0 and health(Request.from_values()).status_code == 503
    assert b"standby" in health(Request.from_values()).get_data()
    engine.cfg = replace(cfg, shard=Shard(1, 2, adopted=frozenset({0})))  # peer 0 dead: share 0 adopted
    hook(no_results)
    assert active() == 1 and health(Request.from_values()).status_code == 200
    engine.cfg = cfg  # peer 0 back
    hook(no_results)
    assert active() == 0 and health(Request.from_values()).status_code == 503


def test_standing_by_restarts_windows_and_cooldowns() -> None:
    dec = DecisionEngine(DecisionSettings(), Config(), None)  # type: ignore[arg-type]
    dec.triggers.tracks["web"] = _Track(last_signal=1.0, direction="out")
    dec.stand_by()
    assert dec.triggers.tracks == {} and dec.state.decisions is None and dec.state.role == "standby"


def _metrics(url: str) -> dict[str, float]:
    """Unlabelled decision gauges of one replica (empty when it does not answer)."""
    try:
        text = requests.get(f"{url}/metrics", timeout=5).text
    except requests.RequestException:
        return {}
    return {
        s.name: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name.startswith("novacron_decisions_") and not s.labels
    }


def _deciding(url: str) -> bool:
    m = _metrics(url)
    return (
        m.get("novacron_decisions_active") == 1 and "novacron_decisions_last_success_timestamp_seconds" in m
    )


def _standing_by(url: str) -> bool:
    """No decision series, and the API says why (not merely "no cycle yet")."""
    m = _metrics(url)
    if m.get("novacron_decisions_active") != 0 or "novacron_decisions_last_success_timestamp_seconds" in m:
        return False
    status, body = _api_status(url)
    return status == 503 and "standby" in body["error"]


def _sidecar(tmp: Path, prom_url: str, index: int, port: int) -> ManagedProcess:
    return ManagedProcess(
        f"analytics-{index}",
        [
            console_script("novacron-analytics"),
            "serve",
            f"--config.file={tmp / 'analytics.yml'}",
            f"--prometheus.url={prom_url}",
            f"--shard={index}/2",
            f"--interval={INTERVAL:.0f}s",
            f"--shard.lease-ttl={TTL:.0f}s",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp / f"analytics-{index}-{port}.log",
        ready_url=f"http://127.0.0.1:{port}/metrics",
        url=f"http://127.0.0.1:{port}",
    )


def _api_status(url: str, path: str = "health") -> tuple[int, Any]:
    r = requests.get(
        f"{url}/api/v1/decisions/{path}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    return r.status_code, r.json()


def _owned(url: str) -> set[str]:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return {
        s.labels["shard_index"]
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "novacron_analytics_shard_owned"
    }


def _group_members(url: str, after: float) -> int:
    """VMs in the decider's scaling groups at a cycle after `after`: every share's, not only its own."""
    status, body = _api_status(url, "scaling")
    if status != 200 or body["generated_at"] <= after:
        return -1
    return sum(g["current_vms"] for g in body["groups"])


def test_killing_replica_zero_moves_the_decisions_to_replica_one(tmp_path: Path) -> None:
    uri = test_driver_fleet(tmp_path, VMS, seed=5)
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "analytics.yml").write_text(
        yaml.safe_dump({"api": {"token_file": str(tmp_path / "token")}, "analysis": {"lookback": "1h"}})
    )
    ports = [free_port(), free_port()]
    exporter, prom = fleet_prometheus(tmp_path, uri, VMS, ports)
    procs: list[Any] = [exporter, prom]
    try:
        sidecars = [_sidecar(tmp_path, prom.url, i, ports[i]) for i in range(2)]
        procs += sidecars
        start_all(sidecars)
        urls = [s.url for s in sidecars]

        # Both alive: replica 0 decides, replica 1 stands by (no decision series, API 503 naming why). At a
        # joint start replica 1 may decide for a cycle until replica 0's first heartbeat is scraped.
        assert wait_until(lambda: _deciding(urls[0]) and _standing_by(urls[1]), timeout=60, interval=0.3), [
            _metrics(u) for u in urls
        ]
        assert _api_status(urls[0])[0] == 200
        # Once each replica analyses only its own share, the decider's groups still hold every VM.
        assert wait_until(lambda: _owned(urls[0]) == {"0"} and _owned(urls[1]) == {"1"}, 60, 0.3)
        settled = time.time()
        # One wait for the whole answer (a cycle after `settled` holding every VM), not a wait for any
        # cycle followed by a separate read.
        members = [-1]

        def every_vm() -> bool:
            members[0] = _group_members(urls[0], settled)
            return members[0] == VMS

        assert wait_until(every_vm, timeout=30, interval=0.3), members[0]

        sidecars[0].stop()
        stopped = time.monotonic()
        assert wait_until(lambda: _deciding(urls[1]), timeout=TTL + 60, interval=0.2), _metrics(urls[1])
        took = time.monotonic() - stopped
        # Replica 0's last heartbeat is at most a scrape old: the TTL, then one cycle of replica 1 (and the
        # scrape that makes the heartbeat visible) on a noisy shared machine.
        assert took <= TTL + 4 * INTERVAL + 3, took
        assert _api_status(urls[1])[0] == 200

        # Replica 0 comes back: it decides again and replica 1 steps down (one decider per live set).
        back = _sidecar(tmp_path, prom.url, 0, ports[0]).start()
        procs.append(back)
        assert wait_until(lambda: _deciding(urls[0]) and _standing_by(urls[1]), timeout=60, interval=0.3), [
            _metrics(u) for u in urls
        ]
    finally:
        stop_all(procs)
