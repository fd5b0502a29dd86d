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

pytestmark = pytest.mark.slow

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
        # An alert no hook matches calls nothing.
        b.hook.post("/webhook/alertmanager", payload([alert("NovaCronHostHighCPU", host="kvm-a")]))
        b.worker.run_once()
        assert len(rec.requests) == 1


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
    from alert_bridge.testing import WEBHOOK_TOKEN
    from tests.test_bridge_alertmanager import am_alert, am_config, post_alerts

    rec, url = receiver
    token_file = tmp_path / "webhook.token"
    token_file.write_text(WEBHOOK_TOKEN)
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
    # The bridge listens first and the Alertmanagers are given its port: a port picked free and bound only
    # after two Alertmanagers (web and gossip ports of their own) have started could be taken meanwhile.
    with inprocess_bridge(_config(url), f"sqlite:///{tmp_path / 'b.db'}") as b:
        cfg = am_config(int(b.url.rsplit(":", 1)[1]), token_file)
        # The second peer sends only if, one peer timeout after the first, it has not seen the first's send in
        # the gossiped log (15 s by default): a short one brings its possible duplicate inside the wait below.
        quick = ["--cluster.peer-timeout=300ms"]
        am1 = alertmanager_factory(cfg, cluster=True, extra_args=quick)
        am2 = alertmanager_factory(cfg, peers=[am1.cluster_address], extra_args=quick)
        for _ in range(3):
            post_alerts(am1.url, alerts)
            post_alerts(am2.url, alerts)
        [action] = wait(lambda: b.admin.get("/api/v1/automation/actions").json(), timeout=60)
        wait(lambda: rec.requests, timeout=60)
        for _ in range(3):  # more evaluations, more flushes of both peers
            post_alerts(am2.url, alerts)
            post_alerts(am1.url, alerts)
        # Absence of a duplicate cannot be waited for: let both peers flush (group_interval 1s) and the second
        # one's peer timeout run out.
        time.sleep(2.5)
        assert len(b.admin.alerts()) == 2
        b.worker.run_once()
        assert [x["action"] for x in rec.bodies()] == ["scale_group"]
        assert len(b.admin.get("/api/v1/automation/actions").json()) == 1
        assert b.admin.post(f"/api/v1/automation/actions/{action['id']}/approve").status_code == 200
        wait(lambda: len(rec.requests) == 2, timeout=60)
        b.worker.run_once()
        assert sorted(x["action"] for x in rec.bodies()) == ["migrate_vm", "scale_group"]
        assert all(signed(h, body) for h, body in rec.requests)


# --- one call per decision across firing periods (a decider change) ---------------------------------------


def _scale(desired: str, starts: str, status: str = "firing", ends: str = "0001-01-01T00:00:00Z") -> dict:
    """The scale-out alert as the shipped rule renders it: desired_vms is an annotation, not a label."""
    a = alert("NovaCronGroupScaleOutRecommended", status, starts, ends, group="web", direction="out")
    a["annotations"]["desired_vms"] = desired
    return a


def _cycle(b: Any, desired: str, hour: int) -> None:
    """One firing period of the scale-out decision: fire at hour:00, resolve at hour:10 (a decider change)."""
    starts, ends = f"2026-01-01T{hour:02d}:00:00Z", f"2026-01-01T{hour:02d}:10:00Z"
    assert b.hook.post("/webhook/alertmanager", payload([_scale(desired, starts)])).status_code == 200
    resolved = _scale(desired, starts, "resolved", ends)
    assert b.hook.post("/webhook/alertmanager", payload([resolved])).status_code == 200


def _calls(b: Any, rec: Receiver) -> list[str | None]:
    """desired_vms of every call made, after the worker delivered everything due."""
    b.worker.run_once()
    return [x["decision"].get("desired_vms") for x in rec.bodies()]


def test_same_decision_after_a_decider_change_is_called_once(
    receiver: tuple[Receiver, str], tmp_path: Any
) -> None:
    """Resolve then re-fire the same decision -> one call; another desired_vms -> a new call; after the window
    (default 30 min since the decision last fired) -> a new call. The bridge's clock is moved, not slept."""
    rec, url = receiver
    with inprocess_bridge(_config(url), f"sqlite:///{tmp_path / 'b.db'}") as b:
        b.bridge.clock = lambda: time.time() - 7200  # two hours ago (the worker delivers on the real clock)
        _cycle(b, "5", 0)
        wait(lambda: rec.requests)
        _cycle(b, "5", 1)  # the next decider raises the same decision: no second call
        assert _calls(b, rec) == ["5"]
        first = b.admin.alerts(state="resolved")[-1]["id"]
        [dup] = _audit(b, "automation:duplicate")
        assert dup["detail"]["duplicate_of"] == first and dup["detail"]["hook"] == "scale"
        assert dup["detail"]["decision"] == {"group": "web", "direction": "out", "desired_vms": "5"}
        assert dup["detail"]["dedupe_seconds"] == 1800
        _cycle(b, "6", 2)  # a different desired size is a different decision
        wait(lambda: len(rec.requests) == 2)
        b.bridge.clock = time.time  # 2 h later: the window (1800 s after it last fired) has passed
        _cycle(b, "6", 3)
        wait(lambda: len(rec.requests) == 3)
        assert _calls(b, rec) == ["5", "6", "6"]
        trail = [a["action"] for a in _audit(b)]
        assert trail.count("automation:requested") == 3 and trail.count("automation:duplicate") == 1


