"""The harness's history backfill and Azure managed-identity endpoint (the dashboard query test uses them)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import requests

from tests.harness.azure_identity import ManagedIdentityEndpoint
from tests.harness.backfill import History, create_blocks, grid, parse_exposition

PAGE = """# HELP novacron_vm_cpu_seconds_total CPU time.
# TYPE novacron_vm_cpu_seconds_total counter
novacron_vm_cpu_seconds_total{vm_id="a"} 12.5
novacron_vm_info{vm_id="a",host="",vm_name="a b"} 1.0
other_metric 3
"""


def test_parse_exposition_keeps_novacron_samples() -> None:
    samples = parse_exposition(PAGE)
    assert [(s.name, s.labels, s.value) for s in samples] == [
        ("novacron_vm_cpu_seconds_total", {"vm_id": "a"}, 12.5),
        ("novacron_vm_info", {"vm_id": "a", "host": "", "vm_name": "a b"}, 1.0),
    ]


def test_history_becomes_blocks_prometheus_can_read(tmp_path: Path) -> None:
    ts = grid(1_800_000_000.0, 1, 300)
    assert ts.size == 289 and ts[-1] < 1_800_000_000.0 and ts[-1] % 300 == 0
    history = History()
    samples = parse_exposition(PAGE)
    target = {"job": "j", "instance": "127.0.0.1:1"}
    history.add_like(samples, target, ts, lambda s: np.full(ts.size, s.value))
    values = np.full(ts.size, 0.5)
    values[0] = np.nan  # a gap: no sample written
    history.add("novacron_vm_cpu_utilisation_ratio", {"vm_id": "a", "empty": ""}, ts, values)
    path = history.write(tmp_path / "h.om")
    text = path.read_text()
    assert "# TYPE novacron_vm_cpu_seconds counter" in text and 'host=""' not in text and "empty" not in text
    assert history.samples == 3 * ts.size - 1
    create_blocks(path, tmp_path / "data")
    (tmp_path / "data" / "wal").mkdir()  # promtool dump opens a TSDB, which wants a WAL directory
    dump = subprocess.run(
        ["promtool", "tsdb", "dump", str(tmp_path / "data")], capture_output=True, text=True, check=True
    ).stdout
    assert dump.count("novacron_vm_cpu_utilisation_ratio") == ts.size - 1
    assert 'instance="127.0.0.1:1"' in dump and 'vm_name="a b"' in dump


def test_managed_identity_endpoint_needs_its_header() -> None:
    with ManagedIdentityEndpoint("tok") as endpoint:
        url, header = endpoint.env["IDENTITY_ENDPOINT"], endpoint.env["IDENTITY_HEADER"]
        ok = requests.get(
            url, params={"resource": "https://x"}, headers={"X-IDENTITY-HEADER": header}, timeout=5
        )
        assert ok.status_code == 200 and ok.json()["access_token"] == "tok"
        bad = requests.get(
            url, params={"resource": "https://x"}, headers={"X-IDENTITY-HEADER": "no"}, timeout=5
        )
        assert bad.status_code == 400
