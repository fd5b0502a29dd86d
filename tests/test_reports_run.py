"""Reports end to end: real Prometheus, PDF via pdftotext/pdftoppm, CSV against Prometheus, real SMTP."""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from pytest_httpserver import HTTPServer

from analytics_sidecar.reports import cli as report_cli
from analytics_sidecar.reports.config import load_config, load_template
from analytics_sidecar.reports.runner import ReportMetrics, run_report, schedule_loop
from exporters.common.web import registry_with
from stack.processes import free_port
from tests.harness import start_prometheus, start_smtp

pytestmark = pytest.mark.slow

VMS = [
    ("vm-a1", "web-1", "acme", 0.91),
    ("vm-b2", "db-1", "acme", 0.55),
    ("vm-c3", "batch-7", "globex", 0.12),
]
TEMPLATE = {
    "title": "Acme test report",
    "description": "Integration test of the report pipeline.",
    "range": "1m",
    "step": "2s",
    "sections": [
        {
            "title": "Utilisation section",
            "text": "Busiest VMs.",
            "items": [
                {
                    "type": "table",
                    "title": "CPU by VM",
                    "unit": "percentunit",
                    "columns": ["vm_name", "tenant"],
                    "query": "novacron_vm_cpu_utilisation_ratio * on(vm_id) group_left(vm_name, tenant) "
                    "novacron_vm_info",
                },
                {"type": "stat", "title": "VM count", "query": "count(novacron_vm_info)", "unit": "short"},
                {
                    "type": "chart",
                    "title": "CPU over time",
                    "legend": "{{vm_id}}",
                    "unit": "percentunit",
                    "query": "novacron_vm_cpu_utilisation_ratio",
                },
            ],
        }
    ],
}


def exposition() -> str:
    lines = [
        "# HELP novacron_vm_info VM identity.",
        "# TYPE novacron_vm_info gauge",
        "# HELP novacron_vm_cpu_utilisation_ratio CPU.",
        "# TYPE novacron_vm_cpu_utilisation_ratio gauge",
    ]
    for vm_id, name, tenant, cpu in VMS:
        lines.append(
            f'novacron_vm_info{{vm_id="{vm_id}",vm_name="{name}",tenant="{tenant}",provider="kvm"}} 1'
        )
        lines.append(f'novacron_vm_cpu_utilisation_ratio{{vm_id="{vm_id}"}} {cpu}')
    # The decision support's threshold suggestion for the one VM whose normal load is above 0.9.
    lines.append('novacron_vm_cpu_alert_threshold_suggested_ratio{vm_id="vm-a1",reason="normal load"} 0.99')
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = HTTPServer(host="127.0.0.1", port=free_port())
    server.expect_request("/metrics").respond_with_data(
        exposition(), content_type="text/plain; version=0.0.4"
    )
    server.start()
    target = f"127.0.0.1:{server.port}"
    try:
        with start_prometheus(
            tmp_path_factory.mktemp("prom"),
            [{"job_name": "static", "static_configs": [{"targets": [target]}]}],
        ) as prom:
            prom.wait_for("count(novacron_vm_cpu_utilisation_ratio) >= 3")
            prom.wait_for("count_over_time(novacron_vm_cpu_utilisation_ratio[1m]) >= 5")
            yield prom
    finally:
        server.stop()


