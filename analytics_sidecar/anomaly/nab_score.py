"""NAB scoring (Numenta Anomaly Benchmark v1.1): windows, probation, scaled sigmoid, corpus threshold sweep.

Follows upstream `nab/sweeper.py` and `nab/optimizer.py`: every row outside the probationary period gets a
weighted sweep score (true-positive reward by position inside its window, false-positive penalty by distance
past the preceding window); rows of every file are pooled, sorted by anomaly score and the threshold is swept
over every distinct score; the best raw score per profile is normalised against the null and perfect scores.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

PROBATION_PERCENT = 0.15
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


@dataclass(frozen=True)
class CostMatrix:
    """Weights of one NAB scoring profile."""

    tp: float
    fp: float
    fn: float


class Row(NamedTuple):
    """One scorable row: detector score, unweighted sweep score, window key (None outside windows)."""

    score: float
    unweighted: float
    window: str | None


@dataclass(frozen=True)
class ProfileResult:
    """Best threshold of a profile, its raw and normalised score, and the score at a declared threshold."""

    profile: str
    threshold: float
    raw: float
    normalised: float
    declared_raw: float | None = None
    declared_normalised: float | None = None


def scaled_sigmoid(position: float) -> float:
    """NAB's 2*sigmoid(-5y)-1, clamped to -1 well past a window."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probationary_length(n_rows: int) -> float:
    """Rows ignored at the start of a file: min(floor(15% of rows), 750)."""
    return min(math.floor(PROBATION_PERCENT * n_rows), PROBATION_PERCENT * 5000)


def parse_time(text: str) -> datetime:
    """Parse NAB timestamps (`YYYY-MM-DD HH:MM:SS[.ffffff]`)."""
    return datetime.fromisoformat(text.strip())


def epoch_seconds(text: str) -> float:
    """A NAB timestamp as Unix seconds. NAB's times are UTC without a zone: read as local time, the detector's
    daily and weekly buckets would move with the machine's time zone and a DST change would step the clock."""
    return parse_time(text).replace(tzinfo=UTC).timestamp()


def sweep_rows(
    timestamps: Sequence[datetime],
    scores: Sequence[float],
    windows: Sequence[tuple[datetime, datetime]],
    name: str,
) -> list[Row]:
    """Unweighted sweep score per scorable row of one file (upstream `Sweeper.calcSweepScore`).

    Inside a window the profile weight is applied later as `u * tp / scaled_sigmoid(-1)`, outside as `u * fp`,
    the same arithmetic as upstream, so scores match to the last bit.
    """
    index = {t: i for i, t in reversed(list(enumerate(timestamps)))}
    probation = probationary_length(len(timestamps))
    pending = sorted(windows)
    rows: list[Row] = []
    cur_name: str | None = None
    cur_end: datetime | None = None
    cur_right = cur_width = 0.0
    prev_right: float | None = None
    prev_width = 0.0
    for i, (t, s) in enumerate(zip(timestamps, scores, strict=True)):
        if pending and t == pending[0][0]:
            start, cur_end = pending.pop(0)
            cur_name = f"{name}|{start}"
            cur_right = float(index[cur_end])
            cur_width = cur_right - index[start] + 1
        if cur_name is not None:
            unweighted = scaled_sigmoid(-(cur_right - i + 1) / cur_width)
        elif prev_right is None:
            unweighted = -1.0
        else:
            unweighted = scaled_sigmoid(abs(prev_right - i) / (prev_width - 1))
        if i >= probation:
            rows.append(Row(float(s), unweighted, cur_name))
        if cur_name is not None and t == cur_end:
            prev_right, prev_width = float(i), cur_width
            cur_name, cur_end = None, None
    return rows


def sweep_thresholds(
    rows: Iterable[Row], cost: CostMatrix, presorted: bool = False
) -> list[tuple[float, float]]:
    """(threshold, raw score) for every distinct score, detections being rows with score >= threshold."""
    ordered = rows if presorted else sorted(rows, key=lambda r: r.score, reverse=True)
    max_tp = scaled_sigmoid(-1.0)
    best: dict[str, float] = {}
    for row in ordered:
        if row.window is not None:
            best[row.window] = -cost.fn
    total = sum(best.values())
    out: list[tuple[float, float]] = []
    current = 1.1
    for row in ordered:
        if row.score != current:
            out.append((current, total))
            current = row.score
        if row.window is None:
            total += row.unweighted * cost.fp
        else:
            weighted = row.unweighted * cost.tp / max_tp
            if weighted > best[row.window]:
                total += weighted - best[row.window]
                best[row.window] = weighted
    out.append((current, total))
    return out


@dataclass
class Corpus:
    """Scores of one detector joined with the label windows, ready to sweep."""

    files: dict[str, tuple[list[datetime], list[float], list[tuple[datetime, datetime]]]]

    @property
    def n_windows(self) -> int:
        """Windows that have at least one row after probation (the ones the sweep scores)."""
        return sum(len(w) for _, _, w in self.files.values())

    def sorted_rows(self) -> list[Row]:
        """Scorable rows of every file, highest detector score first (ties keep file and row order)."""
        rows: list[Row] = []
        for key, (ts, sc, win) in self.files.items():
            rows.extend(sweep_rows(ts, sc, win, key))
        rows.sort(key=lambda r: r.score, reverse=True)
        return rows


