"""HA alerting path: Prometheus -> two gossiping Alertmanagers -> two bridge replicas on one PostgreSQL
-> SMTP. With the mail server down the bridges buffer; one Alertmanager and one bridge (kill -9) die; once
the mail server is back every alert is notified exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import requests
import yaml

from alert_bridge.testing import ADMIN_TOKEN, WEBHOOK_TOKEN, base_config, bridge_process, pg_database, wait
from tests.harness import SmtpSink, start_alertmanager, start_prometheus

pytestmark = pytest.mark.slow

N_ALERTS = 12


def _rule_file(path: Path) -> Path:
    rules = [
        {
            "alert": f"ScaleTest{i:02d}",
            "expr": "vector(1)",
            "labels": {"severity": "critical"},
            "annotations": {"summary": f"scale test alert {i}"},
        }
        for i in range(N_ALERTS)
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "scale-test", "rules": rules}]}))
    return path


def _am_config(bridge_urls: list[str], token_file: Path) -> dict:
    hooks = [
        {
            "url": f"{url}/webhook/alertmanager",
            "send_resolved": False,
            "http_config": {"authorization": {"credentials_file": str(token_file)}},
        }
        for url in bridge_urls
    ]
    return {
        "route": {
            "receiver": "bridges",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1m",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "bridges", "webhook_configs": hooks}],
    }


def _recorded(url: str) -> set[str]:
    resp = requests.get(
        f"{url}/api/v1/alerts", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
    )
    resp.raise_for_status()
    return {a["labels"]["alertname"] for a in resp.json() if a["labels"]["alertname"].startswith("Scale")}


def test_every_alert_notified_exactly_once_through_ha_pairs(tmp_path: Path, postgres) -> None:
    smtp = SmtpSink()  # port chosen now, server started later: the channel is down at first
    db = pg_database(postgres.url)
    config = base_config(
        channels={
            "email": {
                "type": "email",
                "smtp": {"host": smtp.host, "port": smtp.port},
                "from": "bridge@novacron.test",
                "to": ["oncall@novacron.test"],
                "timeout_seconds": 2,
            }
        },
        routing={"default_channels": ["email"]},
    )
    bridges = [bridge_process(tmp_path / f"bridge-{i}", config, db) for i in range(2)]
    token_file = tmp_path / "webhook.token"
    token_file.write_text(WEBHOOK_TOKEN)
    procs: list = []
    try:
        for b in bridges:
            procs.append(b.start())
        am_config = _am_config([b.url for b in bridges], token_file)
        am0 = start_alertmanager(tmp_path, am_config, cluster=True)
        procs.append(am0)
        am1 = start_alertmanager(tmp_path, am_config, peers=[am0.cluster_address])
        procs.append(am1)
        prom = start_prometheus(
            tmp_path,
            [],
            [_rule_file(tmp_path / "scale-test.rules.yml")],
            [am0.url.removeprefix("http://"), am1.url.removeprefix("http://")],
            # Alerts evaluated before the notifier discovers the peers are dropped: resend them soon.
            extra_args=["--rules.alert.resend-delay=1s"],
        )
        procs.append(prom)
        # Both peers see each other and every alert, both bridges share every alert through PostgreSQL.
        wait(lambda: len(am1.alerts()) == N_ALERTS and len(am0.alerts()) == N_ALERTS, timeout=60)
        wait(lambda: all(len(_recorded(b.url)) == N_ALERTS for b in bridges), timeout=60)
        assert smtp.messages == []

        am1.kill()  # one Alertmanager peer gone
        bridges[0].kill()  # kill -9 of a replica holding claimed outbox rows
        smtp.start()
        # The survivor's channel breaker and the dead replica's deferred rows each wait up to 30 s
        # (breaker_reset_seconds) before the next try, on top of the claim expiry: allow for both.
        wait(lambda: len(smtp.messages) >= N_ALERTS, timeout=120)
        # Let the surviving replica finish anything it still retries before counting.
        wait(lambda: _outbox_depth(bridges[1].url) == 0, timeout=60)
        subjects = Counter(str(m["Subject"]) for m in smtp.messages)
        ids = Counter(str(m["Message-ID"]) for m in smtp.messages)
        assert len(smtp.messages) == N_ALERTS, subjects
        assert len(ids) == N_ALERTS and max(ids.values()) == 1
        for i in range(N_ALERTS):
            assert sum(n for s, n in subjects.items() if f"ScaleTest{i:02d}" in s) == 1, subjects
    finally:
        smtp.stop()
        for proc in reversed(procs):
            proc.stop()


def _outbox_depth(url: str) -> float:
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("novacron_bridge_outbox_depth"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("novacron_bridge_outbox_depth missing from the bridge's /metrics")
