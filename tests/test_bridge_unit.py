"""Unit tests of the bridge's pure parts: transition table, payload parsing, config validation, routing."""

from __future__ import annotations

import pytest

from alert_bridge import lifecycle as lc
from alert_bridge.config import parse_config
from alert_bridge.payload import PayloadError, parse_notification, parse_time
from alert_bridge.routing import initial_targets
from exporters.common.config import ConfigError


def test_every_state_event_pair_is_decided_by_the_table():
    for state in lc.STATES:
        for event in lc.EVENTS:
            if (state, event) in lc.TRANSITIONS:
                assert lc.transition(state, event) in lc.STATES
            else:
                with pytest.raises(lc.InvalidTransition):
                    lc.transition(state, event)


def test_ack_then_rise_rearms():
    assert lc.transition(lc.FIRING, "ack") == lc.ACKNOWLEDGED
    assert lc.transition(lc.ACKNOWLEDGED, "fire") == lc.ACKNOWLEDGED
    assert lc.transition(lc.ACKNOWLEDGED, "rise") == lc.FIRING


def test_go_timestamps_with_nanoseconds_and_zero_time():
    assert parse_time("0001-01-01T00:00:00Z", "t") is None
    assert parse_time("2026-01-01T00:00:00.123456789Z", "t") == pytest.approx(1767225600.123456789)
    assert parse_time("2026-01-01T01:00:00+01:00", "t") == 1767225600


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "JSON object"),
        ({"version": "3", "alerts": []}, "version"),
        ({"version": "4", "alerts": {}}, "alerts must be a list"),
        ({"version": "4", "alerts": [{"status": "x"}]}, "status"),
        ({"version": "4", "alerts": [{"status": "firing", "labels": {}}]}, "labels must not be empty"),
        (
            {"version": "4", "alerts": [{"status": "firing", "labels": {"a": "b"}, "startsAt": "yesterday"}]},
            "RFC 3339",
        ),
        ({"version": "4", "truncatedAlerts": -1, "alerts": []}, "truncatedAlerts"),
    ],
)
def test_bad_payloads_say_why(body, reason):
    with pytest.raises(PayloadError, match=reason):
        parse_notification(body)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError) as err:
        parse_config(
            {"channels": {"email": {"smtp": {"host": "h", "port": 99999}, "from": "a", "to": ["b"]}}}
        )
    assert err.value.key == "channels.email.smtp.port"
    with pytest.raises(ConfigError) as err:
        parse_config({"routing": {"policies": [{"channels": ["nope"]}]}})
    assert err.value.key == "routing.policies[0].channels"
    with pytest.raises(ConfigError) as err:
        parse_config({"delivery": {"max_atempts": 3}})
    assert err.value.key == "delivery.max_atempts"


def test_routing_policy_users_and_quiet_hours(monkeypatch):
    monkeypatch.setenv("SMS_TOKEN", "t")
    config = parse_config(
        {
            "channels": {
                "email": {"smtp": {"host": "h", "port": 25}, "from": "a@x", "to": ["ops@x"]},
                "sms": {"account_sid": "AC1", "auth_token_env": "SMS_TOKEN", "from": "+1", "to": ["+2"]},
            },
            "users": {
                "alice": {
                    "email": "alice@x",
                    "phone": "+3",
                    "channels": ["email", "sms"],
                    "min_severity": "critical",
                },
                "bob": {"email": "bob@x", "channels": ["email"], "quiet_hours": "00:00-24:00"},
            },
            "routing": {
                "default_channels": ["email"],
                "policies": [
                    {"name": "db", "match": {"team": "db"}, "channels": ["email"], "users": ["alice", "bob"]}
                ],
            },
        }
    )
    policy, targets = initial_targets(config, {"team": "db", "severity": "warning"}, 0)
    assert policy is not None and policy.name == "db"
    # alice wants only critical; bob is in quiet hours (all day) and this is not critical.
    assert [(t.channel, t.recipient) for t in targets] == [("email", "")]
    _, targets = initial_targets(config, {"team": "db", "severity": "critical"}, 0)
    assert {(t.channel, t.recipient) for t in targets} == {
        ("email", ""),
        ("email", "alice@x"),
        ("sms", "+3"),
        ("email", "bob@x"),
    }
    _, targets = initial_targets(config, {"team": "web"}, 0)
    assert [t.channel for t in targets] == ["email"]


def test_a_window_to_24_00_holds_to_the_last_instant_of_the_day():
    from datetime import time

    from alert_bridge.config import TimeWindow

    config = parse_config({"users": {"bob": {"email": "b@x", "quiet_hours": "22:00-24:00"}}})
    window = config.users["bob"].quiet_hours
    assert window is not None and window.contains(time(23, 59, 59, 999999))  # 24:00 is stored as time.max
    assert window.contains(time(22, 0)) and not window.contains(time(21, 59, 59, 999999))
    assert TimeWindow(time(0), time.max).contains(time.max)  # "00:00-24:00": all day, its end included
    night = TimeWindow(time(22), time(6))  # wraps past midnight
    assert night.contains(time(23, 59, 59, 999999)) and night.contains(time(0))
    assert not night.contains(time(6)) and not night.contains(time(21, 59, 59, 999999))


def test_deploy_examples_are_valid(tmp_path, monkeypatch):
    """The shipped bridge config parses (secrets in tmp_path and env); its Alertmanager side passes amtool."""
    import subprocess
    from pathlib import Path

    from alert_bridge.main import load_config

    deploy = Path(__file__).resolve().parent.parent / "deploy" / "alert-bridge"
    text = (deploy / "config.example.yml").read_text()
    for secret in (
        "bridge-webhook.token",
        "smtp.password",
        "webhook.secret",
        "bridge-session.secret",
        "analytics.token",
    ):
        (tmp_path / secret).write_text("x" * 32 + "\n")
        text = text.replace(f"/etc/novacron/{secret}", str(tmp_path / secret))
    assert "/etc/novacron/" not in text, "a secret file of the example is not covered by this test"
    (tmp_path / "bridge.yml").write_text(text)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "t" * 32)
    monkeypatch.setenv("GRAFANA_TOKEN", "g" * 32)
    config = load_config(str(tmp_path / "bridge.yml"))
    assert set(config.channels) == {"email", "ops-webhook", "sms", "grafana"}
    check = subprocess.run(
        ["amtool", "check-config", str(deploy / "alertmanager-receiver.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
