"""Benchmark: bridge webhook intake (alerts/s) and end-to-end notification latency on SQLite and PostgreSQL,
with alerta-server (PostgreSQL, Prometheus webhook) on the same payloads as the anchor when installed.

    .venv/bin/python bench/bridge_intake.py [--alerts 20000] [--batch 50] [--clients 4]
        [--alerta-venv /tmp/alerta-venv]   # V/bin/pip install alerta-server psycopg2-binary gunicorn

Every alert is routed to one webhook channel whose receiver (in this process) timestamps arrival, so latency
runs from the Alertmanager-style POST to the notification's arrival: p50/p99 saturated and paced at 50/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alert_bridge.testing import ADMIN_TOKEN, WEBHOOK_TOKEN, alert, bridge_process, payload  # noqa: E402
from stack.processes import ManagedProcess, free_port, wait_until  # noqa: E402
from tests.harness.postgres import Postgres  # noqa: E402


class _KeepAlive(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a production receiver would


class Receiver:
    """Webhook sink: records when each alert's notification arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, self, threaded=True, request_handler=_KeepAlive)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __call__(self, environ, start_response):  # type: ignore[no-untyped-def]
        body = json.loads(Request(environ).get_data())
        if body.get("type") == "firing":
            with self.lock:
                self.arrived.setdefault(body["alert"]["alertname"], time.time())
        return Response("ok")(environ, start_response)


def make_batches(prefix: str, n: int, batch: int) -> list[tuple[bytes, list[str]]]:
    out = []
    for start in range(0, n, batch):
        names = [f"{prefix}{i}" for i in range(start, min(n, start + batch))]
        body = payload(
            [alert(name, host=f"h{i % 97}", severity="warning") for i, name in enumerate(names)],
            group_key=f'{{}}:{{batch="{prefix}{start}"}}',
        )
        out.append((json.dumps(body).encode(), names))
    return out


