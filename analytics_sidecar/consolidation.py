"""Consolidation: pack VMs onto as few hosts as possible by CPU and memory, respecting anti-affinity.

First-fit decreasing on two dimensions: VMs sorted by their larger normalised demand, each placed on the
first open host (hosts opened largest first) with room for both its vCPUs and memory and no VM of the same
anti-affinity group. Hosts left empty can be freed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    vm_id: str
    cpu: float
    memory: float
    group: str = ""  # anti-affinity group: two VMs of one non-empty group never share a host


@dataclass(frozen=True)
class Bin:
    host: str
    cpu: float
    memory: float


@dataclass
class _Open:
    bin: Bin
    cpu_left: float
    mem_left: float
    groups: set[str] = field(default_factory=set)
    vms: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    placement: Mapping[str, str]  # vm_id -> host
    hosts_used: tuple[str, ...]
    unplaced: tuple[str, ...]  # VMs that fit on no host

    @property
    def hosts_needed(self) -> int:
        return len(self.hosts_used)


def pack(items: Sequence[Item], hosts: Sequence[Bin], sort: bool = True) -> Plan:
    """First-fit (decreasing when `sort`) over the hosts, largest hosts opened first."""
    if not hosts:
        return Plan({}, (), tuple(i.vm_id for i in items))
    max_cpu = max(h.cpu for h in hosts) or 1.0
    max_mem = max(h.memory for h in hosts) or 1.0
    order = list(items)
    if sort:
        order.sort(key=lambda i: (max(i.cpu / max_cpu, i.memory / max_mem), i.vm_id), reverse=True)
    pending = sorted(hosts, key=lambda h: (-(h.cpu / max_cpu + h.memory / max_mem), h.host))
    opened: list[_Open] = []
    placement: dict[str, str] = {}
    unplaced: list[str] = []
    for item in order:
        target = next((o for o in opened if _fits(o, item)), None)
        while target is None and pending:
            fresh = _Open(pending.pop(0), 0.0, 0.0)
            fresh.cpu_left, fresh.mem_left = fresh.bin.cpu, fresh.bin.memory
            opened.append(fresh)
            if _fits(fresh, item):
                target = fresh
        if target is None:
            unplaced.append(item.vm_id)
            continue
        target.cpu_left -= item.cpu
        target.mem_left -= item.memory
        if item.group:
            target.groups.add(item.group)
        target.vms.append(item.vm_id)
        placement[item.vm_id] = target.bin.host
    used = tuple(o.bin.host for o in opened if o.vms)
    return Plan(placement, used, tuple(unplaced))


def _fits(o: _Open, item: Item) -> bool:
    if item.group and item.group in o.groups:
        return False
    return item.cpu <= o.cpu_left + 1e-9 and item.memory <= o.mem_left + 1e-9
