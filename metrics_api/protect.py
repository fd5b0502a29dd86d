"""Protection for Prometheus: a TTL cache for identical upstream requests, per-principal rate limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from cachetools import TTLCache


class ResultCache:
    """LRU with a time-to-live; keys are the exact upstream request, so entries are safe to share.

    Two callers with the same scoped query ask Prometheus the same thing and get the same answer; a caller
    with other tenants has other matchers in its query and so another key.
    """

    def __init__(
        self, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl_seconds
        self._data: TTLCache[tuple[Any, ...], Any] | None = (
            TTLCache(max_entries, ttl_seconds, timer=clock) if ttl_seconds > 0 else None
        )
        self._lock = threading.Lock()  # cachetools' caches are not thread-safe

    def get(self, key: tuple[Any, ...]) -> Any | None:
        if self._data is None:
            return None
        with self._lock:
            return self._data.get(key)

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        if self._data is not None:
            with self._lock:
                self._data[key] = value

    def __len__(self) -> int:
        return 0 if self._data is None else len(self._data)


class RateLimiter:
    """A token bucket per principal name: `rate` requests per second sustained, `burst` at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self.max_principals = 10_000

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: forgetting them changes nothing (JWT subjects are unbounded)."""
        refill = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}

    def acquire(self, who: str, rate: float | None = None, burst: int | None = None) -> float:
        """0 when allowed; otherwise the seconds to wait. `rate`/`burst` override the defaults for `who`."""
        rate = rate or self.rate
        capacity = float(burst or self.burst)
        now = self._clock()
        with self._lock:
            if who not in self._buckets and len(self._buckets) >= self.max_principals:
                self._forget_full(now)
            tokens, last = self._buckets.get(who, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[who] = (tokens - 1.0, now)
                return 0.0
            self._buckets[who] = (tokens, now)
            return (1.0 - tokens) / rate
