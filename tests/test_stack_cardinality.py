"""`novacron cardinality` against a real Prometheus scraping a real libvirt exporter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stack.cardinality import build_report
from stack.processes import free_port
from tests.harness import libvirt_exporter, start_prometheus, test_driver_fleet

pytestmark = pytest.mark.slow


def test_report_names_the_biggest_metrics_targets_and_flags_limits(tmp_path: Path) -> None:
    uri = test_driver_fleet(tmp_path, n_domains=50)
    with libvirt_exporter(tmp_path, uri) as exporter:
        target = exporter.url.removeprefix("http://")
        scrape = [{"job_name": "libvirt", "static_configs": [{"targets": [target]}]}]
        with start_prometheus(tmp_path, scrape) as prom:
            prom.wait_for('scrape_samples_scraped{job="libvirt"} > 0', timeout=60)
            report = build_report(prom.url, label_value_limit=40, target_sample_limit=100)
            assert report.head_series > 50
            counts = [count for _name, count in report.top_metrics]
            assert counts == sorted(counts, reverse=True) and counts[0] >= 50
            for name, count in report.top_metrics[:3]:  # the report agrees with a direct count
                assert float(prom.query(f"count({{__name__={name!r}}})")[0]["value"][1]) == count
            assert any(job == "libvirt" and n > 100 for job, _inst, n in report.targets)
            assert any("label vm_id" in w for w in report.warnings)
            assert any("target libvirt/" in w and "sample_limit" in w for w in report.warnings)

            cli = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "stack.cli",
                    "cardinality",
                    f"--prometheus.url={prom.url}",
                    "--format=json",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert cli.returncode == 0, cli.stderr
            assert json.loads(cli.stdout)["head_series"] >= report.head_series - 5


def test_unreachable_prometheus_is_a_clear_error() -> None:
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "stack.cli",
            "cardinality",
            f"--prometheus.url=http://127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1
    assert "cannot read status/tsdb" in cli.stderr and "Traceback" not in cli.stderr
