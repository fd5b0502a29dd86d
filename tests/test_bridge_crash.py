"""kill -9 of the bridge during a burst, then restart: nothing accepted is lost, no duplicate episodes, every
notification delivered (at least once; duplicates only under the same idempotency key). Bad config: exit 2."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
import requests
import yaml

from alert_bridge.main import main
from alert_bridge.testing import ADMIN_TOKEN, WEBHOOK_TOKEN, alert, bridge_process, payload, wait
from tests.harness.tls import self_signed_cert

pytestmark = pytest.mark.slow

N = 100


def _burst(url: str, accepted: Callable[[int], None], stop: threading.Event, start: int, step: int) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {WEBHOOK_TOKEN}"
    for i in range(start, N, step):
        if stop.is_set():
            return
        try:
            resp = session.post(
                f"{url}/webhook/alertmanager",
                json=payload([alert(f"Burst{i}", host=f"h{i}")], group_key=f"g{i}"),
                timeout=5,
            )
        except requests.RequestException:
            return  # the process died under us: this one was not acknowledged
        if resp.status_code == 200:
            accepted(i)


def test_kill_dash_nine_during_burst(tmp_path, smtp_server):
    config = {
        "channels": {
            "email": {
                "smtp": {"host": smtp_server.host, "port": smtp_server.port},
                "from": "b@x",
                "to": ["o@x"],
            }
        },
        "delivery": {
            "worker_interval_seconds": 0.05,
            "backoff_base_seconds": 0.1,
            "backoff_max_seconds": 0.5,
        },
        "incidents": {"storm_threshold": 100000},
    }
    db = f"sqlite:///{tmp_path / 'bridge.db'}"
    first = bridge_process(tmp_path / "run1", config, db).start()
    accepted: list[int] = []
    lock = threading.Lock()
    killed = threading.Event()

    def accept(i: int) -> None:
        # The 30th acknowledgement kills at once, from the sender's thread: a poll of the count (every 50 ms)
        # let the other senders race on, on a fast run to all N, and the kill was no longer mid-burst.
        with lock:
            accepted.append(i)
            if len(accepted) == 30:
                first.kill()  # SIGKILL, mid-burst and mid-delivery
                killed.set()

    stop = threading.Event()
    threads = [threading.Thread(target=_burst, args=(first.url, accept, stop, k, 4)) for k in range(4)]
    for t in threads:
        t.start()
    assert killed.wait(60), f"only {len(accepted)} of {N} alerts accepted"
    stop.set()
    for t in threads:
        t.join()
    assert 30 <= len(accepted) < N
    # Claimed and not recorded when the process died: the only messages that may have been sent and go again.
    in_flight = _claimed(tmp_path / "bridge.db")

    second = bridge_process(tmp_path / "run2", config, db).start()
    try:
        admin = requests.Session()
        admin.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        stored = {
            a["alertname"] for a in admin.get(f"{second.url}/api/v1/alerts", params={"limit": 10000}).json()
        }
        assert {f"Burst{i}" for i in accepted} <= stored  # everything acknowledged with 200 survived

        # Alertmanager retries what was not acknowledged, and re-sends everything at repeat_interval.
        hook = requests.Session()
        hook.headers["Authorization"] = f"Bearer {WEBHOOK_TOKEN}"
        for start in range(0, N, 25):
            batch = [alert(f"Burst{i}", host=f"h{i}") for i in range(start, min(N, start + 25))]
            assert hook.post(
                f"{second.url}/webhook/alertmanager", json=payload(batch, group_key=f"r{start}")
            ).ok
        alerts = admin.get(f"{second.url}/api/v1/alerts", params={"limit": 10000}).json()
        assert len(alerts) == N and len({a["fingerprint"] for a in alerts}) == N

        def drained() -> bool:
            text = admin.get(f"{second.url}/metrics").text
            return "novacron_bridge_outbox_depth 0.0" in text

        wait(drained, timeout=60)
        keys = Counter(m["X-NovaCron-Key"] for m in smtp_server.messages)
        assert set(keys) == {
            f"a{a['id']}:firing:email|" for a in alerts
        }  # every alert notified exactly by key
        # Only messages in flight at the kill can go twice (claimed, sent, not yet recorded), once each. Not a
        # fixed number: how many a batch claims depends on how fast the intake outran the worker.
        twice = {k for k, c in keys.items() if c > 1}
        assert twice <= in_flight and max(keys.values()) <= 2, (twice - in_flight, keys.most_common(3))
        assert "novacron_bridge_dead_letters 0.0" in admin.get(f"{second.url}/metrics").text
    finally:
        second.stop()


def _claimed(path: Path) -> set[str]:
    """Outbox keys a (dead) bridge had claimed and not yet recorded an outcome for."""
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT dedup_key FROM outbox WHERE status = 'pending' AND claimed_until > 0")
        return {key for (key,) in rows}


def test_bad_config_exits_2_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        yaml.safe_dump({"channels": {"email": {"smtp": {"host": "h", "port": "x"}, "from": "a", "to": "b"}}})
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alert_bridge.main",
            f"--config.file={bad}",
            "--web.listen-address=127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "channels.email.smtp.port" in result.stderr and "Traceback" not in result.stderr
    # The same path in-process (no second interpreter start-up).
    with pytest.raises(SystemExit) as exit_info:
        main(["--storage.url=mysql://x", "--web.listen-address=127.0.0.1:0"])
    assert exit_info.value.code == 2 and "storage.url" in capsys.readouterr().err


def test_tls_from_web_config_file(tmp_path, capsys):
    cert, key = self_signed_cert(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}}))
    proc = bridge_process(tmp_path / "tls", {}, f"sqlite:///{tmp_path / 'b.db'}")
    proc.argv = [*proc.argv, f"--web.config.file={web}"]
    proc.ready_url = None
    url = proc.url.replace("http://", "https://")
    with proc.start():
        ok = wait(lambda: _get(f"{url}/healthz", cert), timeout=30)
        assert ok.json() == {"status": "ok"}
        resp = requests.get(
            f"{url}/api/v1/alerts",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            verify=str(cert),
            timeout=5,
        )
        assert resp.status_code == 200
    bad = tmp_path / "bad-web.yml"
    bad.write_text(yaml.safe_dump({"basic_auth_users": {"x": "$2b$10$abc"}}))
    with pytest.raises(SystemExit) as exit_info:
        main([f"--web.config.file={bad}"])
    assert exit_info.value.code == 2 and "basic_auth_users" in capsys.readouterr().err


def _get(url: str, cert) -> requests.Response | None:
    try:
        return requests.get(url, verify=str(cert), timeout=2)
    except requests.RequestException:
        return None


def test_storage_url_from_env_or_file_keeps_the_password_out_of_argv(tmp_path, monkeypatch, capsys):
    from alert_bridge.main import STORAGE_ENV, build_parser, storage_url

    secret = tmp_path / "storage-url"
    secret.write_text("postgresql+psycopg://bridge:pw@db.example/bridge\n")
    parser = build_parser()
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert storage_url(parser.parse_args([f"--storage.url-file={secret}"])).endswith("@db.example/bridge")
    monkeypatch.setenv(STORAGE_ENV, f"sqlite:///{tmp_path / 'env.db'}")
    assert storage_url(parser.parse_args([])) == f"sqlite:///{tmp_path / 'env.db'}"
    assert storage_url(parser.parse_args(["--storage.url=sqlite:///x.db"])) == "sqlite:///x.db"  # flag wins
    monkeypatch.delenv(STORAGE_ENV)
    assert storage_url(parser.parse_args([f"--storage.path={tmp_path}"])).endswith("/bridge.db")
    with pytest.raises(SystemExit) as exit_info:
        main([f"--storage.url-file={tmp_path / 'missing'}", "--web.listen-address=127.0.0.1:0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "storage.url-file" in err and "Traceback" not in err
