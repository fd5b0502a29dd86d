"""Read VM traces in the Bitbrains GWA-T-12 layout: a folder of `vm-*.csv.gz`, one VM per file."""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analytics_sidecar.series import Series

_COLUMNS = ("timestamp", "cpu_cores", "cpu_capacity_mhz", "cpu_usage_mhz", "mem_capacity_kb", "mem_usage_kb")


class TraceError(ValueError):
    """A trace folder or file is missing or malformed."""


@dataclass(frozen=True)
class TraceVM:
    """One VM of a trace: time stamps, provisioned sizes and usage, as arrays."""

    vm: str
    t: np.ndarray
    cores: np.ndarray
    capacity_mhz: np.ndarray
    cpu_mhz: np.ndarray
    mem_capacity_kb: np.ndarray
    mem_kb: np.ndarray

    @property
    def mhz_per_core(self) -> float:
        """Clock of one vCPU: provisioned MHz over provisioned cores (the last sample's)."""
        return self.mhz_per_core_before(math.inf)

    def mhz_per_core_before(self, cutoff: float) -> float:
        """The same from the last sample before `cutoff` only (a backtest must not see later resizes)."""
        ok = (self.cores > 0) & np.isfinite(self.capacity_mhz) & (self.t < cutoff)
        if not ok.any():
            return float("nan")
        return float(self.capacity_mhz[ok][-1] / self.cores[ok][-1])

    def cpu_cores_used(self, mhz_per_core: float | None = None) -> Series:
        """CPU usage in cores (MHz used over MHz per core), the unit the sidecar reads from Prometheus."""
        return Series(self.t, self.cpu_mhz / (mhz_per_core or self.mhz_per_core))

    def memory_bytes_used(self) -> Series:
        return Series(self.t, self.mem_kb * 1024.0)


def vm_id_of(path: Path) -> str:
    """The VM id is the file name without its extensions (`vm-001.csv.gz` -> `vm-001`)."""
    return path.name.split(".", 1)[0]


def trace_files(trace_dir: str | Path) -> list[Path]:
    folder = Path(trace_dir)
    if not folder.is_dir():
        raise TraceError(f"{trace_dir}: not a directory")
    files = sorted(folder.glob("vm-*.csv.gz"))
    if not files:
        raise TraceError(f"{trace_dir}: no vm-*.csv.gz files")
    return files


def read_vm(path: Path) -> TraceVM:
    """Parse one file (header on line 1); rows with unparsable numbers are skipped."""
    rows: list[list[float]] = []
    try:
        with gzip.open(path, "rt", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise TraceError(f"{path}: missing columns {', '.join(missing)}")
            for row in reader:
                try:
                    rows.append([float(row[c]) for c in _COLUMNS])
                except (TypeError, ValueError):
                    continue
    except (OSError, EOFError) as exc:
        raise TraceError(f"{path}: {exc}") from None
    a = np.array(rows, dtype=float).reshape(-1, len(_COLUMNS))
    a = a[np.argsort(a[:, 0], kind="stable")]
    return TraceVM(vm_id_of(path), a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5])


def read_trace(trace_dir: str | Path) -> Iterator[TraceVM]:
    for path in trace_files(trace_dir):
        yield read_vm(path)
