"""`nab-detect` and `nab-score` subcommands: run the production detector over NAB data and score it."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from analytics_sidecar.anomaly import nab_score
from analytics_sidecar.anomaly.detector import AnomalyDetector, DetectorParams


def detect_file(src: Path, dst: Path, params: DetectorParams | None = None) -> int:
    """Score one NAB `timestamp,value` CSV into `timestamp,value,anomaly_score,...`; returns rows written."""
    det = AnomalyDetector(params or DetectorParams())
    dst.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = dst.with_suffix(".csv.tmp")
    with open(src, encoding="utf-8", newline="") as fin, open(tmp, "w", encoding="utf-8", newline="") as fout:
        reader = csv.DictReader(fin)
        if not reader.fieldnames or not {"timestamp", "value"} <= set(reader.fieldnames):
            raise ValueError(f"{src}: expected columns timestamp,value")
        writer = csv.writer(fout)
        writer.writerow(
            ["timestamp", "value", "anomaly_score", "raw_score", "baseline_upper", "baseline_lower"]
        )
        for rec in reader:
            t = nab_score.epoch_seconds(rec["timestamp"])
            value = float(rec["value"])
            out = det.update(t, value)
            writer.writerow(
                [
                    rec["timestamp"],
                    rec["value"],
                    f"{out.score:.6f}",
                    f"{out.raw:.6f}",
                    f"{out.upper:.6g}",
                    f"{out.lower:.6g}",
                ]
            )
            n += 1
    os.replace(tmp, dst)
    return n


def _jobs(data_dir: Path, results_dir: Path) -> list[tuple[Path, Path]]:
    jobs = []
    for category in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        for src in sorted(category.glob("*.csv")):
            jobs.append((src, results_dir / category.name / src.name))
    return jobs


def _detect_job(job: tuple[Path, Path]) -> int:
    return detect_file(*job)


def cmd_detect(args: argparse.Namespace) -> int:
    data_dir, results_dir = Path(args.data_dir), Path(args.results_dir)
    if not data_dir.is_dir():
        print(f"nab-detect: DATA_DIR {data_dir} is not a directory", file=sys.stderr)
        return 2
    jobs = _jobs(data_dir, results_dir)
    if not jobs:
        print(f"nab-detect: no <category>/<name>.csv files under {data_dir}", file=sys.stderr)
        return 2
    workers = args.jobs or os.cpu_count() or 1
    try:
        if workers == 1:
            rows = sum(_detect_job(j) for j in jobs)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                rows = sum(pool.map(_detect_job, jobs))
    except ValueError as exc:
        print(f"nab-detect: {exc}", file=sys.stderr)
        return 2
    print(f"nab-detect: {len(jobs)} files, {rows} rows -> {results_dir}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    try:
        windows = nab_score.load_windows(args.windows)
        profiles = nab_score.load_profiles(args.profiles)
        corpus = nab_score.load_corpus(args.results_dir, windows)
    except (OSError, ValueError, KeyError) as exc:
        print(f"nab-score: {exc}", file=sys.stderr)
        return 2
    declared = args.threshold if args.threshold is not None else DetectorParams().threshold
    results = nab_score.score_corpus(corpus, profiles, declared)
    print(f"files {len(corpus.files)}  windows {corpus.n_windows}")
    print(
        f"{'profile':<20} {'score':>8} {'threshold':>12} {'raw':>10} {'score@' + format(declared, 'g'):>12}"
    )
    for name in profiles:
        r = results[name]
        declared_score = r.declared_normalised or 0.0
        print(f"{name:<20} {r.normalised:8.2f} {r.threshold:12.6g} {r.raw:10.3f} {declared_score:12.2f}")
    if args.per_category:
        thresholds = {k: v.threshold for k, v in results.items()}
        cats = nab_score.score_categories(corpus, profiles, thresholds)
        print(f"\n{'category':<24}" + "".join(f"{p:>20}" for p in profiles))
        for cat, vals in cats.items():
            cells = "".join(
                f"{vals[p]:20.2f}"
                if vals[p] == vals[p]
                else f"{'raw ' + format(vals[p + '_raw'], '.3f'):>20}"
                for p in profiles
            )
            print(f"{cat:<24}{cells}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `nab-detect` and `nab-score` to the novacron-analytics command."""
    p = subparsers.add_parser("nab-detect", help="run the anomaly detector over NAB data files")
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("results_dir", metavar="RESULTS_DIR")
    p.add_argument("--jobs", type=int, default=0, help="worker processes (default: one per core)")
    p.set_defaults(func=cmd_detect)
    s = subparsers.add_parser("nab-score", help="score NAB results with the published method")
    s.add_argument("results_dir", metavar="RESULTS_DIR")
    s.add_argument("--windows", required=True, metavar="FILE", help="labels/combined_windows.json")
    s.add_argument("--profiles", required=True, metavar="FILE", help="config/profiles.json")
    s.add_argument(
        "--threshold", type=float, default=None, help="declared threshold (default: the detector's)"
    )
    s.add_argument("--per-category", action="store_true", help="also print scores per category")
    s.set_defaults(func=cmd_score)
