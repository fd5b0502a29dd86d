"""Alert bridge delivery: signed webhooks, Twilio-shaped SMS, Grafana annotations, retries, breaker, dead
letters, escalation, repeats and storm protection, against local receivers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import ssl
import time

import pytest

from alert_bridge.testing import Receiver, alert, base_config, inprocess_bridge, payload, wait
from tests.harness import start_smtp
from tests.harness.tls import self_signed_cert

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def standard_webhooks_valid(headers: dict, body: bytes) -> bool:
    """Independent check of the Standard Webhooks signature (not the bridge's own code)."""
    key = base64.b64decode(SECRET.split("_", 1)[1])
    signed = f"{headers['Webhook-Id']}.{headers['Webhook-Timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig == f"v1,{expected}" for sig in headers["Webhook-Signature"].split())


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'bridge.db'}"


def test_webhook_sms_and_grafana_channels(httpserver, sqlite_url, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    monkeypatch.setenv("TWILIO_TOKEN", "twilio-secret")
    monkeypatch.setenv("GRAFANA_TOKEN", "glsa_test")
    hook, sms, grafana = Receiver(), Receiver(ok=201), Receiver()
    httpserver.expect_request("/hook", method="POST").respond_with_handler(hook)
    httpserver.expect_request("/2010-04-01/Accounts/AC123/Messages.json", method="POST").respond_with_handler(
        sms
    )
    httpserver.expect_request("/api/annotations", method="POST").respond_with_handler(grafana)
    base = httpserver.url_for("").rstrip("/")
    channels = {
        "hook": {"type": "webhook", "url": f"{base}/hook", "secret_env": "HOOK_SECRET"},
        "sms": {
            "base_url": base,
            "account_sid": "AC123",
            "auth_token_env": "TWILIO_TOKEN",
            "from": "+1555",
            "to": ["+1666"],
        },
        "grafana": {"url": base, "token_env": "GRAFANA_TOKEN", "tags": ["prod"]},
    }
    with inprocess_bridge(base_config(channels=channels), sqlite_url) as b:
        b.hook.post("/webhook/alertmanager", payload([alert("DiskFull", host="kvm-02", severity="critical")]))
        b.hook.post("/webhook/alertmanager", payload([alert("DiskFull", host="kvm-02", severity="critical")]))
        wait(lambda: len(hook.requests) == 1 and len(sms.requests) == 1 and len(grafana.requests) == 1)
        resolved = alert(
            "DiskFull", "resolved", ends="2026-01-01T00:10:00Z", host="kvm-02", severity="critical"
        )
        b.hook.post("/webhook/alertmanager", payload([resolved]))
        wait(lambda: len(hook.requests) == 2 and len(sms.requests) == 2 and len(grafana.requests) == 2)

        headers, body = hook.requests[0]
        assert standard_webhooks_valid(headers, body)
        assert abs(int(headers["Webhook-Timestamp"]) - time.time()) < 60
        assert [b_["type"] for b_ in hook.bodies()] == ["firing", "resolved"]
        assert hook.bodies()[0]["alert"]["labels"]["host"] == "kvm-02"

        sms_headers, sms_body = sms.requests[0]
        assert sms_headers["Authorization"] == "Basic " + base64.b64encode(b"AC123:twilio-secret").decode()
        form = dict(x.split("=", 1) for x in sms_body.decode().split("&"))
        assert form["To"] == "%2B1666" and form["From"] == "%2B1555" and "DiskFull" in form["Body"]

        g_headers, g_body = grafana.requests[0]
        assert g_headers["Authorization"] == "Bearer glsa_test"
        annotation = json.loads(g_body)
        assert "prod" in annotation["tags"] and "firing" in annotation["tags"]
        assert annotation["time"] == 1767225600000  # startsAt of the alert, in ms
        assert json.loads(grafana.requests[1][1])["time"] == 1767226200000  # endsAt

        # A test-send goes through the same outbox and shows in the delivery log.
        resp = b.admin.post("/api/v1/channels/hook/test", {})
        assert resp.status_code == 202
        wait(lambda: len(hook.requests) == 3)
        assert hook.bodies()[2]["type"] == "test"
        assert b.admin.post("/api/v1/channels/nope/test", {}).status_code == 404


def test_retries_breaker_dead_letters_and_replay(httpserver, sqlite_url):
    flaky = Receiver(statuses=[503, 503])  # two failures, then success
    rejecting = Receiver(statuses=[400])  # permanent: straight to the dead-letter queue
    httpserver.expect_request("/flaky", method="POST").respond_with_handler(flaky)
    httpserver.expect_request("/reject", method="POST").respond_with_handler(rejecting)
    channels = {
        "flaky": {"type": "webhook", "url": httpserver.url_for("/flaky")},
        "reject": {"type": "webhook", "url": httpserver.url_for("/reject")},
    }
    with inprocess_bridge(base_config(channels=channels), sqlite_url) as b:
        b.hook.post("/webhook/alertmanager", payload([alert("Flappy", host="h")]))
        delivered = wait(
            lambda: [
                d
                for d in b.admin.get("/api/v1/deliveries", params={"channel": "flaky"}).json()
                if d["status"] == "delivered"
            ]
        )
        assert [a["result"] for a in delivered[0]["log"]] == ["failed", "failed", "delivered"]
        assert delivered[0]["log"][0]["error"] == "webhook: HTTP 503"
        [dead] = wait(lambda: b.admin.get("/api/v1/dead-letters").json())
        assert dead["channel"] == "reject" and dead["attempts"] == 1
        # The worker counts a batch's outcomes after committing them: the counters can lag the rows a moment.
        expected = [
            'novacron_bridge_notifications_failed_total{channel="flaky"} 2.0',
            "novacron_bridge_dead_letters 1.0",
            'novacron_bridge_delivery_latency_seconds_count{channel="flaky"} 1.0',
        ]
        wait(lambda: all(line in b.admin.get("/metrics").text for line in expected))

        # The receiver is fixed: replay the dead letter through the API.
        assert b.admin.post(f"/api/v1/dead-letters/{dead['id']}/replay").status_code == 200
        wait(lambda: len(rejecting.requests) == 2)
        wait(lambda: not b.admin.get("/api/v1/dead-letters").json())
        assert b.admin.post(f"/api/v1/dead-letters/{dead['id']}/replay").status_code == 404
        audit = b.admin.get("/api/v1/audit", params={"action": "dead_letter"}).json()
        assert audit[0]["actor"] == "admin"


def test_circuit_breaker_stops_hammering_a_dead_channel(httpserver, sqlite_url):
    down = Receiver(ok=503)
    httpserver.expect_request("/down", method="POST").respond_with_handler(down)
    config = base_config(
        channels={"down": {"type": "webhook", "url": httpserver.url_for("/down")}},
        delivery={
            "worker_interval_seconds": 0.05,
            "backoff_base_seconds": 0.05,
            "backoff_max_seconds": 0.05,
            "breaker_failures": 3,
            "breaker_reset_seconds": 30,
            "max_attempts": 100,
        },
    )
    with inprocess_bridge(config, sqlite_url) as b:
        b.hook.post("/webhook/alertmanager", payload([alert(f"A{i}", host="h") for i in range(5)]))
        wait(lambda: len(down.requests) >= 3)
        # The breaker opens once the worker has seen the third failure, a moment after the receiver did.
        wait(lambda: b.worker.breakers["down"].state == "open")
        time.sleep(1.0)
        # Open after 3 consecutive failures: no more calls during the reset time, messages stay queued.
        assert len(down.requests) == 3
        assert b.worker.breakers["down"].state == "open"
        assert "novacron_bridge_outbox_depth 5.0" in b.admin.get("/metrics").text


def test_escalation_repeat_and_ack_stops_them(httpserver, sqlite_url):
    oncall, manager = Receiver(), Receiver()
    httpserver.expect_request("/oncall", method="POST").respond_with_handler(oncall)
    httpserver.expect_request("/manager", method="POST").respond_with_handler(manager)
    config = base_config(
        channels={
            "oncall": {"type": "webhook", "url": httpserver.url_for("/oncall")},
            "manager": {"type": "webhook", "url": httpserver.url_for("/manager")},
        },
        routing={
            "default_channels": ["oncall"],
            "policies": [
                {
                    "name": "critical",
                    "match": {"severity": "critical"},
                    "channels": ["oncall"],
                    "repeat_minutes": 0.01,  # every 0.6 s
                    "escalation": [{"after_minutes": 0.02, "channels": ["manager"]}],
                }
            ],
        },
    )
    with inprocess_bridge(config, sqlite_url) as b:
        b.hook.post("/webhook/alertmanager", payload([alert("DbDown", severity="critical", host="db1")]))
        wait(lambda: manager.requests, timeout=30)
        wait(lambda: len(oncall.requests) >= 2, timeout=30)
        assert manager.bodies()[0]["type"] == "escalation1"
        types = [x["type"] for x in oncall.bodies()]
        # A repeat is named after the repeat periods elapsed when the 1 s timer saw it due: "repeat1", or
        # "repeat2" when the timer's first look after 0.6 s came after 1.2 s.
        assert types[0] == "firing" and re.fullmatch(r"repeat\d+", types[1]), types
        [a] = b.admin.alerts()
        assert a["escalationLevel"] == 1
        b.admin.post(f"/api/v1/alerts/{a['id']}/ack", {"reason": "on it"})
        # The ack commits before any later timer run (one writer), so no repeat is queued after it; let one
        # queued before it go out.
        wait(lambda: "novacron_bridge_outbox_depth 0.0" in b.admin.get("/metrics").text, timeout=30)
        count = len(oncall.requests)
        time.sleep(1.5)
        assert len(oncall.requests) == count  # acknowledged: no more repeats
        # Unacknowledging re-arms the repeats.
        b.admin.post(f"/api/v1/alerts/{a['id']}/unack", {})
        wait(lambda: len(oncall.requests) > count, timeout=30)
        # A warning matches no policy: defaults, no repeat.
        b.hook.post("/webhook/alertmanager", payload([alert("Slow", severity="warning", host="db1")]))
        wait(lambda: any(x["alert"]["alertname"] == "Slow" for x in oncall.bodies() if "alert" in x))


def test_storm_sends_one_summary(httpserver, sqlite_url):
    hook = Receiver()
    httpserver.expect_request("/hook", method="POST").respond_with_handler(hook)
    config = base_config(
        channels={"hook": {"type": "webhook", "url": httpserver.url_for("/hook")}},
        incidents={"group_by": ["host"], "storm_threshold": 3, "storm_window_seconds": 60},
    )
    with inprocess_bridge(config, sqlite_url) as b:
        flood = [alert(f"Check{i}", host="kvm-09") for i in range(30)]
        # The flood straddles a minute mark of the bridge's clock, as any flood may: one storm, one summary
        # (the summary was keyed on now // window once, and a storm across hh:mm:00 sent two).
        mark = math.floor(time.time() / 60) * 60
        for n, i in enumerate(range(0, 30, 5)):
            b.bridge.clock = lambda at=mark - 0.5 + 0.2 * n: at
            assert b.hook.post("/webhook/alertmanager", payload(flood[i : i + 5])).status_code == 200
        b.bridge.clock = time.time
        b.hook.post("/webhook/alertmanager", payload([alert("Other", host="kvm-10")]))
        wait(lambda: len(hook.requests) >= 5)
        time.sleep(0.5)
        kinds = [x["type"] for x in hook.bodies()]
        assert kinds.count("storm") == 1 and kinds.count("firing") == 4  # 3 before the storm + kvm-10
        storm = next(x for x in hook.bodies() if x["type"] == "storm")
        assert storm["incident"]["title"] == "host=kvm-09"
        incidents = b.admin.get("/api/v1/incidents").json()
        assert sorted(i["alertCount"] for i in incidents) == [1, 30]
        inc = next(i for i in incidents if i["alertCount"] == 30)
        assert len(b.admin.get(f"/api/v1/incidents/{inc['id']}").json()["alerts"]) == 30
        assert b.admin.post(f"/api/v1/incidents/{inc['id']}/notes", {"text": "rack power"}).status_code == 201


def _self_signed(tmp_path):
    return self_signed_cert(tmp_path, "smtp")


def test_email_starttls_and_auth_with_password_file(tmp_path):
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    password = tmp_path / "smtp.password"
    password.write_text("s3cret\n")
    with start_smtp(tls_context=server_ctx, credentials=("bridge", "s3cret")) as smtp:
        smtp_cfg = {
            "host": smtp.host,
            "port": smtp.port,
            "starttls": True,
            "username": "bridge",
            "password_file": str(password),
            "ca_file": str(cert),
        }
        channels = {
            "email": {"smtp": smtp_cfg, "from": "bridge@example.org", "to": ["ops@example.org"]},
        }
        with inprocess_bridge(base_config(channels=channels), f"sqlite:///{tmp_path / 'b.db'}") as b:
            b.hook.post(
                "/webhook/alertmanager", payload([alert("TlsCheck", host="kvm-7", severity="critical")])
            )
            mail = smtp.wait_for(lambda m: "TlsCheck" in m["Subject"])
            assert (
                mail.get_body(("html",)) is not None
                and "host=kvm-7" in mail.get_body(("plain",)).get_content()
            )
            assert len(smtp.messages) == 1
            # The server has the mail before the bridge records the delivery.
            [sent] = wait(
                lambda: [
                    d
                    for d in b.admin.get("/api/v1/deliveries", params={"channel": "email"}).json()
                    if d["status"] == "delivered"
                ]
            )
            assert sent["log"][0]["result"] == "delivered"
            assert len(b.admin.get("/api/v1/deliveries", params={"channel": "email"}).json()) == 1


def test_dead_mans_switch_alarms_when_the_watchdog_stops(httpserver, sqlite_url):
    hook = Receiver()
    httpserver.expect_request("/hook", method="POST").respond_with_handler(hook)
    config = base_config(
        channels={"hook": {"type": "webhook", "url": httpserver.url_for("/hook")}},
        heartbeat={"alertname": "NovaCronWatchdog", "timeout_seconds": 3},
    )
    with inprocess_bridge(config, sqlite_url) as b:
        watchdog = payload(
            [alert("NovaCronWatchdog", severity="none")], group_key='{}:{alertname="NovaCronWatchdog"}'
        )
        for _ in range(3):
            assert b.hook.post("/webhook/alertmanager", watchdog).status_code == 200
            time.sleep(0.4)
        assert hook.requests == [] and b.admin.alerts() == []  # the heartbeat is not an alert episode
        assert 'novacron_bridge_heartbeat_last_seen_timestamp_seconds{alertname="NovaCronWatchdog"}' in (
            b.admin.get("/metrics").text
        )
        # Silence: the bridge raises its own alarm, once.
        wait(lambda: hook.requests, timeout=30)
        time.sleep(1.5)
        assert [x["type"] for x in hook.bodies()] == ["heartbeat"] and hook.bodies()[0]["missing"] is True
        b.hook.post("/webhook/alertmanager", watchdog)
        wait(lambda: len(hook.requests) == 2)
        assert hook.bodies()[1]["missing"] is False
        actions = [a["action"] for a in b.admin.get("/api/v1/audit").json()]
        assert "heartbeat:missing" in actions and "heartbeat:restored" in actions


def test_secret_webhook_url_and_headers_come_from_files_and_env(
    httpserver, sqlite_url, tmp_path, monkeypatch
):
    """Slack-style hooks whose URL is the secret, and bearer headers: from a file or env, not the config."""
    hook = Receiver()
    httpserver.expect_request("/services/T0/B0/s3cr3t", method="POST").respond_with_handler(hook)
    (tmp_path / "hook-url").write_text(httpserver.url_for("/services/T0/B0/s3cr3t") + "\n")
    (tmp_path / "api-key").write_text("key-from-file\n")
    monkeypatch.setenv("HOOK_BEARER", "Bearer from-env")
    channel = {
        "type": "webhook",
        "url_file": str(tmp_path / "hook-url"),
        "headers": {"X-Team": "ops"},
        "secret_headers": {
            "Authorization": {"env": "HOOK_BEARER"},
            "X-Api-Key": {"file": str(tmp_path / "api-key")},
        },
    }
    config = base_config(channels={"chat": channel}, delivery={"worker_interval_seconds": 0.05})
    with inprocess_bridge(config, sqlite_url) as b:
        b.hook.post("/webhook/alertmanager", payload([alert("SecretHook", host="h")]))
        wait(lambda: len(hook.requests) >= 1)
        headers, _ = hook.requests[0]
        assert headers["Authorization"] == "Bearer from-env" and headers["X-Api-Key"] == "key-from-file"
        assert headers["X-Team"] == "ops"
        assert "s3cr3t" not in repr(b.config.channels["chat"])  # not in any repr that might be logged


@pytest.mark.parametrize(
    ("channel", "key"),
    [
        ({"type": "webhook"}, "channels.chat.url"),
        ({"type": "webhook", "url": "http://a", "url_file": "/x"}, "channels.chat.url"),
        ({"type": "webhook", "url_file": "/nonexistent/hook-url"}, "channels.chat.url_file"),
        (
            {"type": "webhook", "url": "http://a", "secret_headers": {"Authorization": "Bearer x"}},
            "channels.chat.secret_headers.Authorization",
        ),
        (
            {
                "type": "webhook",
                "url": "http://a",
                "secret_headers": {"Authorization": {"env": "NOVACRON_UNSET_VAR"}},
            },
            "channels.chat.secret_headers.Authorization",
        ),
    ],
)
def test_secret_webhook_config_errors_name_the_key(channel, key, tmp_path):
    from alert_bridge.config import parse_config
    from exporters.common.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config({"channels": {"chat": channel}})
    assert err.value.key == key


def test_url_file_with_garbage_is_refused_without_echoing_it(tmp_path):
    from alert_bridge.config import parse_config
    from exporters.common.config import ConfigError

    (tmp_path / "hook-url").write_text("not a url but a secret-ish token\n")
    with pytest.raises(ConfigError) as err:
        parse_config({"channels": {"chat": {"type": "webhook", "url_file": str(tmp_path / "hook-url")}}})
    assert err.value.key == "channels.chat.url_file" and "secret-ish" not in str(err.value)
