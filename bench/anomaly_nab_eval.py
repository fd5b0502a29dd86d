"""NAB dev-subset evaluation of detector parameter variants, with a leave-one-category-out check.

Runs the production detector in memory over every dev-subset file for each variant (parameter overrides as
JSON), scores it with the project's NAB scorer (threshold swept per profile), prints the per-category scores,
and, when several variants are given, a leave-one-category-out check: for each scored category the variant is
chosen on the other categories only (best standard score there) and its score on the left-out one is shown
beside the first variant's (put the baseline first).

    .venv/bin/python bench/anomaly_nab_eval.py '{}' '{"spatial_tol": 0.05}' ...
"""

from __future__ import annotations

import csv
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

from analytics_sidecar.anomaly import nab_score
from analytics_sidecar.anomaly.detector import AnomalyDetector, DetectorParams

NAB_DIR = Path(
    os.environ.get("NOVACRON_NAB_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "nab")
)
CATS = ("artificialWithAnomaly", "realAWSCloudwatch", "realAdExchange", "realTweets")


def _read(path: Path) -> tuple[list[datetime], list[float]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [nab_score.parse_time(r["timestamp"]) for r in rows], [float(r["value"]) for r in rows]


def _run(job: tuple[str, str, str]) -> tuple[str, list[float]]:
    key, path, overrides = job
    ts, vals = _read(Path(path))
    det = AnomalyDetector(DetectorParams(**json.loads(overrides)))
    return key, [det.update(t.timestamp(), v).score for t, v in zip(ts, vals, strict=True)]


def evaluate(overrides: str, windows: dict, pool: ProcessPoolExecutor) -> nab_score.Corpus:
    """Detect every dev-subset file with the given parameter overrides; returns the scored corpus."""
    jobs = [
        (f"{p.parent.name}/{p.name}", str(p), overrides) for p in sorted((NAB_DIR / "data").glob("*/*.csv"))
    ]
    files = {}
    for key, scores in pool.map(_run, jobs):
        ts, _ = _read(NAB_DIR / "data" / key)
        files[key] = (ts, scores, windows[key])
    return nab_score.Corpus(files)


def category_scores(corpus: nab_score.Corpus, profiles: dict, cats: tuple[str, ...]) -> dict[str, float]:
    """Standard score of the sub-corpus of the given categories, threshold swept on it."""
    sub = nab_score.Corpus(
        {k: v for k, v in corpus.files.items() if k.split("/")[0] in cats or "NoAnomaly" in k}
    )
    return {n: r.normalised for n, r in nab_score.score_corpus(sub, profiles).items()}


def main() -> int:
    variants = sys.argv[1:] or ["{}"]
    windows = nab_score.load_windows(NAB_DIR / "labels" / "combined_windows.json")
    profiles = nab_score.load_profiles(NAB_DIR / "config" / "profiles.json")
    per_variant = {}
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for v in variants:
            corpus = evaluate(v, windows, pool)
            res = nab_score.score_corpus(corpus, profiles, DetectorParams().threshold)
            cats = nab_score.score_categories(corpus, profiles, {k: r.threshold for k, r in res.items()})
            line = " / ".join(f"{r.normalised:.2f}" for r in res.values())
            percat = "  ".join(f"{c[4:12]} {cats[c]['standard']:.1f}" for c in CATS)
            print(
                f"{v}\n  all {line}  @0.5 {res['standard'].declared_normalised:.2f}  | {percat}", flush=True
            )
            per_variant[v] = corpus
    if len(variants) > 1:
        print("\nleave-one-category-out (variant chosen on the other categories, standard profile):")
        for held in CATS:
            rest = tuple(c for c in CATS if c != held)
            best = max(variants, key=lambda v: category_scores(per_variant[v], profiles, rest)["standard"])
            held_score = category_scores(per_variant[best], profiles, (held,))["standard"]
            top = max(category_scores(per_variant[v], profiles, (held,))["standard"] for v in variants)
            # The first variant is the baseline: a change generalises only if choosing it on the other
            # categories beats keeping the baseline on the left-out one.
            base = category_scores(per_variant[variants[0]], profiles, (held,))["standard"]
            print(
                f"  {held:<24} chosen {best}  held-out {held_score:.2f} "
                f"(first variant {base:.2f}, best variant there {top:.2f})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
