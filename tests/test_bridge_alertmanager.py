"""Bridge against real Alertmanagers: gossip pair, truncatedAlerts reconcile, ack silences, maintenance."""

from __future__ import annotations

import time

import pytest
import requests

from alert_bridge.testing import WEBHOOK_TOKEN, base_config, inprocess_bridge, wait
from stack.processes import free_port

pytestmark = pytest.mark.slow


def am_config(bridge_port: int, token_file, max_alerts: int = 0) -> dict:
    return {
        "route": {
            "receiver": "bridge",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "bridge",
                "webhook_configs": [
                    {
                        "url": f"http://127.0.0.1:{bridge_port}/webhook/alertmanager",
                        "send_resolved": True,
                        "max_alerts": max_alerts,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials_file": str(token_file)}
                        },
                    }
                ],
            }
        ],
    }


def post_alerts(am_url: str, alerts: list[dict]) -> None:
    resp = requests.post(f"{am_url}/api/v2/alerts", json=alerts, timeout=10)
    resp.raise_for_status()


def am_alert(name: str, ends: str | None = None, **labels: str) -> dict:
    body = {"labels": {"alertname": name, **labels}, "annotations": {"summary": name}}
    if ends:
        body["endsAt"] = ends
    return body


def _token_file(tmp_path):
    path = tmp_path / "webhook.token"
    path.write_text(WEBHOOK_TOKEN)
    return path


def test_gossip_pair_gives_one_episode_and_one_notification_each(tmp_path, alertmanager_factory, smtp_server):
    port = free_port()
    cfg = am_config(port, _token_file(tmp_path))
    am1 = alertmanager_factory(cfg, cluster=True)
    am2 = alertmanager_factory(cfg, peers=[am1.cluster_address])
    channels = {
        "email": {"smtp": {"host": smtp_server.host, "port": smtp_server.port}, "from": "b@x", "to": ["o@x"]}
    }
    with inprocess_bridge(base_config(channels=channels), f"sqlite:///{tmp_path / 'b.db'}", port=port) as b:
        alerts = [am_alert("NodeDown", host=f"kvm-{i}", severity="critical") for i in range(4)]
        # Prometheus sends every alert to every Alertmanager of the cluster.
        post_alerts(am1.url, alerts)
        post_alerts(am2.url, alerts)
        wait(lambda: len(b.admin.alerts()) == 4, timeout=30)
        wait(lambda: len(smtp_server.messages) >= 4, timeout=30)
        # Re-send (as Prometheus does every evaluation) and let both peers flush again.
        post_alerts(am2.url, alerts)
        post_alerts(am1.url, alerts)
        time.sleep(2.5)
        stored = b.admin.alerts()
        assert len(stored) == 4 and {a["state"] for a in stored} == {"firing"}
        keys = [m["X-NovaCron-Key"] for m in smtp_server.messages]
        assert len(keys) == 4 and len(set(keys)) == 4

        ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
        resolved = [am_alert("NodeDown", ends=ended, host=f"kvm-{i}", severity="critical") for i in range(4)]
        post_alerts(am1.url, resolved)
        post_alerts(am2.url, resolved)
        wait(lambda: len(b.admin.alerts(state="resolved")) == 4, timeout=30)
        wait(lambda: len(smtp_server.messages) >= 8, timeout=30)
        time.sleep(2.0)
        keys = [m["X-NovaCron-Key"] for m in smtp_server.messages]
        assert len(keys) == 8 and len(set(keys)) == 8
        assert len(b.admin.alerts()) == 4


def test_truncated_payload_triggers_reconcile(tmp_path, alertmanager_factory):
    port = free_port()
    am = alertmanager_factory(am_config(port, _token_file(tmp_path), max_alerts=2))
    config = base_config(alertmanager={"urls": [am.url]})
    with inprocess_bridge(config, f"sqlite:///{tmp_path / 'b.db'}", port=port) as b:
        post_alerts(am.url, [am_alert("Many", host=f"h{i}") for i in range(7)])
        # The webhook carries 2 alerts and truncatedAlerts=5; the reconcile fetches the rest.
        stored = wait(lambda: (lambda a: a if len(a) == 7 else None)(b.admin.alerts()), timeout=30)
        fingerprints = {a["fingerprint"] for a in stored}
        assert fingerprints == {a["fingerprint"] for a in am.alerts()}
        assert any(h["actor"] == "reconcile" for h in b.admin.get("/api/v1/audit").json())


