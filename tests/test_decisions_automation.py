"""Automation hooks of the alert bridge: one signed, outbox-retried call per decision; none in dry run;
disruptive actions wait for an operator's approval; every step in the audit trail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import pytest

from alert_bridge.automation import parse_automation
from alert_bridge.config import parse_config
from alert_bridge.testing import Client, Receiver, alert, base_config, inprocess_bridge, payload, wait
from exporters.common.config import ConfigError

SECRET = "whsec_" + base64.b64encode(b"automation-secret-0123456789abcd").decode()


def signed(headers: dict[str, str], body: bytes) -> bool:
    """Independent Standard Webhooks check (not the bridge's own code)."""
    key = base64.b64decode(SECRET.split("_", 1)[1])
    msg = f"{headers['Webhook-Id']}.{headers['Webhook-Timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()
    return f"v1,{expected}" in headers["Webhook-Signature"].split()


def _config(url: str, dry_run: bool = False, **extra: Any) -> dict[str, Any]:
    return base_config(
        channels={"novacron": {"type": "webhook", "url": url, "secret_env": "AUTOMATION_SECRET"}},
        routing={"default_channels": []},  # people get nothing here: only the automation is called
        automation={
            "dry_run": dry_run,
            "hooks": [
                {
                    "name": "scale",
                    "channel": "novacron",
                    "action": "scale_group",
                    "match": {"alertname": "NovaCronGroupScaleOutRecommended"},
                },
                {
                    "name": "migrate",
                    "channel": "novacron",
                    "action": "migrate_vm",
                    "match_re": {"alertname": "NovaCron(Migration|Failover)Recommended"},
                    "disruptive": True,
                },
            ],
        },
        **extra,
    )


def _scale_alert(starts: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return alert(
        "NovaCronGroupScaleOutRecommended",
        starts=starts,
        group="web",
        direction="out",
        severity="info",
        type="decision",
    )


def _migration_alert() -> dict[str, Any]:
    return alert(
        "NovaCronMigrationRecommended",
        vm_id="vm-7",
        source_host="kvm-a",
        target_host="kvm-c",
        reason="hot",
        severity="info",
        type="decision",
    )


@pytest.fixture
def receiver(httpserver: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Receiver, str]:
    monkeypatch.setenv("AUTOMATION_SECRET", SECRET)
    rec = Receiver()
    httpserver.expect_request("/automation", method="POST").respond_with_handler(rec)
    return rec, httpserver.url_for("/automation")


def _audit(b: Any, prefix: str = "automation:") -> list[dict[str, Any]]:
    return [a for a in b.admin.get("/api/v1/audit").json() if a["action"].startswith(prefix)]


def test_one_signed_call_per_decision(receiver: tuple[Receiver, str], tmp_path: Any) -> None:
    rec, url = receiver
    with inprocess_bridge(_config(url), f"sqlite:///{tmp_path / 'b.db'}") as b:
        # Alertmanager repeats, and its HA peer sends the same notification: still one call.
        for _ in range(3):
            assert b.hook.post("/webhook/alertmanager", payload([_scale_alert()])).status_code == 200
        wait(lambda: rec.requests)
        b.worker.run_once()
        assert len(rec.requests) == 1
        headers, body = rec.requests[0]
        assert signed(headers, body)
        sent = rec.bodies()[0]
        assert sent["type"] == "automation" and sent["action"] == "scale_group" and sent["hook"] == "scale"
        assert sent["decision"] == {"group": "web", "direction": "out"} and sent["dry_run"] is False
        assert sent["alert"]["alertname"] == "NovaCronGroupScaleOutRecommended"
        assert [a["action"] for a in _audit(b)] == ["automation:requested"]
        # A new decision (a new firing period after resolution) is a new call.
        resolved = {**_scale_alert(), "status": "resolved", "endsAt": "2026-01-01T00:10:00Z"}
        b.hook.post("/webhook/alertmanager", payload([resolved]))
        b.hook.post("/webhook/alertmanager", payload([_scale_alert("2026-01-01T01:00:00Z")]))
        wait(lambda: len(rec.requests) == 2)
        # An alert no hook matches calls nothing.
        b.hook.post("/webhook/alertmanager", payload([alert("NovaCronHostHighCPU", host="kvm-a")]))
        b.worker.run_once()
        assert len(rec.requests) == 2


def test_failed_calls_are_retried_through_the_outbox(
    httpserver: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("AUTOMATION_SECRET", SECRET)
    rec = Receiver(statuses=[503, 503])
    httpserver.expect_request("/automation", method="POST").respond_with_handler(rec)
    with inprocess_bridge(_config(httpserver.url_for("/automation")), f"sqlite:///{tmp_path / 'b.db'}") as b:
        b.hook.post("/webhook/alertmanager", payload([_scale_alert()]))
        wait(lambda: len(rec.requests) == 3)
        ids = {h["Webhook-Id"] for h, _ in rec.requests}
        assert len(ids) == 1  # the same message (idempotency key) each attempt, so the receiver can dedup
        wait(lambda: any(d["status"] == "delivered" for d in b.admin.get("/api/v1/deliveries").json()))


def test_dry_run_calls_nothing_and_records_what_it_would(
    receiver: tuple[Receiver, str], tmp_path: Any
) -> None:
    rec, url = receiver
    with inprocess_bridge(_config(url, dry_run=True), f"sqlite:///{tmp_path / 'b.db'}") as b:
        b.hook.post("/webhook/alertmanager", payload([_scale_alert(), _migration_alert()]))
        entries = wait(lambda: len(_audit(b)) == 2 and _audit(b))
        assert {e["action"] for e in entries} == {"automation:dry_run"}
        b.worker.run_once()
        assert rec.requests == []
        assert b.admin.get("/api/v1/automation/actions").json() == []  # nothing waits for approval either


def test_disruptive_action_waits_for_approval(receiver: tuple[Receiver, str], tmp_path: Any) -> None:
    rec, url = receiver
    with inprocess_bridge(_config(url), f"sqlite:///{tmp_path / 'b.db'}") as b:
        b.hook.post("/webhook/alertmanager", payload([_migration_alert()]))
        b.hook.post("/webhook/alertmanager", payload([_migration_alert()]))
        [action] = wait(lambda: b.admin.get("/api/v1/automation/actions").json())
        assert action["state"] == "awaiting_approval" and action["action"] == "migrate_vm"
        assert action["decision"] == {
            "vm_id": "vm-7",
            "source_host": "kvm-a",
            "target_host": "kvm-c",
            "reason": "hot",
        }
        b.worker.run_once()
        assert rec.requests == []  # nothing moves before someone approves
        made = b.admin.post("/api/v1/tokens", json={"name": "viewer", "role": "viewer"}).json()
        viewer = Client(b.url, made["token"])
        path = f"/api/v1/automation/actions/{action['id']}"
        assert viewer.post(f"{path}/approve").status_code == 403
        assert Client(b.url, "wrong").post(f"{path}/approve").status_code == 401
        assert b.admin.post(f"{path}/approve", json={"reason": 12}).status_code == 400
        assert b.admin.post("/api/v1/automation/actions/999999/approve").status_code == 404
        ok = b.admin.post(f"{path}/approve", json={"reason": "maintenance window"})
        assert ok.status_code == 200 and ok.json()["state"] == "approved"
        assert b.admin.post(f"{path}/approve").status_code == 409
        assert b.admin.post(f"{path}/reject").status_code == 409
        wait(lambda: rec.requests)
        b.worker.run_once()
        assert len(rec.requests) == 1 and signed(*rec.requests[0])
        assert rec.bodies()[0]["decision"]["target_host"] == "kvm-c"
        assert b.admin.get("/api/v1/automation/actions").json()[0]["state"] == "approved"
        trail = [(a["action"], a["actor"]) for a in _audit(b)]
        assert ("automation:awaiting_approval", "automation") in trail and (
            "automation:approved",
            "admin",
        ) in trail


def test_rejected_action_is_never_called(receiver: tuple[Receiver, str], tmp_path: Any) -> None:
    rec, url = receiver
    with inprocess_bridge(_config(url), f"sqlite:///{tmp_path / 'b.db'}") as b:
        b.hook.post("/webhook/alertmanager", payload([_migration_alert()]))
        [action] = wait(lambda: b.admin.get("/api/v1/automation/actions").json())
        assert b.admin.post(f"/api/v1/automation/actions/{action['id']}/reject").json()["state"] == "rejected"
        assert b.admin.post(f"/api/v1/automation/actions/{action['id']}/approve").status_code == 409
        b.worker.run_once()
        assert rec.requests == []


@pytest.mark.parametrize(
    ("section", "key"),
    [
        (
            {"hooks": [{"name": "x", "channel": "nope", "action": "a", "match": {"alertname": "A"}}]},
            "automation.hooks[0].channel",
        ),
        (
            {"hooks": [{"name": "x", "channel": "mail", "action": "a", "match": {"alertname": "A"}}]},
            "automation.hooks[0].channel",
        ),
        ({"hooks": [{"name": "x", "channel": "hook", "action": "a"}]}, "automation.hooks[0].match"),
        (
            {"hooks": [{"name": "x", "channel": "hook", "action": "a", "match_re": {"a": "("}}]},
            "automation.hooks[0].match_re.a",
        ),
        (
            {"hooks": [{"name": "x", "channel": "hook", "action": "", "match": {"a": "b"}}]},
            "automation.hooks[0].action",
        ),
        ({"dry_run": "yes"}, "automation.dry_run"),
        (
            {
                "hooks": [
                    {"name": "x", "channel": "hook", "action": "a", "match": {"a": "b"}, "disruptive": 1}
                ]
            },
            "automation.hooks[0].disruptive",
        ),
        ({"typo": 1}, "automation.typo"),
    ],
)
def test_config_errors_name_the_key(section: dict[str, Any], key: str) -> None:
    channels = parse_config(
        {
            "channels": {
                "hook": {"type": "webhook", "url": "http://127.0.0.1:1/x"},
                "mail": {
                    "type": "email",
                    "smtp": {"host": "127.0.0.1", "port": 25},
                    "from": "a@b",
                    "to": ["c@d"],
                },
            }
        }
    ).channels
    with pytest.raises(ConfigError) as err:
        parse_automation(section, channels)
    assert err.value.key == key


def test_through_an_alertmanager_pair_still_one_call_per_decision(
    receiver: tuple[Receiver, str], tmp_path: Any, alertmanager_factory: Any
) -> None:
    """Decision alerts sent to both Alertmanagers of a gossip pair, again and again, as Prometheus does."""
    from stack.processes import free_port
    from tests.test_bridge_alertmanager import am_alert, am_config, post_alerts

    rec, url = receiver
    port = free_port()
    token_file = tmp_path / "webhook.token"
    from alert_bridge.testing import WEBHOOK_TOKEN

    token_file.write_text(WEBHOOK_TOKEN)
    cfg = am_config(port, token_file)
    am1 = alertmanager_factory(cfg, cluster=True)
    am2 = alertmanager_factory(cfg, peers=[am1.cluster_address])
    alerts = [
        am_alert(
            "NovaCronGroupScaleOutRecommended", group="web", direction="out", severity="info", type="decision"
        ),
        am_alert(
            "NovaCronMigrationRecommended",
            vm_id="vm-7",
            source_host="kvm-a",
            target_host="kvm-c",
            reason="hot",
            severity="info",
            type="decision",
        ),
    ]
    with inprocess_bridge(_config(url), f"sqlite:///{tmp_path / 'b.db'}", port=port) as b:
        for _ in range(3):
            post_alerts(am1.url, alerts)
            post_alerts(am2.url, alerts)
        [action] = wait(lambda: b.admin.get("/api/v1/automation/actions").json(), timeout=30)
        wait(lambda: rec.requests, timeout=30)
        for _ in range(3):  # more evaluations, more flushes of both peers
            post_alerts(am2.url, alerts)
            post_alerts(am1.url, alerts)
        time.sleep(
            2.5
        )  # absence of a duplicate cannot be waited for: let both peers flush (group_interval 1s)
        assert len(b.admin.alerts()) == 2
        b.worker.run_once()
        assert [x["action"] for x in rec.bodies()] == ["scale_group"]
        assert len(b.admin.get("/api/v1/automation/actions").json()) == 1
        assert b.admin.post(f"/api/v1/automation/actions/{action['id']}/approve").status_code == 200
        wait(lambda: len(rec.requests) == 2, timeout=30)
        b.worker.run_once()
        assert sorted(x["action"] for x in rec.bodies()) == ["migrate_vm", "scale_group"]
        assert all(signed(h, body) for h, body in rec.requests)
