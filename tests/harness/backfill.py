"""History for a real Prometheus: parse a live /metrics page, write OpenMetrics, `promtool` it into blocks.

Tests that need days of history for series a live stack exposes (the analytics sidecar needs two days before
it calls a VM idle or forecasts it) read the exporters' pages once, give each series a past with the labels
Prometheus will attach on scraping (`job`, `instance`), and turn it into TSDB blocks before Prometheus
starts. The live scrapes then continue the same series.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    """One line of an exposition page: metric name (as exposed, `_total` kept), labels, value."""

    name: str
    labels: dict[str, str]
    value: float


def parse_exposition(text: str, prefix: str = "novacron_") -> list[Sample]:
    """The samples of a text exposition page whose name starts with `prefix` (comments skipped)."""
    out = []
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        out.append(Sample(name, dict(LABEL_RE.findall(rest)), float(value)))
    return out


def grid(end: float, days: float, step: float) -> np.ndarray:
    """Time stamps every `step` seconds over the `days` before `end` (aligned on the step, `end` excluded)."""
    last = math.floor((end - 1) / step) * step
    return np.arange(last - days * 86400, last + 1, step, dtype=float)


@dataclass
class History:
    """Samples grouped by metric family, written as one OpenMetrics file for promtool.

    Series with the same name and labels must be added once. Empty label values are dropped, as Prometheus
    drops them on ingestion (otherwise the backfill and the live scrape would be two series).
    """

    families: dict[str, list[str]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    samples: int = 0

    def add(self, name: str, labels: dict[str, str], ts: np.ndarray, values: np.ndarray) -> None:
        """Add one series; a name ending in `_total` is written as a counter family."""
        family, kind = (name[: -len("_total")], "counter") if name.endswith("_total") else (name, "gauge")
        if self.types.setdefault(family, kind) != kind:
            raise ValueError(f"{name}: family {family} already added as {self.types[family]}")
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if v != "")
        lines = self.families.setdefault(family, [])
        lines.extend(
            f"{name}{{{inner}}} {float(v)!r} {int(t)}" for t, v in zip(ts, values, strict=True) if v == v
        )
        self.samples += int(np.count_nonzero(values == values))

    def add_like(
        self,
        samples: Iterable[Sample],
        target: dict[str, str],
        ts: np.ndarray,
        shape: Callable[[Sample], np.ndarray | None],
    ) -> None:
        """A past for each live sample: `shape(sample)` gives its values on `ts` (None: no history)."""
        for sample in samples:
            values = shape(sample)
            if values is not None:
                self.add(sample.name, {**sample.labels, **target}, ts, values)

    def write(self, path: Path) -> Path:
        with path.open("w") as fh:
            for family, lines in self.families.items():
                fh.write(f"# TYPE {family} {self.types[family]}\n")
                fh.write("\n".join(lines) + "\n")
            fh.write("# EOF\n")
        return path


def create_blocks(history: Path, data_dir: Path, max_block_duration: str = "240h") -> None:
    """`promtool tsdb create-blocks-from openmetrics` into a (not yet running) Prometheus data directory.

    A long maximum block duration makes promtool read its input once instead of once per 2-hour block.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [
            "promtool",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            f"--max-block-duration={max_block_duration}",
            str(history),
            str(data_dir),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"promtool failed: {out.stderr[-2000:]}")
