"""NAB scoring reproduces the published subset scores; nab-detect and nab-score commands end to end."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from analytics_sidecar.anomaly import nab_score
from analytics_sidecar.main import main

pytestmark = pytest.mark.slow

# The shared data folder sits beside the checkout (../shared/data/nab), or where NOVACRON_NAB_DIR says.
NAB = Path(
    os.environ.get("NOVACRON_NAB_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "nab")
)
WINDOWS = NAB / "labels" / "combined_windows.json"
PROFILES = NAB / "config" / "profiles.json"

REFERENCE = {
    "ARTime": (75.38, 65.48, 80.77),
    "numenta": (71.36, 65.37, 75.28),
    "windowedGaussian": (41.51, 16.53, 51.37),
}


@pytest.mark.parametrize("detector", sorted(REFERENCE))
def test_scorer_reproduces_reference_scores(detector: str) -> None:
    windows = nab_score.load_windows(WINDOWS)
    profiles = nab_score.load_profiles(PROFILES)
    corpus = nab_score.load_corpus(NAB / "results" / detector, windows)
    assert len(corpus.files) == 44 and corpus.n_windows == 83
    got = nab_score.score_corpus(corpus, profiles)
    want = dict(zip(nab_score.PROFILES, REFERENCE[detector], strict=True))
    assert {k: round(v.normalised, 2) for k, v in got.items()} == want


def test_scaled_sigmoid_matches_nab() -> None:
    assert nab_score.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert nab_score.scaled_sigmoid(0.0) == 0.0
    assert nab_score.scaled_sigmoid(3.5) == -1.0
    assert nab_score.probationary_length(10000) == 750
    assert nab_score.probationary_length(1000) == 150


def test_sweep_counts_only_the_earliest_detection_and_penalises_false_positives() -> None:
    cost = nab_score.CostMatrix(tp=1.0, fp=0.11, fn=1.0)
    from datetime import datetime, timedelta

    t0 = datetime(2020, 1, 1)
    ts = [t0 + timedelta(minutes=i) for i in range(100)]
    window = (ts[40], ts[49])
    scores = [0.0] * 100
    scores[42] = scores[45] = 1.0  # two detections in the window: only one reward
    scores[90] = 1.0  # a false positive after the window
    rows = nab_score.sweep_rows(ts, scores, [window], "f")
    table = dict(nab_score.sweep_thresholds(rows, cost))
    reward = nab_score.scaled_sigmoid(-(49 - 42 + 1) / 10) / nab_score.scaled_sigmoid(-1.0)
    fp = 0.11 * nab_score.scaled_sigmoid((90 - 49) / 9)
    assert table[1.0] == pytest.approx(reward + fp)
    assert table[1.1] == -1.0


@pytest.fixture(scope="module")
def small_nab(tmp_path_factory) -> Path:
    """Three NAB files (one per kind of behaviour) with their windows."""
    root = tmp_path_factory.mktemp("nab")
    picked = [
        "artificialNoAnomaly/art_daily_small_noise.csv",
        "artificialWithAnomaly/art_daily_jumpsup.csv",
        "realAdExchange/exchange-2_cpc_results.csv",
    ]
    windows = json.loads(WINDOWS.read_text())
    for rel in picked:
        (root / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB / "data" / rel, root / "data" / rel)
    (root / "windows.json").write_text(json.dumps({k: windows[k] for k in picked}))
    return root


def test_nab_detect_writes_one_scored_row_per_input_row(small_nab: Path, capsys) -> None:
    results = small_nab / "results"
    assert main(["nab-detect", str(small_nab / "data"), str(results), "--jobs", "2"]) == 0
    for src in sorted((small_nab / "data").glob("*/*.csv")):
        dst = results / src.parent.name / src.name
        with open(src) as a, open(dst) as b:
            inp, out = list(csv.DictReader(a)), list(csv.DictReader(b))
        assert len(inp) == len(out)
        assert [r["timestamp"] for r in inp] == [r["timestamp"] for r in out]
        assert {"timestamp", "value", "anomaly_score"} <= set(out[0])
        assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in out)
    assert "3 files" in capsys.readouterr().out

    assert (
        main(
            [
                "nab-score",
                str(results),
                "--windows",
                str(small_nab / "windows.json"),
                "--profiles",
                str(PROFILES),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    lines = {
        line.split()[0]: line.split() for line in text.splitlines() if line.startswith(nab_score.PROFILES)
    }
    assert set(lines) == set(nab_score.PROFILES)
    for fields in lines.values():
        assert -100.0 <= float(fields[1]) <= 100.0


def test_nab_detect_is_the_production_detector(small_nab: Path, tmp_path: Path) -> None:
    """The command runs the same code path as the engine, so scores match the engine's point by point."""
    from analytics_sidecar.anomaly.detector import AnomalyDetector

    src = small_nab / "data" / "artificialWithAnomaly" / "art_daily_jumpsup.csv"
    from analytics_sidecar.anomaly.nab import detect_file

    detect_file(src, tmp_path / "out.csv")
    det = AnomalyDetector()
    with open(src) as a, open(tmp_path / "out.csv") as b:
        for rin, rout in zip(csv.DictReader(a), csv.DictReader(b), strict=True):
            o = det.update(nab_score.epoch_seconds(rin["timestamp"]), float(rin["value"]))
            assert f"{o.score:.6f}" == rout["anomaly_score"]


def test_nab_detect_does_not_depend_on_the_local_time_zone(
    small_nab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NAB times carry no zone and mean UTC: the scores are the same on a machine in Kathmandu (UTC+5:45,
    which moves the detector's daily buckets if the times are read as local ones) as on one in UTC."""
    import time

    from analytics_sidecar.anomaly.nab import detect_file

    src = small_nab / "data" / "artificialWithAnomaly" / "art_daily_jumpsup.csv"
    out: dict[str, str] = {}
    try:
        for tz in ("UTC", "Asia/Kathmandu"):
            monkeypatch.setenv("TZ", tz)
            time.tzset()
            detect_file(src, tmp_path / f"{tz.replace('/', '-')}.csv")
            out[tz] = (tmp_path / f"{tz.replace('/', '-')}.csv").read_text()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert out["Asia/Kathmandu"] == out["UTC"]


def test_bad_inputs_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["nab-detect", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    (tmp_path / "empty").mkdir()
    assert (
        main(["nab-score", str(tmp_path / "empty"), "--windows", str(WINDOWS), "--profiles", str(PROFILES)])
        == 2
    )
    (tmp_path / "d" / "cat").mkdir(parents=True)
    (tmp_path / "d" / "cat" / "x.csv").write_text("time,val\n1,2\n")
    assert main(["nab-detect", str(tmp_path / "d"), str(tmp_path / "o"), "--jobs", "1"]) == 2
    assert "expected columns" in capsys.readouterr().err