def blast(
    url: str, token: str, batches: list[tuple[bytes, list[str]]], clients: int
) -> tuple[float, dict[str, float], int]:
    """POST every batch with `clients` concurrent senders; returns elapsed, send times, failures."""
    sent: dict[str, float] = {}
    failures = 0
    lock = threading.Lock()
    local = threading.local()

    def one(item: tuple[bytes, list[str]]) -> None:
        nonlocal failures
        if not hasattr(local, "s"):
            local.s = requests.Session()
            local.s.headers["Content-Type"] = "application/json"
            if token:
                local.s.headers["Authorization"] = f"Bearer {token}"
        data, names = item
        t0 = time.time()
        resp = local.s.post(url, data=data, timeout=60)
        with lock:
            if resp.status_code in (200, 201):
                for name in names:
                    sent[name] = t0
            else:
                if not failures:
                    print(f"POST failed: HTTP {resp.status_code} {resp.text[:200]}", file=sys.stderr)
                failures += 1

    start = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, batches))
    return time.monotonic() - start, sent, failures


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def bench_bridge(label: str, storage_url: str, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    receiver = Receiver()
    config = {
        "channels": {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/hook"}},
        "incidents": {"storm_threshold": 1_000_000},
        "delivery": {"worker_interval_seconds": 0.05},
    }
    proc = bridge_process(workdir / label, config, storage_url)
    proc.argv = [*proc.argv, "--log.level=warn"]
    proc.start()
    try:
        hook = f"{proc.url}/webhook/alertmanager"
        blast(hook, WEBHOOK_TOKEN, make_batches("warm", 200, args.batch), args.clients)  # warm-up
        elapsed, sent, failures = blast(
            hook, WEBHOOK_TOKEN, make_batches("load", args.alerts, args.batch), args.clients
        )
        rate = len(sent) / elapsed
        wait_until(lambda: all(n in receiver.arrived for n in sent), timeout=300, interval=0.2)
        lat = [receiver.arrived[n] - t for n, t in sent.items() if n in receiver.arrived]
        # Paced: 50 alerts/s, one alert per POST, what an operator sees outside a storm.
        paced_sent: dict[str, float] = {}
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {WEBHOOK_TOKEN}"
        for i in range(args.paced):
            name = f"paced{i}"
            paced_sent[name] = time.time()
            s.post(hook, json=payload([alert(name, host="p")], group_key=f"p{i}"), timeout=30)
            time.sleep(0.02)
        wait_until(lambda: all(n in receiver.arrived for n in paced_sent), timeout=60, interval=0.05)
        paced = [receiver.arrived[n] - t for n, t in paced_sent.items() if n in receiver.arrived]
        admin = requests.get(
            f"{proc.url}/api/v1/alerts",
            params={"limit": 1},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
        assert admin.ok
        return {
            "store": label,
            "alerts": len(sent),
            "failed_posts": failures,
            "alerts_per_s": round(rate, 1),
            "notified": len(lat),
            "sat_p50_s": round(statistics.median(lat), 3) if lat else None,
            "sat_p99_s": round(pct(lat, 0.99), 3),
            "paced_p50_s": round(statistics.median(paced), 3) if paced else None,
            "paced_p99_s": round(pct(paced, 0.99), 3),
        }
    finally:
        proc.stop()
        receiver.server.shutdown()


def bench_alerta(pg: Postgres, args: argparse.Namespace, workdir: Path) -> dict[str, object] | None:
    venv = Path(args.alerta_venv)
    if not (venv / "bin" / "gunicorn").exists():
        print(
            f"alerta: not installed in {venv} (pip install alerta-server psycopg2-binary gunicorn)",
            file=sys.stderr,
        )
        return None
    import psycopg

    dsn = pg.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('CREATE DATABASE "alerta"')
    port = free_port()
    settings = workdir / "alertad.conf"
    settings.write_text(
        f"DATABASE_URL = 'postgresql://novacron@127.0.0.1:{pg.port}/alerta'\nAUTH_REQUIRED = False\n"
        "PLUGINS = []\nDEBUG = False\nLOG_LEVEL = 'WARNING'\n"
    )
    workers = str(args.alerta_workers)
    proc = ManagedProcess(
        "alerta",
        [
            str(venv / "bin" / "gunicorn"),
            "--preload",
            "-w",
            workers,
            "-b",
            f"127.0.0.1:{port}",
            "alerta:create_app()",
        ],
        workdir / "alerta.log",
        ready_url=f"http://127.0.0.1:{port}/management/healthcheck",
        env={"ALERTA_SVR_CONF_FILE": str(settings)},
    )
    proc.start(ready_timeout=60)
    try:
        hook = f"http://127.0.0.1:{port}/webhooks/prometheus"
        blast(hook, "", make_batches("warm", 200, args.batch), args.clients)
        elapsed, sent, failures = blast(hook, "", make_batches("load", args.alerts, args.batch), args.clients)
        count = requests.get(f"http://127.0.0.1:{port}/alerts/count", timeout=30).json().get("total")
        return {
            "store": f"alerta-server ({workers} gunicorn workers, PostgreSQL)",
            "alerts": len(sent),
            "failed_posts": failures,
            "alerts_per_s": round(len(sent) / elapsed, 1),
            "stored": count,
            "notified": "n/a (no built-in notification channels)",
        }
    finally:
        proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=50, help="alerts per webhook POST (Alertmanager groups)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--paced", type=int, default=200)
    parser.add_argument("--alerta-venv", default="/tmp/alerta-venv")
    parser.add_argument("--alerta-workers", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["sqlite", "postgresql", "alerta"])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        work = Path(tmp)
        if "sqlite" not in args.skip:
            results.append(bench_bridge("sqlite", f"sqlite:///{work / 'bridge.db'}", args, work))
            print(json.dumps(results[-1]), flush=True)
        pg = Postgres(work / "pg").start()
        try:
            if "postgresql" not in args.skip:
                results.append(bench_bridge("postgresql", pg.url, args, work))
                print(json.dumps(results[-1]), flush=True)
            if "alerta" not in args.skip:
                alerta = bench_alerta(pg, args, work)
                if alerta:
                    results.append(alerta)
                    print(json.dumps(alerta), flush=True)
        finally:
            pg.stop()
    print(
        f"\nmachine: {os.cpu_count()} cores; {args.alerts} alerts in POSTs of {args.batch}, "
        f"{args.clients} clients"
    )
    print(f"{'store':<48} {'alerts/s':>9} {'sat p50':>8} {'sat p99':>8} {'paced p50':>9} {'paced p99':>9}")
    for r in results:
        print(
            f"{r['store']:<48} {r['alerts_per_s']:>9} {r.get('sat_p50_s', '-')!s:>8} "
            f"{r.get('sat_p99_s', '-')!s:>8}"
            f" {r.get('paced_p50_s', '-')!s:>9} {r.get('paced_p99_s', '-')!s:>9}"
        )
    base = next((r for r in results if r["store"] == "sqlite"), None)
    anchor = next((r for r in results if str(r["store"]).startswith("alerta")), None)
    if base and anchor:
        print(
            "ratio bridge(SQLite)/alerta intake: "
            f"{float(base['alerts_per_s']) / float(anchor['alerts_per_s']):.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