def write_config(tmp: Path, prom_url: str, smtp_port: int | None, **report: Any) -> Path:
    (tmp / "tpl.yaml").write_text(yaml.safe_dump(TEMPLATE))
    config: dict[str, Any] = {
        "prometheus": {"url": prom_url},
        "archive": {"dir": str(tmp / "archive"), "retention": "30d"},
        "reports": [
            {
                "name": "acme-daily",
                "template": "tpl.yaml",
                "schedule": "0 6 * * *",
                "formats": ["pdf", "csv", "html"],
                **report,
            }
        ],
    }
    if smtp_port:
        config["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "from": "reports@novacron.test"}
    path = tmp / "reports.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    report_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_report_pdf_csv_and_email(prometheus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with start_smtp() as smtp:
        path = write_config(
            tmp_path, prometheus.url, smtp.port, email={"to": ["ops@acme.test"], "subject": "Acme daily"}
        )
        end = float(int(time.time()))  # --at takes whole seconds: the CSV is compared at this very time
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end))
        assert cli(["report", "run", "--config.file", str(path), "--at", at]) == 0
        run_dir = next((tmp_path / "archive" / "acme-daily").iterdir())
        assert sorted(p.name for p in run_dir.iterdir()) == ["report.csv", "report.html", "report.pdf"]

        # PDF: real text (pdftotext) and renderable pages (pdftoppm).
        pdf = run_dir / "report.pdf"
        text = subprocess.run(
            ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
        ).stdout
        for needle in (
            "Acme test report",
            "Utilisation section",
            "CPU by VM",
            "web-1",
            "91.0%",
            "CPU over time",
        ):
            assert needle in text, needle
        subprocess.run(
            ["pdftoppm", "-png", "-r", "30", "-f", "1", "-l", "2", str(pdf), str(tmp_path / "page")],
            check=True,
        )
        pages = sorted(tmp_path.glob("page*.png"))
        assert len(pages) == 2 and all(p.stat().st_size > 1000 for p in pages)

        # CSV: the table values equal what Prometheus answers for the same query at the same time.
        rows = list(csv.DictReader(io.StringIO((run_dir / "report.csv").read_text())))
        table = {r["series"]: float(r["value"]) for r in rows if r["item"] == "CPU by VM"}
        expected = requests.get(
            f"{prometheus.url}/api/v1/query",
            timeout=10,
            params={"query": TEMPLATE["sections"][0]["items"][0]["query"], "time": end},
        ).json()["data"]["result"]
        assert len(table) == 3
        for sample in expected:
            key = f"vm_name={sample['metric']['vm_name']},tenant={sample['metric']['tenant']}"
            assert table[key] == float(sample["value"][1])
        assert [float(r["value"]) for r in rows if r["item"] == "VM count"] == [3.0]
        chart = [r for r in rows if r["item"] == "CPU over time"]
        assert {r["series"] for r in chart} == {"vm-a1", "vm-b2", "vm-c3"} and len(chart) >= 6

        # E-mail: HTML body with the table and an inline chart, PDF and CSV attached.
        msg = smtp.wait_for(lambda m: m["Subject"] == "Acme daily")
        assert msg["To"] == "ops@acme.test"
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert "web-1" in html and "91.0%" in html and 'src="cid:' in html
        names = {part.get_filename() for part in msg.iter_attachments()}
        assert {"report.pdf", "report.csv"} <= names
        images = [p for p in msg.walk() if p.get_content_type() == "image/png"]
        assert images and images[0]["Content-ID"].strip("<>") in html


