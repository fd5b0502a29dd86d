"""Reading Prometheus through prometheus-api-client: range queries chunked, cached, retried; VMs sharded."""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from analytics_sidecar.config import PrometheusSettings, Shard
from analytics_sidecar.series import Series

log = logging.getLogger(__name__)

_DROP = {"__name__", "job", "instance"}


Chunk = tuple[dict[str, str], np.ndarray, np.ndarray]  # labels, time stamps, values of one series


class SourceError(RuntimeError):
    """Prometheus could not answer (after retries); the cycle keeps the previous results."""


def shard_of(vm_id: str, count: int) -> int:
    """Stable hash of the VM id (CRC-32, the same on every replica and Python run) modulo the shard count."""
    return zlib.crc32(vm_id.encode()) % count


def in_shard(vm_id: str, shard: Shard) -> bool:
    return shard.count == 1 or shard.owns(shard_of(vm_id, shard.count))


def vm_filter(ids: Iterable[str] | None) -> str:
    """The `$vm_filter` label matcher: every VM, or a regex of exactly these ids (quoted for PromQL)."""
    if ids is None:
        return 'vm_id!=""'
    regex = "|".join(re.escape(i) for i in sorted(ids)) or "^$"
    return 'vm_id=~"' + regex.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class SourceStats:
    """Counters for the sidecar's own metrics."""

    queries: int = 0
    failures: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def query_retry(retries: int) -> Retry:
    """Retries of a query on connection errors and 429/5xx answers, with backoff (queries are idempotent)."""
    return Retry(
        total=retries,
        backoff_factor=0.5,
        status_forcelist=(429, 502, 503, 504),
        allowed_methods=frozenset({"GET", "POST"}),
        raise_on_status=False,
    )


class PromSource:
    """Instant and range queries; range results are split into aligned chunks and completed chunks cached."""

    def __init__(
        self,
        settings: PrometheusSettings,
        step: float,
        chunk: float,
        clock: Callable[[], float],
        stats: SourceStats | None = None,
    ) -> None:
        retry = query_retry(settings.retries)
        headers = {"Authorization": f"Bearer {settings.bearer_token}"} if settings.bearer_token else None
        auth = (settings.username, settings.password or "") if settings.username else None
        # prometheus-api-client puts the query in the URL even for POST; a shard's vm_id regex is
        # therefore split into batches of analysis.batch_size ids (see Engine._vm_ids).
        self.client = PrometheusConnect(
            url=settings.url,
            headers=headers,
            disable_ssl=settings.tls_insecure_skip_verify,
            retry=retry,
            auth=auth,
            timeout=int(math.ceil(settings.timeout)),
            method="POST",
        )
        self.step = step
        self.chunk = chunk
        self.clock = clock
        self.stats = stats or SourceStats()
        # Cached chunks hold numpy arrays (16 bytes a point), not the decoded JSON (about ten times more).
        self._cache: dict[tuple[str, float], list[Chunk]] = {}

    def _call(self, fn: Callable[..., list[dict[str, Any]]], *args: Any) -> list[dict[str, Any]]:
        try:
            result = fn(*args)
        except (PrometheusApiClientException, requests.RequestException, ValueError, KeyError) as exc:
            with self.stats.lock:
                self.stats.queries += 1
                self.stats.failures += 1
            raise SourceError(f"Prometheus query failed: {exc}") from None
        with self.stats.lock:
            self.stats.queries += 1
        return result

    def instant(self, query: str) -> list[dict[str, Any]]:
        return self._call(self.client.custom_query, query)

    def instant_values(self, query: str, key: str | tuple[str, ...] = "vm_id") -> dict[Any, float]:
        out: dict[Any, float] = {}
        for r in self.instant(query):
            k = _key(r["metric"], key)
            if k is not None:
                out[k] = float(r["value"][1])
        return out

    def range(
        self, query: str, start: float, end: float, key: str | tuple[str, ...] = "vm_id"
    ) -> dict[Any, Series]:
        """Series per key over [start, end] at `step`; chunks that ended before the newest step are cached."""
        parts: dict[Any, list[tuple[np.ndarray, np.ndarray]]] = {}
        for c_start in _chunk_starts(start, end, self.chunk):
            for metric, t, v in self._chunk(query, c_start, end):
                k = _key(metric, key)
                if k is not None:
                    parts.setdefault(k, []).append((t, v))
        # The grid is aligned on multiples of `step` (so chunks cache); the point at `end` itself is read by
        # an instant query, so a VM started a minute ago is analysed now, not at the next grid point.
        if end % self.step:
            for r in self._call(self.client.custom_query, query, {"time": f"{end:.3f}"}):
                k = _key(r["metric"], key)
                if k is not None:
                    point = np.array(r["value"], dtype=float)
                    parts.setdefault(k, []).append((point[:1], point[1:]))
        self._evict(start)
        out: dict[Any, Series] = {}
        for k, chunks in parts.items():
            s = Series.of(np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]))
            out[k] = s.since(start)
        return out

    def _chunk(self, query: str, c_start: float, end: float) -> list[Chunk]:
        c_end = c_start + self.chunk - self.step
        complete = c_end < end - self.step
        cache_key = (query, c_start)
        if complete and cache_key in self._cache:
            with self.stats.lock:
                self.stats.cache_hits += 1
            return self._cache[cache_key]
        with self.stats.lock:
            self.stats.cache_misses += 1
        q_end = min(c_end, math.floor(end / self.step) * self.step)
        result = self._call(
            self.client.custom_query_range,
            query,
            _dt(c_start),
            _dt(q_end),
            f"{int(self.step)}s",
        )
        chunks: list[Chunk] = []
        for r in result:
            vals = np.array(r["values"], dtype=float).reshape(-1, 2)
            chunks.append((r["metric"], vals[:, 0].copy(), vals[:, 1].copy()))
        if complete:
            self._cache[cache_key] = chunks
        return chunks

    def _evict(self, start: float) -> None:
        for k in [k for k in self._cache if k[1] + self.chunk < start]:
            del self._cache[k]


def _chunk_starts(start: float, end: float, chunk: float) -> list[float]:
    first = math.floor(start / chunk) * chunk
    return [float(c) for c in np.arange(first, end + 1e-9, chunk)]


def _dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def _key(metric: Mapping[str, str], key: str | tuple[str, ...]) -> Any:
    if isinstance(key, str):
        return metric.get(key)
    values = tuple(metric.get(k) for k in key)
    return None if any(v is None for v in values) else values


def labels_of(metric: Mapping[str, str]) -> dict[str, str]:
    """A result's labels without the name and the scrape target's job/instance."""
    return {k: v for k, v in metric.items() if k not in _DROP}
