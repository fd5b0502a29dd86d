"""Per-series anomaly state for the sidecar: incremental updates, kept over restarts, write-back metrics.

The sidecar's cycle calls `AnomalyEngine.update(key, timestamps, values)` for every monitored series; only
points newer than the last one seen are scored, so a cycle reads each point once. State is pickled per series
under the state directory (temp file, fsync, rename: a kill mid-write never leaves half a file) with a JSON
index of every series' last scored timestamp, and reloaded lazily after a restart; the sidecar also saves on
shutdown. `AnomalyCollector` exposes the results:

    # HELP novacron_anomaly_score Calibrated anomaly score of the series (0 normal .. 1 certainly anomalous).
    # TYPE novacron_anomaly_score gauge
    novacron_anomaly_score{resource="cpu",vm_id="vm-1"} 0.02
    # HELP novacron_baseline_upper Upper edge of the learned (seasonal) baseline band, in the series' unit.
    # TYPE novacron_baseline_upper gauge
    novacron_baseline_upper{resource="cpu",vm_id="vm-1"} 0.71
    novacron_baseline_lower{resource="cpu",vm_id="vm-1"} 0.12
    novacron_anomaly_alarms_total{resource="cpu",vm_id="vm-1"} 3.0
    novacron_anomaly_points_scored_total 1440.0
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from analytics_sidecar.anomaly.detector import AnomalyDetector, DetectorParams

log = logging.getLogger(__name__)

STATE_VERSION = 2  # 2: the detector gained the shape gate; older detector objects lack its state
INDEX_FILE = "index.json"  # {"version", "saved_at", "series": {ident: {"file", "last_t", "points"}}}
TRACE_LENGTH = 360  # recent (t, value, score) kept per series for correlation
EPISODES_KEPT = 32


@dataclass
class Episode:
    """One anomalous stretch of a series: onset, end (None while ongoing) and the peak score reached."""

    onset: float
    end: float | None
    peak: float


@dataclass(frozen=True)
class SeriesKey:
    """Identity of a monitored series: the VM (or host) and the resource (cpu, memory, disk_read, ...)."""

    vm_id: str
    resource: str
    host: str = ""
    tenant: str = ""
    kind: str = "vm"  # "vm" or "host": a host series is a candidate cause of its VMs' anomalies

    @property
    def ident(self) -> str:
        return f"{self.kind}:{self.vm_id}:{self.resource}"


@dataclass
class SeriesState:
    """Everything kept for one series: the detector, the last point seen, the latest output, a short trace."""

    key: SeriesKey
    detector: AnomalyDetector
    last_t: float = -math.inf
    score: float = 0.0
    upper: float = math.nan
    lower: float = math.nan
    alarms: int = 0
    onset: float | None = None  # start of the current anomalous episode, None when normal
    episodes: deque[Episode] = field(default_factory=lambda: deque(maxlen=EPISODES_KEPT))
    trace: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=TRACE_LENGTH))


class AnomalyEngine:
    """Thread-safe registry of per-series detectors; `update` is the sidecar cycle's entry point."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        params: DetectorParams | None = None,
        episode_threshold: float | None = None,
        autosave_seconds: float = 60.0,
    ) -> None:
        self.params = params or DetectorParams()
        self.state_dir = Path(state_dir) if state_dir else None
        # An episode (for incidents) starts when the score crosses this and ends below half of it.
        self.episode_threshold = self.params.threshold if episode_threshold is None else episode_threshold
        self._series: dict[str, SeriesState] = {}
        self._dirty: set[str] = set()
        self._lock = threading.RLock()
        # Changed series are written at most this often from `update`; a restart re-scores the few points lost
        # since (the caller passes recent history, and only points after the saved last_t are scored).
        self.autosave_seconds = autosave_seconds
        self._last_save = time.monotonic()
        # Points scored by this process (each point once, also across restarts): a restart that re-scored
        # history would show here as a jump of a whole warm-up window.
        self.points_scored = 0
        self._index: dict[str, dict[str, object]] = {}
        if self.state_dir:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._index = self._read_index()
            for stale in self.state_dir.glob("*.tmp"):  # left by a process killed mid-write
                stale.unlink(missing_ok=True)

    def update(
        self, key: SeriesKey, timestamps: Sequence[float], values: Sequence[float]
    ) -> tuple[float, float, float]:
        """Score the points newer than the last seen; return (score, upper, lower) of the latest point."""
        if len(timestamps) != len(values):
            raise ValueError("timestamps and values differ in length")
        with self._lock:
            st = self._get(key)
            for t, x in zip(timestamps, values, strict=True):
                t = float(t)
                if t <= st.last_t:
                    continue  # already scored in an earlier cycle
                self._score_point(st, t, float(x))
            if timestamps:
                self._dirty.add(key.ident)
            if self.state_dir and time.monotonic() - self._last_save >= self.autosave_seconds:
                self.save()
            return st.score, st.upper, st.lower

    def _score_point(self, st: SeriesState, t: float, x: float) -> None:
        out = st.detector.update(t, x)
        st.last_t = t
        self.points_scored += 1
        st.score, st.upper, st.lower = out.score, out.upper, out.lower
        if out.alarm:
            st.alarms += 1
        # Episodes use the raw calibrated likelihood too, so suppression does not end an episode early.
        level = max(out.score, out.likelihood)
        if st.onset is None and level >= self.episode_threshold:
            st.onset = t
            st.episodes.append(Episode(t, None, level))
        elif st.onset is not None:
            ep = st.episodes[-1]
            ep.peak = max(ep.peak, level)
            if level < self.episode_threshold / 2:
                st.onset, ep.end = None, t
        st.trace.append((t, x, level))

    def _get(self, key: SeriesKey) -> SeriesState:
        st = self._series.get(key.ident)
        if st is None:
            st = self._load(key) or SeriesState(key, AnomalyDetector(self.params))
            self._series[key.ident] = st
        return st

    @property
    def lock(self) -> threading.RLock:
        """Hold while reading series states in depth (episodes, traces) from another thread."""
        return self._lock

    def series(self) -> list[SeriesState]:
        """Snapshot of every series' state (the objects are live; read, do not mutate)."""
        with self._lock:
            return list(self._series.values())

    def forget(self, key: SeriesKey) -> None:
        """Drop a series (VM deleted) and its saved state."""
        with self._lock:
            self._series.pop(key.ident, None)
            self._dirty.discard(key.ident)
            path = self._path(key)
            if path is not None and path.exists():
                path.unlink()
            if self._index.pop(key.ident, None) is not None:
                self._write_index()

    # --- persistence -------------------------------------------------------------------------------------

    def _path(self, key: SeriesKey) -> Path | None:
        if self.state_dir is None:
            return None
        digest = hashlib.sha256(key.ident.encode()).hexdigest()[:32]
        return self.state_dir / f"{digest}.pkl"

    def save(self) -> int:
        """Write every changed series' state and the index (each file atomically); returns the number written.

        Safe to call from another thread while cycles run (shutdown): it holds the engine lock, so every
        series is saved between two of its updates, never half-updated."""
        if self.state_dir is None:
            return 0
        with self._lock:
            dirty = [self._series[i] for i in self._dirty if i in self._series]
            for st in dirty:
                path = self._path(st.key)
                assert path is not None
                blob = pickle.dumps({"version": STATE_VERSION, "params": self.params, "state": st})
                _atomic_write(path, blob)
                self._index[st.key.ident] = {
                    "file": path.name,
                    "last_t": st.last_t if math.isfinite(st.last_t) else None,
                    "points": int(getattr(st.detector, "n", 0)),
                }
            if dirty:
                self._write_index()
            self._dirty.clear()
            self._last_save = time.monotonic()
            return len(dirty)

    def _write_index(self) -> None:
        assert self.state_dir is not None
        doc = {"version": STATE_VERSION, "saved_at": time.time(), "series": self._index}
        _atomic_write(self.state_dir / INDEX_FILE, json.dumps(doc, indent=1, sort_keys=True).encode())

    def _read_index(self) -> dict[str, dict[str, object]]:
        """The previous process' index (kept for series not yet reloaded); unreadable -> logged, empty."""
        assert self.state_dir is not None
        path = self.state_dir / INDEX_FILE
        if not path.exists():
            return {}
        try:
            doc = json.loads(path.read_text())
            series = doc["series"]
            if not isinstance(series, dict) or not all(isinstance(v, dict) for v in series.values()):
                raise ValueError("series is not a mapping of mappings")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("anomaly state index %s unreadable (%s); ignoring it", path, exc)
            return {}
        log.info("anomaly state: %d series saved by the previous run", len(series))
        return dict(series)

    def _load(self, key: SeriesKey) -> SeriesState | None:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            # The state dir is the sidecar's own private directory; nothing else writes there.
            with open(path, "rb") as fh:
                blob = pickle.load(fh)  # noqa: S301
            if not isinstance(blob, dict) or not isinstance(blob.get("state"), SeriesState):
                raise ValueError("not a series state")
        except Exception as exc:  # truncated or garbled bytes raise almost anything from pickle
            log.warning(
                "anomaly state %s unreadable (%s); starting the series afresh", path.name, type(exc).__name__
            )
            return None
        if blob.get("version") != STATE_VERSION or blob.get("params") != self.params:
            log.info("anomaly state %s is from other parameters; starting the series afresh", path.name)
            return None
        st: SeriesState = blob["state"]
        st.key = key  # labels like host/tenant may have changed since the save
        return st

    def load_all(self) -> int:
        """Not needed for correctness (series load lazily); returns the number of saved series on disk."""
        if self.state_dir is None:
            return 0
        return sum(1 for _ in self.state_dir.glob("*.pkl"))