def test_retention_prunes_old_runs(prometheus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_config(tmp_path, prometheus.url, None)
    base = tmp_path / "archive" / "acme-daily"
    for name in ("20200101T060000Z", "20200102T060000Z"):
        (base / name).mkdir(parents=True)
    (base / "notes").mkdir()  # not a run directory: left alone
    config = load_config(path)
    result = run_report(config, config.reports[0])
    assert sorted(p.name for p in base.iterdir()) == sorted([result.directory.name, "notes"])
    assert not result.emailed


def test_max_runs_keeps_newest(prometheus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_config(tmp_path, prometheus.url, None)
    text = path.read_text().replace("retention: 30d", "retention: 30d\n  max_runs: 2")
    path.write_text(text)
    config = load_config(path)
    now = time.time()
    dirs = [run_report(config, config.reports[0], end=now - 10 * i).directory.name for i in range(3)]
    remaining = sorted(p.name for p in (tmp_path / "archive" / "acme-daily").iterdir())
    assert remaining == sorted(dirs[:2])


def test_schedule_runs_on_cron(prometheus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_config(tmp_path, prometheus.url, None)
    path.write_text(path.read_text().replace("0 6 * * *", "'* * * * * */2'"))  # every 2 s (seconds field)
    config = load_config(path)
    registry = registry_with()
    metrics = ReportMetrics(registry)
    stop = threading.Event()
    thread = threading.Thread(target=schedule_loop, args=(config, stop, metrics), daemon=True)
    thread.start()
    base = tmp_path / "archive" / "acme-daily"

    def successes() -> float:
        labels = {"report": "acme-daily", "result": "success"}
        return registry.get_sample_value("novacron_report_runs_total", labels) or 0.0

    # Each run renders a PDF: a loaded machine can take seconds per run. Wait for two finished runs (the
    # counter goes up after the archive is written), not only for their directories.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (len(list(base.glob("2*"))) < 2 or successes() < 2):
        time.sleep(0.2)
    stop.set()
    thread.join(30)
    assert len(list(base.glob("2*"))) >= 2
    assert successes() >= 2


def test_email_failure_keeps_archive_and_exits_1(prometheus, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write_config(tmp_path, prometheus.url, free_port(), email={"to": ["ops@acme.test"]})
    assert cli(["report", "run", "--config.file", str(path)]) == 1
    assert len(list((tmp_path / "archive" / "acme-daily").iterdir())) == 1


def test_prometheus_errors_are_reported_cleanly(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write_config(tmp_path, f"http://127.0.0.1:{free_port()}", None)
    assert cli(["report", "run", "--config.file", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Prometheus unreachable" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda c: c["reports"][0].update(schedule="every monday"), "reports[0].schedule"),
        (lambda c: c["reports"][0].update(colour="red"), "reports[0].colour"),
        (lambda c: c["reports"][0].update(email={"to": ["ops@x.test"]}), "smtp"),
        (lambda c: c["reports"][0].update(formats=["docx"]), "reports[0].formats"),
        (lambda c: c["prometheus"].update(url="localhost:9090"), "prometheus.url"),
        (lambda c: c["archive"].update(retention="forever"), "archive.retention"),
        (lambda c: c["prometheus"].update(timeout="soon"), "prometheus.timeout"),
        (lambda c: c["prometheus"].update(timeout=0), "prometheus.timeout"),
        (lambda c: c.update(smtp={"host": "mail.test", "timeout": "never"}), "smtp.timeout"),
        (
            lambda c: c["reports"][0].update(
                template={
                    "title": "x",
                    "sections": [{"title": "s", "items": [{"type": "pie", "title": "t", "query": "up"}]}],
                }
            ),
            "reports[0].template.sections[0].items[0].type",
        ),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys, mutate, key) -> None:  # type: ignore[no-untyped-def]
    path = write_config(tmp_path, "http://127.0.0.1:9", None)
    config = yaml.safe_load(path.read_text())
    mutate(config)
    path.write_text(yaml.safe_dump(config))
    assert cli(["report", "check", "--config.file", str(path)]) == 2
    assert f"invalid configuration: {key}" in capsys.readouterr().err


def test_alert_threshold_template_lists_the_suggestions(prometheus) -> None:  # type: ignore[no-untyped-def]
    """Issue 11's threshold suggestions as a report: the shipped template finds the one VM that needs one."""
    from analytics_sidecar.config import PrometheusSettings
    from analytics_sidecar.reports.data import PrometheusClient, collect

    path = Path(report_cli.__file__).parent / "templates" / "alert-thresholds.yaml"
    data = collect(
        PrometheusClient(PrometheusSettings(url=prometheus.url)), load_template(path, "template"), time.time()
    )
    (table, chart) = data.sections[0].items
    assert table.columns[:4] == ["vm_name", "host", "tenant", "reason"]
    assert [row[:4] for row in table.rows] == [["web-1", "", "acme", "normal load"]]
    assert table.rows[0][-1] == pytest.approx(0.99)
    assert chart.series and chart.series[0].points[-1][1] == 1


def test_shipped_template_parses() -> None:
    template = load_template(Path(report_cli.__file__).parent / "templates" / "weekly-fleet.yaml", "template")
    assert template.range_seconds == 7 * 86400 and len(template.sections) == 3


def test_serve_exposes_metrics_and_stops_on_sigterm(prometheus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import sys

    from tests.harness import ManagedProcess

    path = write_config(tmp_path, prometheus.url, None)
    port = free_port()
    binary = str(Path(sys.executable).parent / "novacron-analytics")
    argv = [
        binary,
        "report",
        "serve",
        "--config.file",
        str(path),
        "--web.listen-address",
        f"127.0.0.1:{port}",
    ]
    proc = ManagedProcess(
        "reports", argv, tmp_path / "serve.log", ready_url=f"http://127.0.0.1:{port}/metrics"
    )
    with proc.start(ready_timeout=60):
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline and "novacron_report_next_run_timestamp_seconds{" not in text:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            time.sleep(0.2)
        assert 'novacron_report_next_run_timestamp_seconds{report="acme-daily"}' in text
        assert proc.proc is not None
        proc.proc.terminate()
        assert proc.proc.wait(timeout=30) == 0
