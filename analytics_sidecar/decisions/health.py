"""Host health score (0-1) and the failover signal, with a hold time so one bad scrape does not evacuate.

Score = 1 with penalties, floored at 0: exporter down or libvirtd down -> 0 (the host cannot be seen or
managed); each firing host alert of a hardware-related kind -> `alert_penalty`; libvirt scrape errors in
the last 15 minutes -> `error_penalty`; predicted CPU or memory exhaustion within `exhaustion_within`
-> `exhaustion_penalty`; mean vCPU steal above the hot threshold -> `steal_penalty`.
A host whose score stayed below `failover_below` for `failover_for` seconds raises the failover signal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HealthPolicy:
    failover_below: float = 0.5
    failover_for: float = 120.0
    alert_penalty: float = 0.3
    error_penalty: float = 0.2
    exhaustion_penalty: float = 0.2
    exhaustion_within: float = 86400.0
    steal_penalty: float = 0.1
    steal_high: float = 0.10


@dataclass(frozen=True)
class HealthInputs:
    host: str
    exporter_up: bool | None  # None: no data
    libvirt_up: bool | None
    alerts: int = 0
    errors_per_second: float = 0.0
    exhaustion_seconds: float = float("inf")
    steal: float = 0.0


@dataclass(frozen=True)
class Health:
    host: str
    score: float
    reasons: tuple[str, ...]


def score(i: HealthInputs, p: HealthPolicy) -> Health:
    reasons: list[str] = []
    if i.exporter_up is False:
        reasons.append("exporter down")
    if i.libvirt_up is False:
        reasons.append("libvirtd down")
    if reasons:
        return Health(i.host, 0.0, tuple(reasons))
    s = 1.0
    if i.alerts:
        s -= p.alert_penalty * i.alerts
        reasons.append(f"{i.alerts} host alerts firing")
    if i.errors_per_second > 0:
        s -= p.error_penalty
        reasons.append("libvirt scrape errors")
    if i.exhaustion_seconds < p.exhaustion_within:
        s -= p.exhaustion_penalty
        reasons.append("capacity exhaustion predicted")
    if i.steal > p.steal_high:
        s -= p.steal_penalty
        reasons.append("high vCPU steal")
    return Health(i.host, max(0.0, s), tuple(reasons))


class FailoverGate:
    """Remembers since when each host has been unhealthy; a host recovers as soon as its score does."""

    def __init__(self, policy: HealthPolicy) -> None:
        self.policy = policy
        self.bad_since: dict[str, float] = {}

    def update(self, health: list[Health], now: float) -> set[str]:
        seen = set()
        for h in health:
            seen.add(h.host)
            if h.score < self.policy.failover_below:
                self.bad_since.setdefault(h.host, now)
            else:
                self.bad_since.pop(h.host, None)
        for gone in set(self.bad_since) - seen:
            del self.bad_since[gone]
        return {h for h, t in self.bad_since.items() if now - t >= self.policy.failover_for - 1e-9}
