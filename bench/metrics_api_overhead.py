"""Metrics API overhead: p50/p99 of a dashboard query mix, direct to Prometheus vs via the API (cache off/on).

Run: .venv/bin/python bench/metrics_api_overhead.py [--vms 1000] [--rounds 40]
Starts a real Prometheus scraping a synthetic fleet (per-VM series carrying `tenant`), the API as a real
process (`novacron-metrics-api`, twice: cache off and on), and times each query of the mix, keep-alive.
Each query goes to the three paths in turn, so machine noise hits them alike. "Direct" sends Prometheus the
already tenant-scoped query, so both sides do the same PromQL work and the difference is the API's own cost
(auth, parse/rewrite, proxying, JSON) or its saving (cache).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import yaml
from werkzeug.serving import WSGIRequestHandler, make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metrics_api.promql import Policy, regex_escape, scope_query, tenant_matcher
from stack.processes import ManagedProcess, free_port, wait_until
from stack.servers import Prometheus, prometheus_config

TOKEN = "bench-token-0123456789abcdef"
TENANTS = [f"tenant{i:02d}" for i in range(10)]
MIX = [
    ("query", "sum(rate(novacron_vm_cpu_seconds_total[30s]))"),
    ("query", "topk(10, rate(novacron_vm_cpu_seconds_total[30s]))"),
    ("query", "sum by (vm_id) (rate(novacron_vm_network_receive_bytes_total[30s]))"),
    ("query", "count(novacron_vm_info)"),
    ("query", "novacron_vm_memory_bytes"),
    ("query", "avg_over_time(novacron_vm_memory_bytes[1m])"),
    ("query_range", "sum(rate(novacron_vm_cpu_seconds_total[30s]))"),
    ("query_range", "max by (vm_id) (novacron_vm_memory_bytes)"),
]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def fleet_exposition(n_vms: int) -> str:
    now = time.time()
    lines = []
    for i in range(n_vms):
        tenant = TENANTS[i % len(TENANTS)]
        ident = f'vm_id="vm-{i:05d}",tenant="{tenant}"'
        lines += [
            f'novacron_vm_info{{{ident},vm_name="vm{i}",provider="kvm",region="r1",host="h{i % 20}"}} 1',
            f"novacron_vm_memory_bytes{{{ident}}} {(i % 7 + 1) * 2**30}",
            f"novacron_vm_vcpus{{{ident}}} {i % 4 + 1}",
            f"novacron_vm_cpu_seconds_total{{{ident}}} {now * (i % 5 + 1) / 10:.3f}",
            f'novacron_vm_network_receive_bytes_total{{{ident},device="eth0"}} {now * (i % 3 + 1):.3f}',
        ]
    return "\n".join(lines) + "\n"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Client:
    """A keep-alive HTTP client with little overhead of its own (http.client, TCP_NODELAY)."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.headers = headers

    def get(self, path: str, params: dict[str, str]) -> float:
        started = time.perf_counter()
        self.conn.request("GET", f"{path}?{urlencode(params)}", headers=self.headers)
        resp = self.conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - started
        assert resp.status == 200, body[:300]
        return elapsed


def direct_policy(prom: Prometheus, tenancy: str) -> Policy:
    """The matcher the API adds for tenant 0, so "direct" asks Prometheus exactly what the API asks."""
    if tenancy == "label":
        return Policy(enforced=(tenant_matcher("tenant", [TENANTS[0]]),))
    ids = sorted(r["metric"]["vm_id"] for r in prom.query(f'novacron_vm_info{{tenant="{TENANTS[0]}"}}'))
    return Policy(enforced=(("vm_id", "=~", "|".join(regex_escape(i) for i in ids)),))