class AnomalyCollector:
    """prometheus_client collector over an engine's latest outputs."""

    def __init__(self, engine: AnomalyEngine, clock=time.time) -> None:
        self.engine = engine
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        labels = ["vm_id", "resource"]
        score = GaugeMetricFamily(
            "novacron_anomaly_score",
            "Calibrated anomaly score of the series (0 normal .. 1 certainly anomalous).",
            labels=labels,
        )
        upper = GaugeMetricFamily(
            "novacron_baseline_upper",
            "Upper edge of the learned (seasonal) baseline band, in the series' unit.",
            labels=labels,
        )
        lower = GaugeMetricFamily(
            "novacron_baseline_lower",
            "Lower edge of the learned (seasonal) baseline band, in the series' unit.",
            labels=labels,
        )
        alarms = CounterMetricFamily(
            "novacron_anomaly_alarms",
            "Sparse alarms raised for the series (one per suppression window).",
            labels=labels,
        )
        scored = CounterMetricFamily(
            "novacron_anomaly_points_scored",
            "Points scored by the anomaly detectors since this process started (each point once).",
            value=self.engine.points_scored,
        )
        for st in self.engine.series():
            lv = [st.key.vm_id, st.key.resource]
            score.add_metric(lv, st.score)
            if not math.isnan(st.upper):
                upper.add_metric(lv, st.upper)
                lower.add_metric(lv, st.lower)
            alarms.add_metric(lv, st.alarms)
        yield from (score, upper, lower, alarms, scored)


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename over the target: readers see the old or the new file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def keys_from_labels(resource: str, labels: Mapping[str, str], kind: str = "vm") -> SeriesKey:
    """Build a SeriesKey from Prometheus labels joined with novacron_vm_info (vm_id, host, tenant)."""
    ident = labels.get("vm_id") or labels.get("host") or ""
    return SeriesKey(ident, resource, labels.get("host", ""), labels.get("tenant", ""), kind)
