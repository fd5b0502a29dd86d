"""`novacron-analytics recommendations`: one analysis from Prometheus, printed as a table or CSV, like KRR."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import replace
from typing import Any, TextIO

from analytics_sidecar.config import Config
from analytics_sidecar.engine import Engine, Results, VmResult
from analytics_sidecar.rightsizing import RISK_LEVELS
from analytics_sidecar.serve import add_source_flags, config_from_args
from analytics_sidecar.source import PromSource, SourceError
from exporters.common.config import ConfigError, exit_config_error

GIB = float(1 << 30)
COLUMNS = (
    "vm_id",
    "vm_name",
    "tenant",
    "provider",
    "class",
    "vcpus",
    "recommended_vcpus",
    "cpu_p95_cores",
    "memory_gib",
    "recommended_memory_gib",
    "memory_p95_gib",
    "status",
    "idle",
    "monthly_savings",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "recommendations", help="print right-sizing recommendations (table or CSV)"
    )
    add_source_flags(parser)
    parser.add_argument("--format", choices=("table", "csv"), default="table")
    parser.add_argument(
        "--risk", choices=sorted(RISK_LEVELS), default=None, help="override the configured risk"
    )
    parser.add_argument("--lookback", default=None, help="history to analyse (default: analysis.lookback)")
    parser.set_defaults(func=run)


def rows(res: Results) -> list[dict[str, Any]]:
    out = []
    for r in sorted(res.vms.values(), key=_savings_key):
        rec = r.recommendation
        out.append(
            {
                "vm_id": r.vm_id,
                "vm_name": r.labels.get("vm_name", ""),
                "tenant": r.tenant,
                "provider": r.labels.get("provider", ""),
                "class": r.patterns.workload_class if r.patterns else "",
                "vcpus": _fmt(r.vcpus, 0),
                "recommended_vcpus": rec.vcpus if rec else "",
                "cpu_p95_cores": _fmt(r.cpu_p95_cores, 2),
                "memory_gib": _fmt(r.memory_bytes and r.memory_bytes / GIB, 2),
                "recommended_memory_gib": _fmt(rec.memory_bytes / GIB, 2) if rec else "",
                "memory_p95_gib": _fmt(r.memory_p95_bytes and r.memory_p95_bytes / GIB, 2),
                "status": rec.status if rec else "no data",
                "idle": "yes" if r.idle else "no",
                "monthly_savings": _fmt(r.cost.monthly - r.cost.rightsized_monthly, 2) if r.cost else "",
            }
        )
    return out


def _savings_key(r: VmResult) -> tuple[float, str]:
    saving = (r.cost.monthly - r.cost.rightsized_monthly) if r.cost else 0.0
    return (-saving, r.vm_id)


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}"


def write_table(data: list[dict[str, Any]], out: TextIO) -> None:
    widths = {c: max(len(c), *(len(str(r[c])) for r in data)) if data else len(c) for c in COLUMNS}
    out.write("  ".join(c.upper().ljust(widths[c]) for c in COLUMNS).rstrip() + "\n")
    for r in data:
        out.write("  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS).rstrip() + "\n")


def write_csv(data: list[dict[str, Any]], out: TextIO) -> None:
    w = csv.DictWriter(out, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(data)


def analyse_once(cfg: Config) -> Results:
    source = PromSource(cfg.prometheus, cfg.analysis.step, cfg.analysis.chunk, time.time)
    return Engine(cfg, source).run()


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
        if args.risk:
            cfg = replace(cfg, rightsizing=replace(cfg.rightsizing, risk=RISK_LEVELS[args.risk]))
        if args.lookback:
            from exporters.common.config import parse_duration

            cfg = replace(
                cfg, analysis=replace(cfg.analysis, lookback=parse_duration(args.lookback, "lookback"))
            )
    except ConfigError as err:
        exit_config_error("novacron-analytics recommendations", err)
    try:
        res = analyse_once(cfg)
    except SourceError as exc:
        print(f"novacron-analytics recommendations: {exc}", file=sys.stderr)
        return 1
    data = rows(res)
    (write_csv if args.format == "csv" else write_table)(data, sys.stdout)
    return 0