def test_ack_silence_and_maintenance(tmp_path, alertmanager_factory):
    port = free_port()
    am = alertmanager_factory(am_config(port, _token_file(tmp_path)))
    config = base_config(alertmanager={"urls": [am.url], "reconcile_interval_seconds": 1})
    with inprocess_bridge(config, f"sqlite:///{tmp_path / 'b.db'}", port=port) as b:
        post_alerts(am.url, [am_alert("CpuHigh", host="kvm-1")])
        [a] = wait(lambda: b.admin.alerts(), timeout=30)
        acked = b.admin.post(
            f"/api/v1/alerts/{a['id']}/ack", {"reason": "known", "silenceMinutes": 30}
        ).json()
        silence_id = b.admin.get(f"/api/v1/alerts/{a['id']}").json()["silenceId"]
        assert acked["state"] == "acknowledged" and silence_id
        silence = requests.get(f"{am.url}/api/v2/silence/{silence_id}", timeout=5).json()
        assert silence["status"]["state"] == "active" and silence["createdBy"] == "admin"
        assert b.admin.post(f"/api/v1/alerts/{a['id']}/resolve", {"reason": "fixed"}).status_code == 200
        # Resolving expires the silence the acknowledgement created.
        wait(
            lambda: requests.get(f"{am.url}/api/v2/silence/{silence_id}", timeout=5).json()["status"]["state"]
            == "expired"
        )

        ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        resp = b.admin.post(
            "/api/v1/maintenance", {"matchers": {"host": "kvm-3"}, "endsAt": ends, "comment": "kernel update"}
        )
        assert resp.status_code == 201, resp.text
        assert len(b.admin.get("/api/v1/maintenance").json()) == 1
        bad = b.admin.post("/api/v1/maintenance", {"matchers": {}, "endsAt": ends, "comment": "x"})
        assert bad.status_code == 400
        post_alerts(am.url, [am_alert("DiskSlow", host="kvm-3")])
        # Silenced in Alertmanager: no webhook; the periodic reconcile records it as suppressed.
        wait(lambda: b.admin.alerts(state="suppressed"), timeout=30)
        silences = b.admin.get("/api/v1/silences").json()
        assert any(s["comment"] == "kernel update" for s in silences)
        actions = {h["action"] for h in b.admin.get("/api/v1/audit").json()}
        assert {"silence:created", "maintenance:created"} <= actions


def test_two_replicas_on_postgresql_share_episodes_and_outbox(postgres, httpserver):
    from concurrent.futures import ThreadPoolExecutor

    from alert_bridge.testing import Receiver, alert, payload, pg_database

    hook = Receiver()
    httpserver.expect_request("/hook", method="POST").respond_with_handler(hook)
    url = pg_database(postgres.url)
    config = base_config(channels={"hook": {"type": "webhook", "url": httpserver.url_for("/hook")}})
    with inprocess_bridge(config, url) as one, inprocess_bridge(config, url) as two:
        bodies = [payload([alert(f"Replica{i}", host=f"h{i}")], group_key=f"g{i}") for i in range(20)]
        # Both Alertmanager peers deliver every group to a different replica, at the same moment.
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(
                    lambda p: p[0].hook.post("/webhook/alertmanager", p[1]).status_code,
                    [(r, b) for b in bodies for r in (one, two)],
                )
            )
        assert set(codes) == {200}
        wait(lambda: len(hook.requests) >= 20, timeout=30)
        time.sleep(1.0)
        assert len(one.admin.alerts()) == 20 and len(two.admin.alerts()) == 20
        keys = [h["Webhook-Id"] for h, _ in hook.requests]
        assert len(keys) == 20 and len(set(keys)) == 20
