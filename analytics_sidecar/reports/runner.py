"""Produce one report run (query, render, archive, e-mail) and schedule runs from cron expressions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from croniter import croniter  # type: ignore[import-untyped]
from prometheus_client import Counter, Gauge
from prometheus_client.registry import CollectorRegistry

from analytics_sidecar.reports import deliver, render
from analytics_sidecar.reports.config import ReportsConfig, ReportSpec
from analytics_sidecar.reports.data import PrometheusClient, collect

log = logging.getLogger(__name__)


class ReportMetrics:
    """Self-metrics of the report scheduler, served on its /metrics.

    Sample output:

        novacron_report_runs_total{report="weekly-fleet",result="success"} 12.0
        novacron_report_emails_total{report="weekly-fleet",result="sent"} 12.0
        novacron_report_last_success_timestamp_seconds{report="weekly-fleet"} 1.7641e+09
        novacron_report_duration_seconds{report="weekly-fleet"} 4.2
        novacron_report_next_run_timestamp_seconds{report="weekly-fleet"} 1.7646e+09
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "novacron_report_runs",
            "Report runs by report and result (success, failure).",
            ["report", "result"],
            registry=registry,
        )
        self.emails = Counter(
            "novacron_report_emails",
            "Report e-mails by report and result (sent, failed).",
            ["report", "result"],
            registry=registry,
        )
        self.last_success = Gauge(
            "novacron_report_last_success_timestamp_seconds",
            "Unix time of the last successful run.",
            ["report"],
            registry=registry,
        )
        self.duration = Gauge(
            "novacron_report_duration_seconds", "Duration of the last run.", ["report"], registry=registry
        )
        self.next_run = Gauge(
            "novacron_report_next_run_timestamp_seconds",
            "Unix time of the next scheduled run.",
            ["report"],
            registry=registry,
        )


@dataclass(frozen=True)
class RunResult:
    report: str
    directory: Path
    files: tuple[str, ...]
    emailed: bool


def render_files(
    spec: ReportSpec, client: PrometheusClient, end: float
) -> tuple[dict[str, bytes], str, dict]:
    """The report's files by name (report.pdf, report.csv, report.html), its HTML body and chart images."""
    data = collect(client, spec.template, end)
    files: dict[str, bytes] = {}
    if "csv" in spec.formats:
        files["report.csv"] = render.to_csv(data).encode()
    if "pdf" in spec.formats:
        files["report.pdf"] = render.to_pdf(data)
    images = render.chart_pngs(data) if spec.email_to or "html" in spec.formats else {}
    cids = {key: deliver.new_cid() for key in images}
    html = render.to_html(data, cids)
    if "html" in spec.formats:
        files["report.html"] = html.encode()
    return files, html, {"images": images, "cids": cids, "data": data}


def run_report(
    config: ReportsConfig,
    spec: ReportSpec,
    end: float | None = None,
    email: bool = True,
    metrics: ReportMetrics | None = None,
) -> RunResult:
    """One complete run. A failed e-mail does not lose the report: it is archived first."""
    started = time.monotonic()
    end = time.time() if end is None else end
    try:
        files, html, extra = render_files(spec, PrometheusClient(config.prometheus), end)
        directory = deliver.archive(config.archive, spec.name, end, files)
        for path in deliver.prune(config.archive, spec.name, time.time()):
            log.info("report %s: pruned %s", spec.name, path.name)
    except Exception:
        if metrics:
            metrics.runs.labels(spec.name, "failure").inc()
        raise
    emailed = False
    if email and spec.email_to:
        emailed = _email(
            config, spec, end, html, extra, {k: v for k, v in files.items() if k != "report.html"}, metrics
        )
    if metrics:
        metrics.runs.labels(spec.name, "success").inc()
        metrics.last_success.labels(spec.name).set(time.time())
        metrics.duration.labels(spec.name).set(time.monotonic() - started)
    log.info("report %s: archived %s", spec.name, directory)
    return RunResult(spec.name, directory, tuple(sorted(files)), emailed)


def _email(
    config: ReportsConfig,
    spec: ReportSpec,
    end: float,
    html: str,
    extra: dict,
    attachments: dict[str, bytes],
    metrics: ReportMetrics | None,
) -> bool:
    assert config.smtp is not None  # checked at config load when email.to is set
    subject = spec.subject or f"{spec.template.title} ({render.iso(end)[:10]})"
    msg = deliver.build_message(
        config.smtp.sender, spec.email_to, subject, html, extra["images"], extra["cids"], attachments
    )
    try:
        deliver.send(config.smtp, msg)
    except Exception as exc:  # OSError, SMTPException: logged and counted; the archived run stands
        log.error("report %s: e-mail failed: %s", spec.name, type(exc).__name__)
        if metrics:
            metrics.emails.labels(spec.name, "failed").inc()
        return False
    if metrics:
        metrics.emails.labels(spec.name, "sent").inc()
    return True


def next_runs(config: ReportsConfig, after: float) -> list[tuple[float, ReportSpec]]:
    """Next fire time of every report (UTC cron), soonest first."""
    runs = [(float(croniter(spec.schedule, after).get_next(float)), spec) for spec in config.reports]
    return sorted(runs, key=lambda pair: pair[0])


def schedule_loop(
    config: ReportsConfig,
    stop: threading.Event,
    metrics: ReportMetrics | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Run every report at its cron times until `stop` is set; a failing run is logged, never fatal."""
    last = clock()
    while not stop.is_set():
        upcoming = next_runs(config, last)
        if metrics:
            for when, spec in upcoming:
                metrics.next_run.labels(spec.name).set(when)
        when = upcoming[0][0]
        if stop.wait(max(0.0, when - clock())):
            return
        for due, spec in upcoming:
            if due <= when:
                try:
                    run_report(config, spec, end=due, metrics=metrics)
                except Exception as exc:
                    log.error("report %s failed: %s", spec.name, exc)
        last = when