def load_profiles(path: str | os.PathLike[str]) -> dict[str, CostMatrix]:
    """Read NAB's config/profiles.json."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    out = {}
    for name, spec in data.items():
        m = spec["CostMatrix"]
        out[name] = CostMatrix(float(m["tpWeight"]), float(m["fpWeight"]), float(m["fnWeight"]))
    return out


def load_windows(path: str | os.PathLike[str]) -> dict[str, list[tuple[datetime, datetime]]]:
    """Read NAB's labels/combined_windows.json keyed by `<category>/<file>.csv`."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return {k: [(parse_time(a), parse_time(b)) for a, b in v] for k, v in data.items()}


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_result_file(path: Path) -> tuple[list[datetime], list[float]]:
    """Read a results CSV (`timestamp,...,anomaly_score,...`), plain or gzip."""
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "anomaly_score" not in reader.fieldnames:
            raise ValueError(f"{path}: no anomaly_score column")
        ts, sc = [], []
        for rec in reader:
            ts.append(parse_time(rec["timestamp"]))
            sc.append(float(rec["anomaly_score"]))
    return ts, sc


def result_key(category: str, filename: str) -> str:
    """Map a results file name (`<detector>_<name>.csv[.gz]` or `<name>.csv`) to its label key."""
    name = filename[:-3] if filename.endswith(".gz") else filename
    return f"{category}/{name}"


def load_corpus(
    results_dir: str | os.PathLike[str], windows: dict[str, list[tuple[datetime, datetime]]]
) -> Corpus:
    """Join every results file under RESULTS_DIR/<category>/ with its label windows."""
    root = Path(results_dir)
    files: dict[str, tuple[list[datetime], list[float], list[tuple[datetime, datetime]]]] = {}
    for category in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(category.iterdir()):
            if not (path.name.endswith(".csv") or path.name.endswith(".csv.gz")):
                continue
            key = _match_label(category.name, path.name, windows)
            if key is None:
                continue
            ts, sc = read_result_file(path)
            files[key] = (ts, sc, windows[key])
    if not files:
        raise ValueError(f"{root}: no results files matching the label windows")
    return Corpus(files)


def _match_label(category: str, filename: str, windows: dict) -> str | None:
    # Published results are named `<detector>_<file>.csv`; ours are `<file>.csv`.
    key = result_key(category, filename)
    if key in windows:
        return key
    base = key.split("/", 1)[1]
    for label in windows:
        cat, name = label.split("/", 1)
        if cat == category and base.endswith("_" + name):
            return label
    return None


def score_corpus(
    corpus: Corpus, profiles: dict[str, CostMatrix], declared_threshold: float | None = None
) -> dict[str, ProfileResult]:
    """Best normalised score per profile (threshold swept over the pooled corpus)."""
    out = {}
    n_windows = corpus.n_windows
    rows = corpus.sorted_rows()
    for name, cost in profiles.items():
        table = sweep_thresholds(rows, cost, presorted=True)
        threshold, raw = max(table, key=lambda tr: tr[1])
        null, perfect = -cost.fn * n_windows, cost.tp * n_windows
        declared = _at_threshold(table, declared_threshold) if declared_threshold is not None else None
        out[name] = ProfileResult(
            profile=name,
            threshold=threshold,
            raw=raw,
            normalised=_normalise(raw, null, perfect),
            declared_raw=declared,
            declared_normalised=None if declared is None else _normalise(declared, null, perfect),
        )
    return out


def _normalise(raw: float, null: float, perfect: float) -> float:
    return 100.0 * (raw - null) / (perfect - null)


def _at_threshold(table: list[tuple[float, float]], threshold: float) -> float:
    """Raw score with detections = rows scoring >= threshold (rows are sorted by descending threshold)."""
    raw = table[0][1]
    for t, r in table:
        if t < threshold:
            break
        raw = r
    return raw


def score_categories(corpus: Corpus, profiles: dict[str, CostMatrix], thresholds: dict[str, float]) -> dict:
    """Normalised score per category at the corpus-optimal threshold of each profile."""
    by_cat: dict[str, dict[str, float]] = {}
    cats = sorted({k.split("/", 1)[0] for k in corpus.files})
    for cat in cats:
        sub = Corpus({k: v for k, v in corpus.files.items() if k.startswith(cat + "/")})
        by_cat[cat] = {}
        rows = sub.sorted_rows()
        for name, cost in profiles.items():
            raw = _at_threshold(sweep_thresholds(rows, cost, presorted=True), thresholds[name])
            w = sub.n_windows
            by_cat[cat][name] = _normalise(raw, -cost.fn * w, cost.tp * w) if w else float("nan")
            by_cat[cat][name + "_raw"] = raw
    return by_cat
