"""nginx (Debian nginx-light, unprivileged, foreground, loopback) in front of two bridge replicas on one
PostgreSQL: API calls and webhooks through it reach both replicas, and keep working when one is killed."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from alert_bridge.testing import (
    ADMIN_TOKEN,
    WEBHOOK_TOKEN,
    Client,
    alert,
    base_config,
    bridge_process,
    payload,
    pg_database,
)
from stack.nginx import NGINX_BIN, bridge_site, main, nginx_argv, standalone_config
from stack.plan import REPO_ROOT
from stack.processes import ManagedProcess, free_port, wait_until
from tests.harness.tls import self_signed_cert

CALLS = 12


def _nginx(prefix: Path, backends: list[str], listen: str) -> ManagedProcess:
    conf = prefix / "nginx.conf"
    conf.write_text(standalone_config(prefix, bridge_site(backends, listen=listen, server_name="_")))
    return ManagedProcess(
        "nginx", nginx_argv(prefix, conf), prefix / "nginx.out", ready_url=f"http://{listen}/healthz"
    )


@pytest.fixture
def prefix() -> Iterator[Path]:
    # nginx's workers drop to `nobody` when the tests run as root: their folder must be reachable.
    path = Path(tempfile.mkdtemp(prefix="novacron-nginx-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _served_by(prefix: Path) -> list[tuple[str, str, int, int]]:
    """(path, replica that answered, status, replicas tried) of each request, from the access log."""
    out = []
    for line in (prefix / "access.log").read_text().splitlines():
        match = re.search(r'"\w+ (\S+) [^"]*" (\d+) upstream=(\S+(?:, \S+)*) upstream_status', line)
        assert match, line
        path, status, upstreams = match.groups()
        tried = upstreams.split(", ")  # the last one tried answered
        out.append((path.split("?")[0], tried[-1], int(status), len(tried)))
    return out


def _api_calls_logged(prefix: Path) -> int:
    return len([path for path, *_ in _served_by(prefix) if path != "/healthz"])


def test_nginx_spreads_calls_over_both_replicas_and_survives_one_killed(
    tmp_path: Path, postgres, prefix: Path
) -> None:
    db = pg_database(postgres.url)
    bridges = [bridge_process(tmp_path / f"bridge-{i}", base_config(), db) for i in range(2)]
    backends = [b.url.removeprefix("http://") for b in bridges]
    lb = _nginx(prefix, backends, f"127.0.0.1:{free_port()}")
    lb_url = lb.ready_url.removesuffix("/healthz")  # type: ignore[union-attr]
    api = Client(lb_url, ADMIN_TOKEN)
    hook = Client(lb_url, WEBHOOK_TOKEN)
    try:
        for proc in [*bridges, lb]:
            proc.start()
        for i in range(CALLS):
            resp = hook.post("/webhook/alertmanager", json=payload([alert(f"LbTest{i:02d}", host="h1")]))
            assert resp.status_code == 200, resp.text
            assert len([a for a in api.alerts() if a["labels"]["alertname"].startswith("LbTest")]) == i + 1
        # nginx logs a request just after answering it: wait for every line before reading the log.
        assert wait_until(lambda: _api_calls_logged(prefix) == 2 * CALLS, timeout=30)
        served = _served_by(prefix)  # (the readiness probe of /healthz went through nginx too)
        assert {code for _, _, code, _ in served} == {200}
        # Round robin: both replicas answered webhooks and API reads alike (2 x CALLS requests).
        per_replica = Counter(replica for _, replica, _, _ in served)
        assert set(per_replica) == set(backends) and min(per_replica.values()) >= CALLS // 2, per_replica

        bridges[0].kill()  # kill -9: connections to it are now refused
        codes: Counter[int] = Counter()
        for i in range(CALLS):
            resp = hook.post("/webhook/alertmanager", json=payload([alert(f"LbAfter{i:02d}", host="h2")]))
            codes[resp.status_code] += 1
            codes[api.get("/api/v1/alerts").status_code] += 1
        assert codes == Counter({200: 2 * CALLS}), codes
        names = {a["labels"]["alertname"] for a in api.alerts()}
        assert {f"LbAfter{i:02d}" for i in range(CALLS)} <= names
        assert wait_until(lambda: _api_calls_logged(prefix) == 4 * CALLS + 1, timeout=30)
        after = _served_by(prefix)[len(served) :]
        assert {replica for _, replica, _, _ in after} == {backends[1]}, after  # the survivor answered all
        assert max(tries for *_, tries in after) == 2  # nginx tried the dead one, then the other
        # The balancer hides the replicas' own metrics: Prometheus scrapes each replica directly.
        assert requests.get(f"{lb_url}/metrics", timeout=10).status_code == 404
    finally:
        for proc in [lb, *bridges]:
            proc.stop()
    assert not lb.alive()


def test_shipped_nginx_site_is_the_generated_one_and_passes_nginx_t(
    tmp_path: Path, capsys, prefix: Path
) -> None:
    backends = ["10.0.0.21:9095", "10.0.0.22:9095"]
    assert main([f"--backend={b}" for b in backends]) == 0
    shipped = (REPO_ROOT / "deploy" / "scale" / "nginx" / "alert-bridge.conf").read_text()
    assert capsys.readouterr().out == shipped
    cert, key = self_signed_cert(tmp_path)
    site = bridge_site(backends, "127.0.0.1:8443 ssl http2", "_", str(cert), str(key))
    conf = prefix / "tls.conf"
    conf.write_text(standalone_config(prefix, site))
    argv = nginx_argv(prefix, conf)
    check = subprocess.run(
        [NGINX_BIN, "-t", *argv[1:]], capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stderr
