"""`novacron cardinality`: where a Prometheus' series come from (TSDB status API, scrape metrics)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

import requests


@dataclass(frozen=True)
class CardinalityReport:
    head_series: int
    top_metrics: list[tuple[str, int]]
    top_labels: list[tuple[str, int]]
    top_label_pairs: list[tuple[str, int]]
    targets: list[tuple[str, str, int]]  # job, instance, samples per scrape
    warnings: list[str]


def _get(url: str, path: str, **params: Any) -> Any:
    try:
        resp = requests.get(f"{url.rstrip('/')}/api/v1/{path}", params=params, timeout=30)
        body = resp.json()
    except (requests.RequestException, ValueError) as exc:
        raise RuntimeError(f"cannot read {path} from {url}: {exc}") from None
    if body.get("status") != "success":
        raise RuntimeError(f"{path} from {url}: {body.get('error', resp.status_code)}")
    return body["data"]


def _pairs(items: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(str(i["name"]), int(i["value"])) for i in items]


def build_report(
    url: str, label_value_limit: int = 1000, target_sample_limit: int = 50000
) -> CardinalityReport:
    """Read the TSDB status and per-target sample counts; flag labels and targets past the limits."""
    tsdb = _get(url, "status/tsdb")
    samples = _get(url, "query", query="sort_desc(scrape_samples_scraped)")["result"]
    targets = [
        (r["metric"].get("job", ""), r["metric"].get("instance", ""), int(float(r["value"][1])))
        for r in samples
    ]
    labels = _pairs(tsdb.get("labelValueCountByLabelName", []))
    warnings = [
        f"label {name} has {count} values (limit {label_value_limit}): is an id or timestamp in a label?"
        for name, count in labels
        if count > label_value_limit
    ]
    warnings += [
        f"target {job}/{inst} exposes {n} samples per scrape (limit {target_sample_limit}): set "
        "sample_limit on its job and relabel away what is not needed"
        for job, inst, n in targets
        if n > target_sample_limit
    ]
    return CardinalityReport(
        head_series=int(tsdb.get("headStats", {}).get("numSeries", 0)),
        top_metrics=_pairs(tsdb.get("seriesCountByMetricName", [])),
        top_labels=labels,
        top_label_pairs=_pairs(tsdb.get("seriesCountByLabelValuePair", [])),
        targets=targets,
        warnings=warnings,
    )


def render_text(report: CardinalityReport) -> str:
    lines = [f"head series: {report.head_series}", "", "series by metric name:"]
    lines += [f"  {count:>10}  {name}" for name, count in report.top_metrics]
    lines += ["", "values by label name:"] + [f"  {count:>10}  {name}" for name, count in report.top_labels]
    lines += ["", "series by label pair:"] + [
        f"  {count:>10}  {name}" for name, count in report.top_label_pairs
    ]
    lines += ["", "samples per scrape by target:"]
    lines += [f"  {n:>10}  {job} {inst}" for job, inst, n in report.targets]
    lines += ["", "warnings:" if report.warnings else "no warnings"] + [f"  - {w}" for w in report.warnings]
    return "\n".join(lines)


def cmd_cardinality(args: argparse.Namespace) -> int:
    try:
        report = build_report(args.prometheus_url, args.label_value_limit, args.target_sample_limit)
    except RuntimeError as exc:
        print(f"novacron cardinality: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(report), indent=2) if args.format == "json" else render_text(report))
    return 1 if (args.fail_on_warning and report.warnings) else 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("cardinality", help="report where a Prometheus' series come from")
    parser.add_argument("--prometheus.url", dest="prometheus_url", default="http://127.0.0.1:9090")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--label-value-limit", type=int, default=1000, help="warn above this many values")
    parser.add_argument("--target-sample-limit", type=int, default=50000, help="warn above this many samples")
    parser.add_argument(
        "--fail-on-warning", action="store_true", help="exit 1 when there is a warning (for CI)"
    )
    parser.set_defaults(func=cmd_cardinality)
