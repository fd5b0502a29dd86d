"""Alert bridge end to end on SQLite and real PostgreSQL: intake, idempotency, lifecycle API, email, audit."""

from __future__ import annotations

import time

import pytest

from alert_bridge.payload import parse_time
from alert_bridge.testing import alert, base_config, inprocess_bridge, payload, pg_database, wait

pytestmark = pytest.mark.slow


def _email_channel(smtp) -> dict:
    return {
        "email": {
            "smtp": {"host": smtp.host, "port": smtp.port},
            "from": "bridge@example.org",
            "to": ["ops@example.org"],
        }
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bridge.db'}"
    return pg_database(request.getfixturevalue("postgres").url)


def test_lifecycle_on_both_stores(storage_url, smtp_server):
    with inprocess_bridge(base_config(channels=_email_channel(smtp_server)), storage_url) as b:
        body = payload(
            [alert("HostDown", host="kvm-01", severity="critical", fingerprint="aa01")],
            group_key='{}:{alertname="HostDown"}',
        )
        # Alertmanager retries and peers: three copies, one episode, one email.
        for _ in range(3):
            resp = b.hook.post("/webhook/alertmanager", body)
            assert resp.status_code == 200, resp.text
        [stored] = b.admin.alerts()
        assert stored["state"] == "firing" and stored["status"] == "firing"
        assert stored["labels"] == {"alertname": "HostDown", "host": "kvm-01", "severity": "critical"}
        assert stored["receipts"] == 3 and stored["startsAt"].startswith("2026-01-01T00:00:00")
        mail = smtp_server.wait_for(lambda m: "FIRING" in m["Subject"])
        assert "host=kvm-01" in mail.get_body(("plain",)).get_content()
        alert_id = stored["id"]

        resp = b.admin.post(f"/api/v1/alerts/{alert_id}/ack", {"reason": "looking"})
        assert resp.status_code == 200 and resp.json()["acknowledgedBy"] == "admin"
        assert b.admin.post(f"/api/v1/alerts/{alert_id}/ack", {}).status_code == 409
        assert b.admin.post(f"/api/v1/alerts/{alert_id}/notes", {"text": "disk full"}).status_code == 201

        # A repeat while acknowledged keeps the acknowledgement; a severity rise re-arms it.
        b.hook.post("/webhook/alertmanager", body)
        assert b.admin.get(f"/api/v1/alerts/{alert_id}").json()["state"] == "acknowledged"
        # (A sender that keeps the identity when severity changes; with Alertmanager's label fingerprints a
        # higher-severity alert is a new episode of its own and pages on its own.)
        page = payload([alert("HostDown", host="kvm-01", severity="page", fingerprint="aa01")])
        assert b.hook.post("/webhook/alertmanager", page).status_code == 200
        rearmed = b.admin.get(f"/api/v1/alerts/{alert_id}").json()
        assert rearmed["state"] == "firing" and rearmed["acknowledgedBy"] is None

        resolved = payload(
            [alert("HostDown", "resolved", ends="2026-01-01T01:00:00Z", fingerprint="aa01", host="kvm-01")]
        )
        for _ in range(2):
            assert b.hook.post("/webhook/alertmanager", resolved).status_code == 200
        detail = b.admin.get(f"/api/v1/alerts/{alert_id}").json()
        assert detail["state"] == "resolved" and detail["endsAt"].startswith("2026-01-01T01:00:00")
        assert [n["text"] for n in detail["notes"]] == ["disk full"]
        actions = [h["action"] for h in detail["history"]]
        assert actions[0] == "created" and "transition:firing->acknowledged" in actions
        assert actions[-1] == "transition:firing->resolved"
        assert any(
            h["actor"] == "admin" and h["detail"].get("reason") == "looking" for h in detail["history"]
        )
        smtp_server.wait_for(lambda m: "RESOLVED" in m["Subject"])

        # A late copy of the old firing period does not reopen it; a new period is a new episode.
        assert b.hook.post("/webhook/alertmanager", body).json()["duplicates"] == 1
        later = payload([alert("HostDown", starts="2026-01-02T00:00:00Z", fingerprint="aa01", host="kvm-01")])
        assert b.hook.post("/webhook/alertmanager", later).json()["created"] == 1
        assert len(b.admin.alerts()) == 2 and len(b.admin.alerts(state="firing")) == 1
        assert len(b.admin.alerts(alertname="HostDown", status="resolved")) == 1
        assert b.admin.alerts(alertname="Other") == []

        # Audit is queryable by label and time, and names the actor.
        trail = b.admin.get("/api/v1/audit", params={"label": "host=kvm-01", "action": "transition"}).json()
        assert {"admin", "alertmanager:alertmanager"} <= {t["actor"] for t in trail}
        deliveries = wait(
            lambda: [d for d in b.admin.get("/api/v1/deliveries").json() if d["status"] == "delivered"]
        )
        assert all(d["log"][0]["result"] == "delivered" for d in deliveries)
        # One firing and one rise and one resolved email for the first episode, one firing for the second.
        wait(lambda: len(smtp_server.messages) >= 4)
        keys = [m["X-NovaCron-Key"] for m in smtp_server.messages]
        assert len(keys) == len(set(keys)) == 4


def test_webhook_rejects_without_changing_state(tmp_path):
    with inprocess_bridge(base_config(), f"sqlite:///{tmp_path / 'b.db'}") as b:
        good = payload([alert("A", host="h")])
        assert b.hook.post("/webhook/alertmanager", good).status_code == 200
        before = b.admin.alerts()
        import requests

        assert requests.post(b.url + "/webhook/alertmanager", json=good, timeout=5).status_code == 401
        viewer = b.admin.post("/api/v1/tokens", {"name": "v", "role": "viewer"}).json()["token"]
        from alert_bridge.testing import Client

        assert Client(b.url, viewer).post("/webhook/alertmanager", good).status_code == 403
        for bad in ({"version": "4", "alerts": [{"status": "firing"}]}, {"version": "5"}, [1, 2]):
            resp = b.hook.post("/webhook/alertmanager", bad)
            assert resp.status_code == 400 and resp.json()["error"]
        resp = b.hook.post(
            "/webhook/alertmanager", data=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 400
        assert b.admin.alerts() == before
        assert b.hook.get("/api/v1/alerts").status_code == 403  # the webhook role cannot read
        assert Client(b.url, viewer).post(f"/api/v1/alerts/{before[0]['id']}/ack", {}).status_code == 403
        assert b.admin.get("/healthz").json() == {"status": "ok"}
        # Revocation takes effect at once on this replica.
        token_id = next(t["id"] for t in b.admin.get("/api/v1/tokens").json() if t["name"] == "v")
        assert b.admin.delete(f"/api/v1/tokens/{token_id}").status_code == 200
        assert Client(b.url, viewer).get("/api/v1/alerts").status_code == 401
        assert any(a["action"] == "token:revoked" for a in b.admin.get("/api/v1/audit").json())


def test_openapi_describes_every_api_route(tmp_path):
    with inprocess_bridge(base_config(), f"sqlite:///{tmp_path / 'b.db'}", worker=False) as b:
        spec = b.admin.get("/openapi.json").json()
        for rule in b.app.url_map.iter_rules():
            path = rule.rule.replace("<int:", "<").replace("<", "{").replace(">", "}")
            path = (
                path.replace("{alert_id}", "{id}")
                .replace("{incident_id}", "{id}")
                .replace("{outbox_id}", "{id}")
            )
            path = path.replace("{token_id}", "{id}").replace("{silence_id}", "{id}")
            if path.startswith("/api/") or path in ("/webhook/alertmanager", "/healthz"):
                assert path in spec["paths"], path
                for method in rule.methods - {"HEAD", "OPTIONS"}:
                    assert method.lower() in spec["paths"][path], (method, path)


def test_lease_expiry_and_metrics(tmp_path):
    config = base_config(intake={"lease_seconds": 1})
    with inprocess_bridge(config, f"sqlite:///{tmp_path / 'b.db'}") as b:
        b.hook.post("/webhook/alertmanager", payload([alert("Lease", host="h")]))
        # Absence is not resolution: the alert expires only when its lease has run out.
        wait(lambda: b.admin.alerts(state="expired"), timeout=30)
        [expired] = b.admin.alerts()
        assert expired["status"] == "resolved" and expired["endsAt"] is None
        # The same firing period arriving again revives it, as the same episode. Read from its history, not
        # its state: the new 1 s lease can run out again before a read on a loaded machine.
        again = b.hook.post("/webhook/alertmanager", payload([alert("Lease", host="h")]))
        assert again.json()["created"] == 0
        [revived] = b.admin.alerts()
        history = b.admin.get(f"/api/v1/alerts/{expired['id']}").json()["history"]
        assert revived["id"] == expired["id"]
        assert "transition:expired->firing" in [h["action"] for h in history]
        text = b.admin.get("/metrics").text
        for name in (
            "novacron_bridge_alerts{state=",
            "novacron_bridge_outbox_depth",
            "novacron_bridge_dead_letters",
            "novacron_bridge_webhook_alerts_total",
        ):
            assert name in text
        spec = b.admin.get("/openapi.json").json()
        assert spec["openapi"].startswith("3.") and "/webhook/alertmanager" in spec["paths"]


def test_users_set_their_own_thresholds(tmp_path, smtp_server):
    channels = _email_channel(smtp_server)
    config = base_config(
        channels=channels,
        users={"alice": {"email": "alice@example.org", "channels": ["email"], "min_severity": "critical"}},
        routing={
            "default_channels": [],
            "policies": [{"name": "team", "match": {"team": "db"}, "users": ["alice"]}],
        },
    )
    with inprocess_bridge(config, f"sqlite:///{tmp_path / 'b.db'}") as b:
        from alert_bridge.testing import Client

        alice = Client(
            b.url, b.admin.post("/api/v1/tokens", {"name": "alice", "role": "viewer"}).json()["token"]
        )
        bob = Client(
            b.url, b.admin.post("/api/v1/tokens", {"name": "bob", "role": "operator"}).json()["token"]
        )
        b.hook.post(
            "/webhook/alertmanager", payload([alert("Slow", team="db", severity="warning")], group_key="a")
        )
        b.hook.post(
            "/webhook/alertmanager", payload([alert("Down", team="db", severity="critical")], group_key="b")
        )
        smtp_server.wait_for(lambda m: "Down" in m["Subject"])
        # The custom threshold: alice lowers hers to warning, herself; bob may not change hers.
        assert bob.session.put(f"{b.url}/api/v1/users/alice/preferences", json={}).status_code == 403
        bad = alice.session.put(f"{b.url}/api/v1/users/alice/preferences", json={"channels": ["pager"]})
        assert bad.status_code == 400 and "preferences.channels" in bad.json()["error"]
        resp = alice.session.put(f"{b.url}/api/v1/users/alice/preferences", json={"min_severity": "warning"})
        assert resp.status_code == 200 and resp.json()["min_severity"] == "warning"
        assert resp.json()["email"] == "alice@example.org"
        b.hook.post(
            "/webhook/alertmanager", payload([alert("Slower", team="db", severity="warning")], group_key="c")
        )
        smtp_server.wait_for(lambda m: "Slower" in m["Subject"])
        assert all(
            "Slow]" not in m["Subject"] and not m["Subject"].endswith("Slow on somewhere")
            for m in smtp_server.messages
        )
        assert [m["To"] for m in smtp_server.messages] == ["alice@example.org", "alice@example.org"]
        assert any(
            a["action"] == "user:preferences" and a["actor"] == "alice"
            for a in b.admin.get("/api/v1/audit").json()
        )
        assert b.admin.get("/api/v1/users").json()[0]["min_severity"] == "warning"


def test_audit_by_time_range_and_out_of_range_ids(tmp_path):
    with inprocess_bridge(base_config(), f"sqlite:///{tmp_path / 'b.db'}", worker=False) as b:
        assert b.hook.post("/webhook/alertmanager", payload([alert("A", host="h1")])).status_code == 200
        alert_id = b.admin.alerts()[0]["id"]
        trail = b.admin.get("/api/v1/audit").json()
        first = parse_time(trail[-1]["at"], "at")
        time.sleep(0.05)  # a strictly later audit time for the note below
        assert b.admin.post(f"/api/v1/alerts/{alert_id}/notes", {"text": "later"}).status_code == 201
        later = b.admin.get("/api/v1/audit", params={"since": first + 0.01}).json()
        assert later and all(parse_time(a["at"], "at") >= first + 0.01 for a in later)
        assert "note" in {a["action"] for a in later}
        assert len(later) < len(b.admin.get("/api/v1/audit").json())
        # The API shows milliseconds; the store keeps more, so the bound is one millisecond on.
        earlier = b.admin.get("/api/v1/audit", params={"until": first + 0.001}).json()
        assert earlier and all(parse_time(a["at"], "at") <= first for a in earlier)
        assert not any(a["action"].startswith("note") for a in earlier)
        # A time pasted as the API shows it covers its whole millisecond: the record shown at it is included.
        shown = b.admin.get("/api/v1/audit", params={"until": trail[-1]["at"]}).json()
        assert trail[-1]["id"] in {a["id"] for a in shown}
        resp = b.admin.get("/api/v1/audit", params={"since": "yesterday"})
        assert resp.status_code == 400 and "since" in resp.json()["error"]
        # An id beyond any 64-bit row id is simply not found (not a storage error, not a retry).
        huge = 2**64
        assert b.admin.post(f"/api/v1/alerts/{huge}/ack", {}).status_code == 404
        assert b.admin.get(f"/api/v1/incidents/{huge}").status_code == 404
        assert b.admin.post(f"/api/v1/dead-letters/{huge}/replay", {}).status_code == 404


def test_starts_at_moving_earlier_keeps_one_episode(tmp_path):
    # HA Alertmanager peers (or a restarted one) can report the same alert with an earlier startsAt.
    with inprocess_bridge(base_config(), f"sqlite:///{tmp_path / 'b.db'}", worker=False) as b:
        first = payload([alert("DiskSlow", starts="2026-01-01T00:10:00Z", fingerprint="bb01", host="kvm-2")])
        earlier = payload(
            [alert("DiskSlow", starts="2026-01-01T00:08:30Z", fingerprint="bb01", host="kvm-2")]
        )
        assert b.hook.post("/webhook/alertmanager", first).json()["created"] == 1
        resp = b.hook.post("/webhook/alertmanager", earlier).json()
        assert resp["created"] == 0
        [episode] = b.admin.alerts()
        assert episode["state"] == "firing" and episode["receipts"] == 2
        assert episode["startsAt"].startswith("2026-01-01T00:08:30")  # the earliest report wins
        assert b.hook.post("/webhook/alertmanager", first).json()["created"] == 0  # and it stays that way
        assert b.admin.alerts()[0]["startsAt"].startswith("2026-01-01T00:08:30")
