"""Scaling triggers per VM group with stabilisation windows and cooldowns (after the HPA's behaviour field).

Each cycle gives every group a raw wish (+1 scale out, -1 scale in, 0 hold) from its CPU utilisation now and
its forecast. A signal is raised only when the wish held at every observation of the stabilisation window
(so an input that flaps never triggers) and no signal of that group was raised within the cooldown.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScalingPolicy:
    group_label: str = "novacron_group"
    scale_out_above: float = 0.8  # utilisation (cores used / vCPUs) of the group
    scale_in_below: float = 0.3
    target: float = 0.6  # desired utilisation after scaling (the HPA's target)
    scale_out_window: float = 180.0  # seconds the wish must hold (not one spike)
    scale_in_window: float = 900.0  # HPA default scaleDown stabilisation is 300 s; cycles here are longer
    cooldown: float = 1800.0
    horizon: float = 3600.0  # forecast horizon whose point is also considered


@dataclass(frozen=True)
class GroupLoad:
    group: str
    vms: int
    vcpus: float
    cpu_cores: float  # used now
    forecast_cores: float | None  # point forecast at the horizon

    @property
    def utilisation(self) -> float:
        return self.cpu_cores / self.vcpus if self.vcpus > 0 else 0.0

    @property
    def forecast_utilisation(self) -> float | None:
        return (
            self.forecast_cores / self.vcpus if self.forecast_cores is not None and self.vcpus > 0 else None
        )


@dataclass(frozen=True)
class ScalingSignal:
    group: str
    direction: str  # "out", "in" or "none"
    current_vms: int
    desired_vms: int
    utilisation: float
    forecast_utilisation: float | None
    reason: str
    since: float | None  # when the raised signal was decided


@dataclass
class _Track:
    wishes: deque[tuple[float, int]] = field(default_factory=deque)
    last_signal: float | None = None
    direction: str = "none"
    since: float | None = None


def raw_wish(load: GroupLoad, p: ScalingPolicy) -> int:
    """+1, -1 or 0 from utilisation now and forecast: out if either is high, in only if both are low."""
    u, f = load.utilisation, load.forecast_utilisation
    peak = max(u, f) if f is not None else u
    if peak > p.scale_out_above:
        return 1
    if peak < p.scale_in_below and load.vms > 1:
        return -1
    return 0


def desired_vms(load: GroupLoad, p: ScalingPolicy) -> int:
    """ceil(n x utilisation / target), the HPA formula, on the larger of now and the forecast."""
    f = load.forecast_utilisation
    peak = max(load.utilisation, f) if f is not None else load.utilisation
    return max(1, math.ceil(load.vms * peak / p.target - 1e-9))


class ScalingTriggers:
    """Keeps each group's recent wishes between cycles; `update` returns every group's current signal."""

    def __init__(self, policy: ScalingPolicy) -> None:
        self.policy = policy
        self.tracks: dict[str, _Track] = {}

    def update(self, loads: list[GroupLoad], now: float) -> list[ScalingSignal]:
        p = self.policy
        out: list[ScalingSignal] = []
        for load in sorted(loads, key=lambda g: g.group):
            tr = self.tracks.setdefault(load.group, _Track())
            tr.wishes.append((now, raw_wish(load, p)))
            keep = max(p.scale_out_window, p.scale_in_window)
            # Keep the last observation at or before the longest window's start: it proves coverage.
            while len(tr.wishes) > 1 and tr.wishes[1][0] <= now - keep + 1e-9:
                tr.wishes.popleft()
            out.append(self._decide(load, tr, now))
        for gone in set(self.tracks) - {g.group for g in loads}:
            del self.tracks[gone]
        return out

    def _decide(self, load: GroupLoad, tr: _Track, now: float) -> ScalingSignal:
        p = self.policy
        direction, reason = "none", "within thresholds"
        for wish, name, window in ((1, "out", p.scale_out_window), (-1, "in", p.scale_in_window)):
            if _held(tr.wishes, wish, window, now):
                direction, reason = name, f"held for {window:.0f}s"
        if direction == "none":
            tr.direction, tr.since = "none", None
        elif direction != tr.direction:  # a new signal: the cooldown applies
            if tr.last_signal is not None and now - tr.last_signal < p.cooldown:
                direction, reason = "none", "cooldown"
            else:
                tr.direction, tr.last_signal, tr.since = direction, now, now
        want = desired_vms(load, p) if direction != "none" else load.vms
        if direction == "in":
            want = min(want, load.vms - 1)
        if direction == "out":
            want = max(want, load.vms + 1)
        return ScalingSignal(
            load.group,
            direction,
            load.vms,
            want,
            load.utilisation,
            load.forecast_utilisation,
            reason,
            tr.since if direction != "none" else None,
        )


def _held(wishes: deque[tuple[float, int]], wish: int, window: float, now: float) -> bool:
    """The wish was already made at the window's start (last observation at or before it) and at every
    observation since: with a window shorter than a cycle that means two cycles in a row."""
    start = now - window + 1e-9
    before = [w for t, w in wishes if t <= start]
    inside = [w for t, w in wishes if t > start]
    return bool(before) and before[-1] == wish and all(w == wish for w in inside)
