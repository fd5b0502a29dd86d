"""Group concurrently anomalous series into incidents and rank the likely cause of each.

Two anomaly episodes belong to one incident when their onsets are within `gap` seconds and they share a VM, a
host or a tenant (single linkage: a chain host -> VM -> VM is one incident). Inside an incident each member
gets a cause score from three signals: earliest onset (a cause precedes its effects), host before VM (a host
problem explains its guests, not the other way round) and correlation strength (the mean absolute Pearson
correlation of its recent values with the other members': a member moving with the others explains them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from analytics_sidecar.anomaly.engine import Episode, SeriesState

W_ONSET = 0.5
W_HOST = 0.3
W_CORRELATION = 0.2


@dataclass(frozen=True)
class Member:
    """One anomalous series in an incident, with the evidence behind its cause score."""

    vm_id: str
    resource: str
    kind: str
    host: str
    tenant: str
    onset: float
    end: float | None
    peak: float
    correlation: float
    cause_score: float

    def to_json(self) -> dict:
        return {
            "vm_id": self.vm_id,
            "resource": self.resource,
            "kind": self.kind,
            "host": self.host,
            "tenant": self.tenant,
            "onset": self.onset,
            "end": self.end,
            "peak_score": round(self.peak, 4),
            "correlation": round(self.correlation, 4),
            "cause_score": round(self.cause_score, 4),
        }


@dataclass(frozen=True)
class Incident:
    """A group of related anomalous series; members are ordered most likely cause first."""

    start: float
    members: tuple[Member, ...]

    @property
    def ident(self) -> str:
        first = self.members[0]
        return f"{int(self.start)}-{first.kind}-{first.vm_id}-{first.resource}"

    def to_json(self) -> dict:
        hosts = sorted({m.host for m in self.members if m.host})
        tenants = sorted({m.tenant for m in self.members if m.tenant})
        return {
            "id": self.ident,
            "start": self.start,
            "ongoing": any(m.end is None for m in self.members),
            "hosts": hosts,
            "tenants": tenants,
            "vm_ids": sorted({m.vm_id for m in self.members if m.kind == "vm"}),
            "likely_cause": self.members[0].to_json(),
            "members": [m.to_json() for m in self.members],
        }


@dataclass(frozen=True)
class _Candidate:
    state: SeriesState
    episode: Episode


def find_incidents(
    series: Iterable[SeriesState], since: float, gap: float = 600.0, min_peak: float = 0.0
) -> list[Incident]:
    """Incidents made of episodes active at or after `since`, newest incident first."""
    cands = [
        _Candidate(st, ep)
        for st in series
        for ep in st.episodes
        if (ep.end is None or ep.end >= since) and ep.peak >= min_peak
    ]
    groups = _link(cands, gap)
    incidents = [_rank(group) for group in groups]
    incidents.sort(key=lambda inc: inc.start, reverse=True)
    return incidents


def _related(a: _Candidate, b: _Candidate) -> bool:
    ka, kb = a.state.key, b.state.key
    return (
        ka.vm_id == kb.vm_id
        or bool(ka.host and ka.host == kb.host)
        or bool(ka.tenant and ka.tenant == kb.tenant)
    )


def _link(cands: Sequence[_Candidate], gap: float) -> list[list[_Candidate]]:
    """Union-find over pairs with close onsets and a shared VM, host or tenant."""
    parent = list(range(len(cands)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = sorted(range(len(cands)), key=lambda i: cands[i].episode.onset)
    for pos, i in enumerate(order):
        for j in order[pos + 1 :]:
            if cands[j].episode.onset - cands[i].episode.onset > gap:
                break
            if _related(cands[i], cands[j]):
                parent[root(j)] = root(i)
    groups: dict[int, list[_Candidate]] = {}
    for i in range(len(cands)):
        groups.setdefault(root(i), []).append(cands[i])
    return list(groups.values())


def _rank(group: list[_Candidate]) -> Incident:
    start = min(c.episode.onset for c in group)
    span = max(c.episode.onset for c in group) - start
    corr = _correlations(group)
    members = []
    for c, r in zip(group, corr, strict=True):
        k = c.state.key
        earliness = 1.0 if span <= 0 else 1.0 - (c.episode.onset - start) / span
        cause = W_ONSET * earliness + W_HOST * (k.kind == "host") + W_CORRELATION * r
        members.append(
            Member(
                k.vm_id,
                k.resource,
                k.kind,
                k.host,
                k.tenant,
                c.episode.onset,
                c.episode.end,
                c.episode.peak,
                r,
                cause,
            )
        )
    # Ties (same onset, same kind) go to the stronger anomaly.
    members.sort(key=lambda m: (-m.cause_score, m.onset, -m.peak, m.vm_id, m.resource))
    return Incident(start, tuple(members))


def _correlations(group: list[_Candidate]) -> list[float]:
    """Mean |Pearson r| of each member's recent values against the other members' (aligned on timestamps)."""
    if len(group) < 2:
        return [0.0] * len(group)
    traces = [{t: x for t, x, _ in c.state.trace} for c in group]
    out = []
    for i, a in enumerate(traces):
        rs = [_pearson(a, b) for j, b in enumerate(traces) if j != i]
        rs = [abs(r) for r in rs if not math.isnan(r)]
        out.append(sum(rs) / len(rs) if rs else 0.0)
    return out


def _pearson(a: dict[float, float], b: dict[float, float]) -> float:
    common = sorted(a.keys() & b.keys())
    if len(common) < 3:
        return math.nan
    xa = np.array([a[t] for t in common])
    xb = np.array([b[t] for t in common])
    if xa.std() == 0 or xb.std() == 0:
        return math.nan
    return float(np.corrcoef(xa, xb)[0, 1])
