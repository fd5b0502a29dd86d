"""Migration planner after VMware DRS: relieve hot hosts, evacuate failing ones, drain a host to free it.

Every move respects the target's headroom (CPU and memory stay at or below `target_cpu_max` /
`target_memory_max` after the move, which are below the hot thresholds, so a move never makes a host hot)
and anti-affinity (two VMs of one non-empty group never share a host). Moves are chosen greedily by balance
gain minus migration cost: balance is the mean over CPU and memory of the standard deviation of host
utilisation (DRS's "current host load standard deviation"); cost is `cost_per_gib` x the VM's memory, which a
live migration copies at least once. `simulate` applies moves to the fleet state without moving anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

GIB = float(1 << 30)


@dataclass(frozen=True)
class MigrationPolicy:
    cpu_high: float = 0.85  # a host above this CPU utilisation is hot
    memory_high: float = 0.90
    steal_high: float = 0.10  # mean vCPU steal of the host's VMs that also makes it hot
    target_cpu_max: float = 0.75  # a target must stay at or below this after the move
    target_memory_max: float = 0.85
    cost_per_gib: float = 0.002  # balance units one GiB of memory copied is worth
    max_moves: int = 10  # per plan
    consolidate: bool = True  # drain a lightly used host when nothing is hot
    max_drain_hosts: int = 1
    drain_below: float = 0.3  # only hosts under this CPU and memory utilisation are drained


@dataclass(frozen=True)
class Host:
    name: str
    cpus: float
    memory_bytes: float
    cpu_base: float = 0.0  # cores used by what is not a known VM (the host itself, unknown guests)
    memory_base: float = 0.0
    steal: float = 0.0


@dataclass(frozen=True)
class Vm:
    vm_id: str
    host: str
    cpu: float  # cores the VM needs
    memory: float  # bytes it holds
    group: str = ""  # anti-affinity group


@dataclass(frozen=True)
class Move:
    vm_id: str
    source: str
    target: str
    reason: str  # "hot", "steal", "evacuate" or "consolidate"
    cost: float  # GiB copied
    gain: float  # balance before - after this move


@dataclass(frozen=True)
class Plan:
    moves: tuple[Move, ...]
    freed: tuple[str, ...]  # hosts left empty by the plan
    unplaced: tuple[str, ...]  # VMs to evacuate that fit nowhere
    still_hot: tuple[str, ...]


@dataclass
class Fleet:
    """Mutable fleet state the planner and the simulation work on."""

    hosts: dict[str, Host]
    vms: dict[str, Vm]
    where: dict[str, str] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    mem: dict[str, float] = field(default_factory=dict)
    groups: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, hosts: Iterable[Host], vms: Iterable[Vm]) -> Fleet:
        f = cls({h.name: h for h in hosts}, {})
        for h in f.hosts.values():
            f.cpu[h.name], f.mem[h.name], f.groups[h.name] = h.cpu_base, h.memory_base, {}
        for vm in vms:
            if vm.host in f.hosts:
                f.vms[vm.vm_id] = vm
                f._add(vm, vm.host)
        return f

    def _add(self, vm: Vm, host: str) -> None:
        self.where[vm.vm_id] = host
        self.cpu[host] += vm.cpu
        self.mem[host] += vm.memory
        if vm.group:
            self.groups[host][vm.group] = self.groups[host].get(vm.group, 0) + 1

    def _remove(self, vm: Vm) -> str:
        host = self.where.pop(vm.vm_id)
        self.cpu[host] -= vm.cpu
        self.mem[host] -= vm.memory
        if vm.group:
            self.groups[host][vm.group] -= 1
            if not self.groups[host][vm.group]:
                del self.groups[host][vm.group]
        return host

    def move(self, vm_id: str, target: str) -> None:
        vm = self.vms[vm_id]
        self._remove(vm)
        self._add(vm, target)

    def ratios(self, host: str) -> tuple[float, float]:
        h = self.hosts[host]
        return self.cpu[host] / h.cpus if h.cpus else math.inf, self.mem[
            host
        ] / h.memory_bytes if h.memory_bytes else math.inf

    def members(self, host: str) -> list[Vm]:
        return [self.vms[v] for v, h in self.where.items() if h == host]

    def in_use(self) -> set[str]:
        return set(self.where.values())

    def balance(self) -> float:
        """Mean over CPU and memory of the population standard deviation of utilisation of hosts in use."""
        used = sorted(self.in_use())
        if len(used) < 2:
            return 0.0
        out = 0.0
        for k in (0, 1):
            xs = [self.ratios(h)[k] for h in used]
            m = sum(xs) / len(xs)
            out += math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))
        return out / 2

    def fits(self, vm: Vm, target: str, p: MigrationPolicy) -> bool:
        if target == self.where.get(vm.vm_id) or target not in self.hosts:
            return False
        h = self.hosts[target]
        if vm.group and self.groups[target].get(vm.group):
            return False
        cpu_after = (self.cpu[target] + vm.cpu) / h.cpus if h.cpus else math.inf
        mem_after = (self.mem[target] + vm.memory) / h.memory_bytes if h.memory_bytes else math.inf
        return cpu_after <= p.target_cpu_max + 1e-9 and mem_after <= p.target_memory_max + 1e-9

    def is_hot(self, host: str, p: MigrationPolicy) -> bool:
        c, m = self.ratios(host)
        return c > p.cpu_high or m > p.memory_high or self.hosts[host].steal > p.steal_high

    def overloaded(self, p: MigrationPolicy) -> list[str]:
        """Hosts above the hot thresholds of CPU or memory (steal is an observation, not a simulation)."""
        out = []
        for h in sorted(self.hosts):
            c, m = self.ratios(h)
            if c > p.cpu_high + 1e-9 or m > p.memory_high + 1e-9:
                out.append(h)
        return out


def plan(
    hosts: Sequence[Host],
    vms: Sequence[Vm],
    policy: MigrationPolicy,
    evacuate: Iterable[str] = (),
    noisy: Iterable[str] = (),
) -> Plan:
    """Evacuate the given hosts, then relieve hot hosts, then (when nothing is hot) drain a host.

    `noisy`: VMs in a correlated pair of noisy neighbours; a host hot by steal alone moves one of them
    (one move per plan: steal is observed, not simulated, so the next cycle shows whether it helped).
    """
    fleet = Fleet.of(hosts, vms)
    away = set(evacuate) & set(fleet.hosts)
    noisy_ids = set(noisy)
    moves: list[Move] = []
    unplaced: list[str] = []
    hot = [h for h in sorted(fleet.hosts) if h not in away and fleet.is_hot(h, policy)]
    for host in sorted(away):
        for vm in sorted(fleet.members(host), key=lambda v: (-v.memory, v.vm_id)):
            mv = _best_move(fleet, [vm], policy, away | set(hot), "evacuate", require_gain=False)
            if mv is None:
                unplaced.append(vm.vm_id)
            else:
                _apply(fleet, mv, moves)
    receivers: set[str] = {m.target for m in moves}
    for host in sorted(hot, key=lambda h: -max(fleet.ratios(h))):
        if not _over(fleet, host, policy):  # hot by steal alone
            members = fleet.members(host)
            if len(members) > 1 and len(moves) < policy.max_moves:
                candidates = [v for v in members if v.vm_id in noisy_ids] or members
                mv = _best_move(fleet, candidates, policy, away | set(hot), "steal", require_gain=False)
                if mv is not None:
                    _apply(fleet, mv, moves)
                    receivers.add(mv.target)
            continue
        while len(moves) < policy.max_moves and _over(fleet, host, policy):
            mv = _best_move(fleet, fleet.members(host), policy, away | set(hot), "hot", require_gain=False)
            if mv is None:
                break
            _apply(fleet, mv, moves)
            receivers.add(mv.target)
    still_hot = tuple(h for h in hot if _over(fleet, h, policy))
    if policy.consolidate and not hot and not away:
        _drain(fleet, policy, moves, receivers)
    before = {v.host for v in vms if v.host in fleet.hosts}
    freed = tuple(sorted(before - fleet.in_use()))
    return Plan(tuple(moves), freed, tuple(unplaced), still_hot)


def _over(fleet: Fleet, host: str, p: MigrationPolicy) -> bool:
    c, m = fleet.ratios(host)
    return c > p.cpu_high or m > p.memory_high


def _apply(fleet: Fleet, mv: Move, moves: list[Move]) -> None:
    fleet.move(mv.vm_id, mv.target)
    moves.append(mv)


def _best_move(
    fleet: Fleet,
    candidates: Sequence[Vm],
    p: MigrationPolicy,
    excluded: set[str],
    reason: str,
    require_gain: bool,
) -> Move | None:
    """The feasible move with the highest balance gain minus cost."""
    base = fleet.balance()
    best: tuple[float, Move] | None = None
    targets = [h for h in sorted(fleet.hosts) if h not in excluded]
    for vm in candidates:
        source = fleet.where[vm.vm_id]
        for t in targets:
            if not fleet.fits(vm, t, p):
                continue
            fleet.move(vm.vm_id, t)
            gain = base - fleet.balance()
            fleet.move(vm.vm_id, source)
            cost = vm.memory / GIB
            score = gain - p.cost_per_gib * cost
            if require_gain and score <= 0:
                continue
            if best is None or score > best[0] + 1e-12:
                best = (score, Move(vm.vm_id, source, t, reason, cost, gain))
    return best[1] if best else None


def _drain(fleet: Fleet, p: MigrationPolicy, moves: list[Move], receivers: set[str]) -> None:
    """Empty the least-used hosts whose VMs all fit elsewhere (best fit: the fullest host that holds each)."""
    drained: set[str] = set()
    order = sorted(fleet.in_use(), key=lambda h: (max(fleet.ratios(h)), h))
    for host in order:
        if len(drained) >= p.max_drain_hosts or host in receivers:
            continue
        if max(fleet.ratios(host)) >= p.drain_below:
            continue
        members = sorted(fleet.members(host), key=lambda v: (-v.memory, -v.cpu, v.vm_id))
        if len(moves) + len(members) > p.max_moves:
            continue
        trial: list[Move] = []
        for vm in members:
            targets = [t for t in fleet.in_use() if t != host and t not in drained and fleet.fits(vm, t, p)]
            if not targets:
                break
            t = max(targets, key=lambda x: (max(fleet.ratios(x)), x))
            trial.append(Move(vm.vm_id, host, t, "consolidate", vm.memory / GIB, 0.0))
            fleet.move(vm.vm_id, t)
        if len(trial) < len(members):  # undo a partial drain
            for mv in reversed(trial):
                fleet.move(mv.vm_id, host)
            continue
        moves.extend(trial)
        drained.add(host)
        receivers.update(mv.target for mv in trial)


@dataclass(frozen=True)
class Simulation:
    hosts: Mapping[str, Mapping[str, float]]  # host -> cpu_before, cpu_after, memory_before, memory_after
    overloaded_before: tuple[str, ...]
    overloaded_after: tuple[str, ...]
    balance_before: float
    balance_after: float
    hosts_freed: tuple[str, ...]
    anti_affinity_violations: int


def simulate(
    hosts: Sequence[Host], vms: Sequence[Vm], moves: Sequence[tuple[str, str]], p: MigrationPolicy
) -> Simulation:
    """Apply (vm_id, target) moves to a copy of the fleet; ValueError names an unknown VM or host."""
    fleet = Fleet.of(hosts, vms)
    before = {h: fleet.ratios(h) for h in fleet.hosts}
    over_before, bal_before, used_before = fleet.overloaded(p), fleet.balance(), fleet.in_use()
    for vm_id, target in moves:
        if vm_id not in fleet.vms:
            raise ValueError(f"unknown vm_id {vm_id!r}")
        if target not in fleet.hosts:
            raise ValueError(f"unknown host {target!r}")
        fleet.move(vm_id, target)
    table = {
        h: {
            "cpu_before": before[h][0],
            "cpu_after": fleet.ratios(h)[0],
            "memory_before": before[h][1],
            "memory_after": fleet.ratios(h)[1],
        }
        for h in sorted(fleet.hosts)
    }
    violations = sum(max(0, n - 1) for g in fleet.groups.values() for n in g.values())
    return Simulation(
        table,
        tuple(over_before),
        tuple(fleet.overloaded(p)),
        bal_before,
        fleet.balance(),
        tuple(sorted(used_before - fleet.in_use())),
        violations,
    )
