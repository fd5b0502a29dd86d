"""Exponential backoff with full jitter, and a per-target circuit breaker."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """Delays for retry n (0-based): uniform in [0, min(cap, base * 2**n)] ("full jitter", AWS style)."""

    base: float = 1.0
    cap: float = 30.0
    attempts: int = 4  # total tries of one call, the first included

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        upper = min(self.cap, self.base * (2**retry))
        return (rng or random).uniform(0, upper)


@dataclass
class CircuitBreaker:
    """Opens after `threshold` failed refreshes in a row; after `reset_after` seconds one trial is allowed.

    While open, refreshes are skipped so a broken or throttling account does not burn API quota.
    """

    threshold: int = 3
    reset_after: float = 300.0
    clock: Callable[[], float] = time.monotonic
    failures: int = field(default=0, init=False)
    opened_at: float | None = field(default=None, init=False)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.reset_after:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        return self.state != "open"

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.threshold:
            self.opened_at = self.clock()
