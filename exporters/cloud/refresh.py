"""Background refresh per target: the only code that calls a cloud; scrapes read the cached snapshot."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from exporters.cloud.model import VM, Provider, Sample, Target
from exporters.cloud.resilience import Backoff, CircuitBreaker

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Snapshot:
    """What one successful refresh produced; replaced whole, so a scrape never sees half a refresh."""

    vms: tuple[VM, ...]
    samples: tuple[Sample, ...]
    finished_at: float


@dataclass
class ApiStats:
    """Counters by operation, kept for the life of the process (exposed as `_total` counters)."""

    calls: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    cost_total: float = 0.0


class RecordingCaller:
    """ApiCaller for one refresh: counts and prices every call; retries throttling with jittered backoff."""

    def __init__(
        self,
        provider: Provider,
        stats: ApiStats,
        prices: Mapping[str, float],
        backoff: Backoff,
        sleep: Callable[[float], object],
        rng: random.Random,
    ) -> None:
        self.provider, self.stats, self.prices = provider, stats, prices
        self.backoff, self.sleep, self.rng = backoff, sleep, rng
        self.refresh_calls = 0
        self.refresh_cost = 0.0
        self._lock = threading.Lock()  # providers may call from a small thread pool

    def call(self, operation: str, fn: Callable[[], T], units: int = 1) -> T:
        for attempt in range(self.backoff.attempts):
            self._count(operation, units)
            try:
                return fn()
            except Exception as exc:
                throttled = self.provider.is_throttled(exc)
                with self._lock:
                    (self.stats.throttled if throttled else self.stats.errors)[operation] += 1
                if not throttled:
                    raise
                if attempt + 1 >= self.backoff.attempts:
                    raise
                delay = self.backoff.delay(attempt, self.rng)
                log.info("%s %s throttled, retrying in %.2fs", self.provider.name, operation, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _count(self, operation: str, units: int) -> None:
        cost = self.prices.get(operation, 0.0) * units
        with self._lock:
            self._add(operation, cost)

    def _add(self, operation: str, cost: float) -> None:
        self.stats.calls[operation] += 1
        self.stats.cost_total += cost
        self.refresh_calls += 1
        self.refresh_cost += cost


class TargetRefresher:
    """Refreshes one (provider, account, region): discovery, metrics, breaker, self-metric state."""

    def __init__(
        self,
        provider: Provider,
        target: Target,
        *,
        prices: Mapping[str, float],
        backoff: Backoff,
        breaker: CircuitBreaker,
        stale_after: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.provider, self.target = provider, target
        self.prices = {**provider.default_prices(), **prices}
        self.backoff, self.breaker, self.stale_after = backoff, breaker, stale_after
        self.clock, self.sleep = clock, sleep
        self.rng = rng or random.Random()
        self.stats = ApiStats()
        self.snapshot: Snapshot | None = None
        self.up = False
        self.last_success: float | None = None
        self.last_duration = 0.0
        self.last_calls = 0
        self.last_cost = 0.0
        self.refreshes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """One refresh; True on success. Failures keep the previous snapshot until it is stale."""
        if not self.breaker.allow():
            self.up = False
            self.refreshes["skipped"] += 1
            return False
        caller = RecordingCaller(self.provider, self.stats, self.prices, self.backoff, self.sleep, self.rng)
        started = time.monotonic()
        try:
            now = self.clock()
            vms = self.provider.discover(self.target, now, caller)
            samples = self.provider.fetch(self.target, vms, now, caller)
        except Exception as exc:  # one account's failure must not stop the exporter
            self.breaker.record_failure()
            self.up = False
            self.refreshes["failure"] += 1
            log.warning("refresh of %s failed: %s", "/".join(self.target.labels()), _describe(exc))
            return False
        finally:
            self.last_duration = time.monotonic() - started
            self.last_calls, self.last_cost = caller.refresh_calls, caller.refresh_cost
        self.breaker.record_success()
        with self._lock:
            self.snapshot = Snapshot(tuple(vms), tuple(samples), self.clock())
        self.up = True
        self.last_success = self.snapshot.finished_at
        self.refreshes["success"] += 1
        return True

    def current(self) -> Snapshot | None:
        """The snapshot to expose, or None once it is older than `stale_after` (no flat-lined old values)."""
        with self._lock:
            snap = self.snapshot
        if snap is None or self.clock() - snap.finished_at > self.stale_after:
            return None
        return snap


def _describe(exc: BaseException) -> str:
    """A one-line reason without credentials or request bodies."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:300]}"


class RefreshScheduler:
    """One daemon thread per target, refreshing every `interval` seconds until `stop()`."""

    def __init__(self, refreshers: Sequence[TargetRefresher], interval: float) -> None:
        self.refreshers, self.interval = refreshers, interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        for r in refreshers:
            r.sleep = self._stop.wait  # backoff sleeps end at once on shutdown

    def start(self) -> None:
        for r in self.refreshers:
            t = threading.Thread(target=self._loop, args=(r,), name="refresh-" + "/".join(r.target.labels()))
            t.daemon = True
            t.start()
            self._threads.append(t)

    def _loop(self, refresher: TargetRefresher) -> None:
        # Spread targets over the interval so they do not hit the APIs in the same second.
        self._stop.wait(refresher.rng.uniform(0, min(5.0, self.interval / 10)))
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                refresher.refresh()
            except Exception:  # a bug in one target must not end its refresh thread for good
                log.exception("refresh of %s crashed", "/".join(refresher.target.labels()))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
