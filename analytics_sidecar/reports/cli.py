"""`novacron-analytics report`: run reports now, serve them on their cron schedules, or check the config."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from datetime import datetime
from typing import Any

from exporters.common.cli import add_web_flags, setup_logging
from exporters.common.config import ConfigError

log = logging.getLogger(__name__)
PROG = "novacron-analytics report"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="scheduled PDF/CSV/HTML reports from PromQL templates",
        description="Scheduled reports: YAML templates of PromQL sections, rendered to "
        "PDF, CSV and HTML e-mail, archived with retention.",
    )
    sub = parser.add_subparsers(dest="report_command", metavar="ACTION")
    for name, func, text in (
        ("run", _cmd_run, "render reports now (all, or --report NAME), archive and e-mail them"),
        ("serve", _cmd_serve, "run every report on its cron schedule; /metrics about the runs"),
        ("check", _cmd_check, "validate the config and templates (exit 2 naming the bad key)"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config.file", dest="config_file", required=True, help="reports YAML config")
        if name == "run":
            p.add_argument("--report", action="append", help="only this report (repeatable)")
            p.add_argument("--at", help="end of the report period (ISO 8601, UTC; default now)")
            p.add_argument("--no-email", action="store_true", help="archive only, do not send e-mail")
        if name == "serve":
            add_web_flags(p, default_port=9417)
        else:
            p.add_argument(
                "--log.level", dest="log_level", default="info", choices=("debug", "info", "warn", "error")
            )
        p.set_defaults(func=func)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _load(args: argparse.Namespace) -> Any:
    from analytics_sidecar.reports.config import load_config

    setup_logging(args.log_level)
    try:
        return load_config(args.config_file)
    except ConfigError as exc:
        print(f"{PROG}: invalid configuration: {exc}", file=sys.stderr)
        return None


def _cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 2
    for spec in config.reports:
        print(
            f"{spec.name}: schedule {spec.schedule!r}, formats {','.join(spec.formats)}, "
            f"{len(spec.template.sections)} sections, e-mail to {len(spec.email_to)}"
        )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from analytics_sidecar.reports.data import QueryError
    from analytics_sidecar.reports.runner import run_report

    config = _load(args)
    if config is None:
        return 2
    wanted = set(args.report or [])
    unknown = wanted - {r.name for r in config.reports}
    if unknown:
        print(f"{PROG}: unknown report(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    try:
        end = datetime.fromisoformat(args.at.replace("Z", "+00:00")).timestamp() if args.at else time.time()
    except ValueError:
        print(f"{PROG}: --at must be an ISO 8601 time, got {args.at!r}", file=sys.stderr)
        return 2
    status = 0
    for spec in config.reports:
        if wanted and spec.name not in wanted:
            continue
        try:
            result = run_report(config, spec, end=end, email=not args.no_email)
        except QueryError as exc:
            print(f"{PROG}: {spec.name}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(
            f"{spec.name}: {result.directory} ({', '.join(result.files)})"
            f"{' e-mailed' if result.emailed else ''}"
        )
        if spec.email_to and not args.no_email and not result.emailed:
            status = 1
    return status


def _cmd_serve(args: argparse.Namespace) -> int:
    from analytics_sidecar.reports.runner import ReportMetrics, schedule_loop
    from exporters.common.web import ExporterApp, registry_with, serve_in_thread
    from exporters.common.webconfig import load_web_config

    config = _load(args)
    if config is None:
        return 2
    try:
        web_config = load_web_config(args.web_config_file)
    except ConfigError as exc:
        print(f"{PROG}: invalid configuration: {exc}", file=sys.stderr)
        return 2
    registry = registry_with()
    metrics = ReportMetrics(registry)
    app = ExporterApp("novacron-reports", registry, args.telemetry_path, web_config)
    server = serve_in_thread(app, args.listen_address)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("scheduling %d reports", len(config.reports))
    try:
        schedule_loop(config, stop, metrics)
    finally:
        server.shutdown()
    return 0
