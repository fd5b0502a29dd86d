"""Protection for Prometheus: a TTL cache for identical upstream requests, per-principal rate limits."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class ResultCache:
    """LRU with a time-to-live; keys are the exact upstream request, so entries are safe to share.

    Two callers with the same scoped query ask Prometheus the same thing and get the same answer; a caller
    with other tenants has other matchers in its query and so another key.
    """

    def __init__(
        self, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[tuple[Any, ...], tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            expires, value = item
            if expires < self._clock():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return value

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._data[key] = (self._clock() + self.ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


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