def test_duplicates_of_held_and_reasoned_decisions(receiver: tuple[Receiver, str], tmp_path: Any) -> None:
    """A move proposed again for another reason is the same move; a held one does not wait twice; a decision
    still firing under one fingerprint while another fingerprint raises it is a duplicate too."""
    rec, url = receiver
    with inprocess_bridge(_config(url), f"sqlite:///{tmp_path / 'b.db'}") as b:
        b.hook.post("/webhook/alertmanager", payload([_migration_alert()]))
        steal = {**_migration_alert(), "labels": {**_migration_alert()["labels"], "reason": "steal"}}
        b.hook.post("/webhook/alertmanager", payload([steal]))  # while the "hot" one still fires
        wait(lambda: _audit(b, "automation:duplicate"))
        assert len(b.admin.get("/api/v1/automation/actions").json()) == 1
        assert len(b.admin.alerts()) == 2  # two episodes, one decision
        b.worker.run_once()
        assert rec.requests == []


def test_dedupe_window_zero_calls_every_episode(receiver: tuple[Receiver, str], tmp_path: Any) -> None:
    rec, url = receiver
    cfg = _config(url)
    cfg["automation"]["hooks"][0]["dedupe_seconds"] = 0
    with inprocess_bridge(cfg, f"sqlite:///{tmp_path / 'b.db'}") as b:
        _cycle(b, "5", 0)
        _cycle(b, "5", 1)
        wait(lambda: len(rec.requests) == 2)
        assert _calls(b, rec) == ["5", "5"]


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"dedupe_seconds": "30m"}, "automation.dedupe_seconds"),
        ({"dedupe_seconds": -1}, "automation.dedupe_seconds"),
        (
            {
                "hooks": [
                    {
                        "name": "x",
                        "channel": "hook",
                        "action": "a",
                        "match": {"a": "b"},
                        "dedupe_seconds": True,
                    }
                ]
            },
            "automation.hooks[0].dedupe_seconds",
        ),
    ],
)
def test_dedupe_config_errors_name_the_key(section: dict[str, Any], key: str) -> None:
    channels = parse_config(
        {"channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:1/x"}}}
    ).channels
    with pytest.raises(ConfigError) as err:
        parse_automation(section, channels)
    assert err.value.key == key


def test_dedupe_window_is_configurable_globally_and_per_hook() -> None:
    channels = parse_config(
        {"channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:1/x"}}}
    ).channels
    hooks = [
        {"name": "a", "channel": "hook", "action": "x", "match": {"n": "a"}},
        {"name": "b", "channel": "hook", "action": "x", "match": {"n": "b"}, "dedupe_seconds": 60},
    ]
    cfg = parse_automation({"dedupe_seconds": 600, "hooks": hooks}, channels)
    assert [h.dedupe_seconds for h in cfg.hooks] == [600.0, 60.0]
    assert parse_automation({"hooks": hooks[:1]}, channels).hooks[0].dedupe_seconds == 1800.0


def test_decision_key_ignores_reason_and_replica_labels() -> None:
    from alert_bridge.automation import Hook, decision_key, request_body

    hook = Hook("migrate", "hook", "migrate_vm")
    labels = {
        "alertname": "NovaCronMigrationRecommended",
        "vm_id": "v",
        "source_host": "a",
        "target_host": "b",
    }

    def key(**extra: str) -> str:
        a = {"labels": {**labels, **extra}, "annotations": {}}
        return decision_key(hook, a, request_body(hook, a)["decision"])[0]

    assert key(reason="hot") == key(reason="steal") == key(reason="hot", instance="sidecar-1:9180")
    assert key(target_host="c") != key()
    assert decision_key(Hook("other", "hook", "x"), {"labels": labels}, {"vm_id": "v"})[0] != key()
    # no decision context: the alert's labels identify it
    plain = {"labels": {"alertname": "X", "cluster": "eu"}}
    assert decision_key(hook, plain, {})[1] == {"alertname": "X", "cluster": "eu"}


def test_two_replicas_on_postgres_call_once(receiver: tuple[Receiver, str], postgres: Any) -> None:
    """Eight episodes of one decision (reason differs, so eight fingerprints) sent at once to two bridge
    replicas on one PostgreSQL database: one call (the check is in the outbox insert's transaction)."""
    from concurrent.futures import ThreadPoolExecutor

    from alert_bridge.testing import pg_database

    rec, url = receiver
    db = pg_database(postgres.url)
    with inprocess_bridge(_config(url), db) as b1, inprocess_bridge(_config(url), db) as b2:
        scale = [_scale("5", "2026-01-01T00:00:00Z") for _ in range(8)]
        for i, a in enumerate(scale):
            a["labels"]["reason"] = f"r{i}"

        def post(i: int) -> int:
            code: int = (b1, b2)[i % 2].hook.post("/webhook/alertmanager", payload([scale[i]])).status_code
            return code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(post, range(8))) == [200] * 8
        wait(lambda: rec.requests)
        b1.worker.run_once()
        b2.worker.run_once()
        assert _calls(b1, rec) == ["5"]
        dups = _audit(b1, "automation:duplicate")
        assert len(dups) == 7 and len(b1.admin.alerts()) == 8