def run_interleaved(
    clients: dict[str, tuple[Client, bool]], rounds: int, policy: Policy
) -> dict[str, list[float]]:
    """Each query of the mix goes to every path in turn, so machine noise hits all paths alike."""
    timings: dict[str, list[float]] = {label: [] for label in clients}
    for _ in range(rounds):
        now = time.time()
        for kind, expr in MIX:
            for label, (client, scoped) in clients.items():
                params = {"query": scope_query(expr, policy) if scoped else expr}
                if kind == "query_range":
                    params.update(start=f"{now - 60:.0f}", end=f"{now:.0f}", step="5")
                timings[label].append(client.get(f"/api/v1/{kind}", params))
    return timings


def start_api(tmp: Path, prom_url: str, cache_ttl: float, tenancy: str) -> tuple[ManagedProcess, str]:
    config = tmp / f"api-{cache_ttl}.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "prometheus": {"url": prom_url},
                "tokens": [
                    {
                        "name": "bench",
                        "role": "viewer",
                        "tenants": [TENANTS[0]],
                        "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
                    }
                ],
                "cache": {"ttl": cache_ttl},
                "tenancy": {"mode": tenancy},
                "rate_limit": {"requests_per_second": 100000, "burst": 100000},
                "audit": {"file": str(tmp / "audit.jsonl")},
            }
        )
    )
    port = free_port()
    binary = shutil.which("novacron-metrics-api") or str(Path(sys.executable).parent / "novacron-metrics-api")
    proc = ManagedProcess(
        "metrics-api",
        [
            binary,
            "--config.file",
            str(config),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--log.level",
            "warn",
        ],
        tmp / f"api-{cache_ttl}.log",
        ready_url=f"http://127.0.0.1:{port}/-/healthy",
    )
    return proc.start(), f"http://127.0.0.1:{port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup-seconds", type=float, default=20)
    parser.add_argument(
        "--tenancy", choices=("label", "vm_id"), default="label", help="the API's tenancy.mode"
    )
    args = parser.parse_args()
    text = {"body": fleet_exposition(args.vms)}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4")])
        return [text["body"].encode()]

    def refresh() -> None:
        while True:
            time.sleep(1)
            text["body"] = fleet_exposition(args.vms)

    threading.Thread(target=refresh, daemon=True).start()
    server = make_server("127.0.0.1", free_port(), app, threaded=True, request_handler=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="bench-metrics-api-") as tmpdir:
        tmp = Path(tmpdir)
        config = prometheus_config(
            [{"job_name": "fleet", "static_configs": [{"targets": [f"127.0.0.1:{server.server_port}"]}]}],
            scrape_interval="1s",
        )
        with Prometheus(tmp / "prom", config) as prom:
            wait_until(lambda: bool(prom.query("count_over_time(novacron_vm_info[1m]) >= 5")), 60)
            time.sleep(max(0.0, args.warmup_seconds - 5))
            headers = {"Authorization": f"Bearer {TOKEN}"}
            api_off, url_off = start_api(tmp, prom.url, 0, args.tenancy)
            api_on, url_on = start_api(tmp, prom.url, 10, args.tenancy)
            policy = direct_policy(prom, args.tenancy)
            try:
                clients = {
                    "direct Prometheus (scoped query)": (Client(prom.url, {}), True),
                    "API, cache off": (Client(url_off, headers), False),
                    "API, cache on (10s TTL)": (Client(url_on, headers), False),
                }
                run_interleaved(clients, 3, policy)
                results = run_interleaved(clients, args.rounds, policy)
            finally:
                api_off.stop()
                api_on.stop()
    server.shutdown()
    base = statistics.median(results["direct Prometheus (scoped query)"])
    print(
        f"metrics API overhead ({args.tenancy} tenancy): {args.vms} VMs in {len(TENANTS)} tenants, "
        f"{len(MIX)} queries x {args.rounds} rounds, interleaved, keep-alive"
    )
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'path':36} {'p50 ms':>8} {'p99 ms':>8} {'p50 vs direct':>14}")
    for label, samples in results.items():
        p50, p99 = statistics.median(samples), percentile(samples, 0.99)
        print(f"{label:36} {p50 * 1000:8.2f} {p99 * 1000:8.2f} {p50 / base:13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
