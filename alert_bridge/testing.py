"""Helpers for tests and benchmarks: run a bridge in-process or as a process; build Alertmanager payloads."""

from __future__ import annotations

import json
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import yaml
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from stack.processes import ManagedProcess, free_port

ADMIN_TOKEN = "admin-" + secrets.token_hex(16)
WEBHOOK_TOKEN = "webhook-" + secrets.token_hex(16)


def alert(
    name: str = "HostDown",
    status: str = "firing",
    starts: str = "2026-01-01T00:00:00Z",
    ends: str = "0001-01-01T00:00:00Z",
    fingerprint: str | None = None,
    **labels: str,
) -> dict[str, Any]:
    """One alert as Alertmanager's webhook sends it."""
    all_labels = {"alertname": name, **labels}
    body: dict[str, Any] = {
        "status": status,
        "labels": all_labels,
        "annotations": {"summary": f"{name} on {labels.get('host', 'somewhere')}"},
        "startsAt": starts,
        "endsAt": ends,
        "generatorURL": "http://prometheus/graph",
    }
    if fingerprint is not None:
        body["fingerprint"] = fingerprint
    return body


def payload(alerts: list[dict[str, Any]], group_key: str = "{}:{}", truncated: int = 0) -> dict[str, Any]:
    """An Alertmanager webhook payload, version 4."""
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": truncated,
        "status": status,
        "receiver": "bridge",
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]} if alerts else {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": alerts,
    }


def base_config(**sections: Any) -> dict[str, Any]:
    """A config dict with fast timers for tests (sections override)."""
    config: dict[str, Any] = {
        "delivery": {
            "worker_interval_seconds": 0.05,
            "backoff_base_seconds": 0.1,
            "backoff_max_seconds": 0.5,
        },
    }
    config.update(sections)
    return config


class Client:
    """requests with a bearer token against a bridge URL."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.session.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> requests.Response:
        return self.session.post(self.url + path, json=json, timeout=30, **kw)

    def delete(self, path: str) -> requests.Response:
        return self.session.delete(self.url + path, timeout=30)

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        resp = self.get("/api/v1/alerts", params=params)
        resp.raise_for_status()
        return list(resp.json())


@contextmanager
def inprocess_bridge(
    config: dict[str, Any], storage_url: str, worker: bool = True, port: int | None = None
) -> Iterator[Any]:
    """A bridge on a free port in this process; yields the Service with `.url`, `.admin`, `.hook` clients."""
    from alert_bridge.config import TokenSpec, parse_config
    from alert_bridge.main import build_service

    service = build_service(parse_config(config), storage_url)
    service.tokens.ensure(TokenSpec("admin", "admin", ADMIN_TOKEN))
    service.tokens.ensure(TokenSpec("alertmanager", "webhook", WEBHOOK_TOKEN))
    port = port or free_port()
    server = make_server("127.0.0.1", port, service.app, threaded=True)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    if worker:
        service.worker.start()
    service.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    service.admin = Client(service.url, ADMIN_TOKEN)  # type: ignore[attr-defined]
    service.hook = Client(service.url, WEBHOOK_TOKEN)  # type: ignore[attr-defined]
    try:
        yield service
    finally:
        server.shutdown()
        service.close()


def bridge_process(
    workdir: Path, config: dict[str, Any], storage_url: str, port: int | None = None
) -> ManagedProcess:
    """The real command line in a child process (for crash tests); not started yet."""
    workdir.mkdir(parents=True, exist_ok=True)
    token_file = workdir / "webhook.token"
    token_file.write_text(WEBHOOK_TOKEN + "\n")
    cfg = dict(config)
    cfg.setdefault(
        "auth", {"tokens": [{"name": "alertmanager", "role": "webhook", "token_file": str(token_file)}]}
    )
    cfg_path = workdir / "bridge.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "alert_bridge.main",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--config.file={cfg_path}",
        f"--storage.url={storage_url}",
    ]
    env = {
        "NOVACRON_BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    proc = ManagedProcess(
        "alert-bridge",
        argv,
        workdir / f"bridge-{port}.log",
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=env,
        url=f"http://127.0.0.1:{port}",
    )
    return proc


def pg_database(server_url: str) -> str:
    """A fresh database on a shared PostgreSQL server (tests of other parts use the same server)."""
    import psycopg

    name = "bridge_" + uuid.uuid4().hex[:10]
    dsn = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


def ui_sign_in(browser: requests.Session, url: str, token: str) -> requests.Response:
    """Sign a browser session in through the UI's login form (with its form token), as a person would."""
    form = browser.get(f"{url}/ui/login", timeout=10).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    return browser.post(
        f"{url}/ui/login", data={"token": token, "csrf": csrf.group(1) if csrf else ""}, timeout=10
    )


def wait(check: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll `check()` until it returns something truthy; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


class Receiver:
    """Records requests; answers with the next scripted status (then 200 / 201)."""

    def __init__(self, statuses: list[int] | None = None, ok: int = 200) -> None:
        self.requests: list[tuple[dict, bytes]] = []
        self.statuses = list(statuses or [])
        self.ok = ok
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self.lock:
            self.requests.append((dict(request.headers), request.get_data()))
            status = self.statuses.pop(0) if self.statuses else self.ok
        return Response(
            json.dumps({"id": len(self.requests), "sid": "SM1"}),
            status=status,
            content_type="application/json",
        )

    def bodies(self) -> list[dict]:
        return [json.loads(b) for _, b in self.requests]
