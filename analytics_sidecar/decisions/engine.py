"""The decision cycle: after each analysis cycle, read the live fleet state and derive every decision.

Inputs are the analysis `Results` (forecasts, p95 usage, patterns, host exhaustion) and a few instant
queries (usage now, exporter and libvirtd health, firing host alerts, VMs whose host went dark, tenant SLIs).
State kept between cycles: the scaling stabilisers and cooldowns, the failover hold timers, and which
policy events (scale signals, failovers, exhausted budgets) were already counted, so each is counted once.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from analytics_sidecar.config import Config
from analytics_sidecar.decisions import health as health_mod
from analytics_sidecar.decisions import insights, migration, placement, scaling, slo
from analytics_sidecar.decisions.config import DecisionSettings
from analytics_sidecar.engine import Results
from analytics_sidecar.source import PromSource, SourceError, labels_of

log = logging.getLogger(__name__)
audit = logging.getLogger("analytics_sidecar.audit")


@dataclass(frozen=True)
class Decisions:
    generated_at: float
    duration_seconds: float
    scaling: tuple[scaling.ScalingSignal, ...] = ()
    hosts: tuple[migration.Host, ...] = ()
    vms: tuple[migration.Vm, ...] = ()
    plan: migration.Plan | None = None
    simulation: migration.Simulation | None = None
    health: tuple[health_mod.Health, ...] = ()
    failover: tuple[str, ...] = ()
    evacuation: migration.Plan | None = None
    placement: Mapping[str, list[placement.Offer]] = field(default_factory=dict)
    slos: Mapping[str, slo.TenantSlo] = field(default_factory=dict)
    expected_load: Mapping[str, Mapping[str, Mapping[float, float]]] = field(default_factory=dict)
    tags: tuple[insights.Tags, ...] = ()
    suggestions: tuple[insights.Suggestion, ...] = ()
    currency: str = "USD"


@dataclass
class DecisionState:
    """What the HTTP side reads, plus the policy-event counters."""

    decisions: Decisions | None = None
    events: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failures: int = 0
    # "deciding" while this replica holds the decision lease; "standby" while a peer holds it (sharded
    # replicas); "starting" before the first cycle.
    role: str = "starting"


class DecisionEngine:
    def __init__(
        self,
        settings: DecisionSettings,
        cfg: Config,
        source: PromSource,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = settings
        self.cfg = cfg
        self.source = source
        self.clock = clock
        self.triggers = scaling.ScalingTriggers(settings.scaling)
        self.gate = health_mod.FailoverGate(settings.health)
        self.state = DecisionState()
        self._active: set[tuple[str, str]] = set()  # (kind, key) events currently raised

    def stand_by(self) -> None:
        """Drop the decisions and the state between cycles: another replica decides now. Windows, cooldowns
        and hold timers restart if this replica decides again (its memory of them would have gaps)."""
        self.triggers = scaling.ScalingTriggers(self.s.scaling)
        self.gate = health_mod.FailoverGate(self.s.health)
        self._active = set()
        self.state.decisions = None
        self.state.role = "standby"

    def run(self, results: Results, catalogue: Any) -> Decisions:
        t0 = time.perf_counter()
        now = self.clock()
        q, src, cfg = self.s.queries, self.source, self.cfg
        vm_cpu = src.instant_values(cfg.query("vm_cpu_cores"))
        steal = src.instant_values(q["vm_steal"])
        lost = {
            labels_of(r["metric"]).get("vm_id", ""): labels_of(r["metric"])
            for r in src.instant(q["vm_info_lost"])
        }
        vcpus_recent = src.instant_values(q["vm_vcpus_recent"])
        mem_recent = src.instant_values(q["vm_memory_recent"])
        info = {vm: dict(r.labels) for vm, r in results.vms.items()}
        if cfg.shard.count > 1:
            for r in src.instant(q["vm_info_fleet"]):
                labels = labels_of(r["metric"])
                info.setdefault(labels.get("vm_id", ""), labels)
            info.pop("", None)
        for vm, labels in lost.items():
            info.setdefault(vm, labels)
        hosts_cap = self._host_capacity()
        fleet_hosts, fleet_vms = self._fleet(
            results, info, vm_cpu, steal, vcpus_recent, mem_recent, hosts_cap
        )
        signals = self.triggers.update(self._group_loads(results, info, vm_cpu, vcpus_recent), now)
        health = self._health(results, {h.name for h in fleet_hosts} | set(hosts_cap), fleet_hosts)
        failing = self.gate.update(health, now)
        evacuation = (
            migration.plan(fleet_hosts, fleet_vms, self.s.migration, evacuate=failing) if failing else None
        )
        noisy = {n.vm_id for n in results.neighbours} | {n.neighbour_vm_id for n in results.neighbours}
        hot_plan = migration.plan(fleet_hosts, fleet_vms, self.s.migration, noisy=noisy)
        sim = migration.simulate(
            fleet_hosts, fleet_vms, [(m.vm_id, m.target) for m in hot_plan.moves], self.s.migration
        )
        offers = placement.all_offers(
            self.s.sizes,
            catalogue,
            {h: (c[0], c[1], c[2], c[3]) for h, c in hosts_cap.items()},
            self.s.migration.target_cpu_max,
            self.s.migration.target_memory_max,
            self.s.placement_limit,
        )
        slos = self._slos()
        label = cfg.consolidation.anti_affinity_label
        out = Decisions(
            generated_at=now,
            duration_seconds=time.perf_counter() - t0,
            scaling=tuple(signals),
            hosts=tuple(fleet_hosts),
            vms=tuple(fleet_vms),
            plan=hot_plan,
            simulation=sim,
            health=tuple(health),
            failover=tuple(sorted(failing)),
            evacuation=evacuation,
            placement=offers,
            slos=slos,
            expected_load=insights.expected_load(results.hosts),
            tags=tuple(insights.tags(r, label, self.s.insights) for r in results.vms.values()),
            suggestions=tuple(
                s for r in results.vms.values() if (s := insights.suggestion(r, self.s.insights)) is not None
            ),
            currency=getattr(catalogue, "currency", "USD"),
        )
        self._events(out)
        self.state.decisions = out
        return out

    # -- inputs ----------------------------------------------------------------------------------
    def _host_capacity(self) -> dict[str, tuple[float, float, float, float]]:
        q, src = self.cfg.query, self.source
        cpus = src.instant_values(q("host_cpus"), "host")
        mems = src.instant_values(q("host_memory_bytes"), "host")
        cpu_used = src.instant_values(q("host_cpu_cores_used"), "host")
        mem_used = src.instant_values(q("host_memory_used_bytes"), "host")
        return {
            h: (cpus[h], mems[h], cpu_used.get(h, 0.0), mem_used.get(h, 0.0))
            for h in cpus
            if h in mems and cpus[h] > 0 and mems[h] > 0
        }

    def _fleet(
        self,
        results: Results,
        info: Mapping[str, Mapping[str, str]],
        vm_cpu: Mapping[str, float],
        steal: Mapping[str, float],
        vcpus_recent: Mapping[str, float],
        mem_recent: Mapping[str, float],
        hosts_cap: Mapping[str, tuple[float, float, float, float]],
    ) -> tuple[list[migration.Host], list[migration.Vm]]:
        """KVM VMs with their demand (max of CPU now and p95; allocated memory) on hosts with capacity."""
        label = self.cfg.consolidation.anti_affinity_label
        vms: list[migration.Vm] = []
        for vm, labels in sorted(info.items()):
            host = labels.get("host", "")
            if labels.get("provider", "kvm") != "kvm" or not host:
                continue
            r = results.vms.get(vm)
            mem = (r.memory_bytes if r and r.memory_bytes else None) or mem_recent.get(vm)
            vcpus = (r.vcpus if r and r.vcpus else None) or vcpus_recent.get(vm)
            if not mem:
                continue
            p95 = r.cpu_p95_cores if r and r.cpu_p95_cores is not None else None
            cpu_now = vm_cpu.get(vm)
            known = [x for x in (p95, cpu_now) if x is not None and math.isfinite(x)]
            cpu = max(known) if known else float(vcpus or 0.0)  # unknown use: assume it is all used
            vms.append(migration.Vm(vm, host, cpu, float(mem), labels.get(label, "")))
        by_host: dict[str, list[migration.Vm]] = defaultdict(list)
        for v in vms:
            by_host[v.host].append(v)
        host_steal: dict[str, list[float]] = defaultdict(list)
        for vm, labels in info.items():
            if vm in steal and math.isfinite(steal[vm]):
                host_steal[labels.get("host", "")].append(steal[vm])
        caps = dict(hosts_cap)
        q = self.s.queries
        cpus_recent = self.source.instant_values(q["host_cpus_recent"], "host")
        mems_recent = self.source.instant_values(q["host_memory_recent"], "host")
        for h, c in cpus_recent.items():  # a host whose exporter went dark keeps its last capacity
            if h not in caps and c > 0 and mems_recent.get(h, 0) > 0:
                caps[h] = (c, mems_recent[h], 0.0, 0.0)
        hosts = []
        for h, (cpus, mems, cpu_used, mem_used) in sorted(caps.items()):
            members = by_host.get(h, [])
            s = host_steal.get(h, [])
            hosts.append(
                migration.Host(
                    h,
                    cpus,
                    mems,
                    max(0.0, cpu_used - sum(v.cpu for v in members)),
                    max(0.0, mem_used - sum(v.memory for v in members)),
                    sum(s) / len(s) if s else 0.0,
                )
            )
        return hosts, [v for v in vms if v.host in caps]

    def _group_loads(
        self,
        results: Results,
        info: Mapping[str, Mapping[str, str]],
        vm_cpu: Mapping[str, float],
        vcpus_recent: Mapping[str, float],
    ) -> list[scaling.GroupLoad]:
        label, horizon = self.s.scaling.group_label, self.s.scaling.horizon
        groups: dict[str, list[str]] = defaultdict(list)
        for vm, labels in info.items():
            if labels.get(label) and vm in vm_cpu:
                groups[labels[label]].append(vm)
        loads = []
        for g, members in groups.items():
            vcpus = sum(vcpus_recent.get(vm, 0.0) for vm in members)
            used = sum(vm_cpu[vm] for vm in members)
            fc: float | None = 0.0
            for vm in members:
                r = results.vms.get(vm)
                b = r.forecasts.get("cpu_cores", {}).get(horizon) if r else None
                if b is None:
                    fc = None
                    break
                fc = (fc or 0.0) + b[0]
            loads.append(scaling.GroupLoad(g, len(members), vcpus, used, fc))
        return loads

    def _health(
        self, results: Results, hosts: set[str], fleet_hosts: list[migration.Host]
    ) -> list[health_mod.Health]:
        q, src = self.s.queries, self.source
        exp_up = src.instant_values(q["host_exporter_up"], "host")
        lv_up = src.instant_values(q["host_libvirt_up"], "host")
        errors = src.instant_values(q["host_errors"], "host")
        alerts = src.instant_values(q["host_alerts"], "host")
        steal = {h.name: h.steal for h in fleet_hosts}
        out = []
        for h in sorted(hosts | set(exp_up) | set(lv_up)):
            exh = results.hosts.get(h)
            soonest = min(exh.exhaustion_seconds.values(), default=math.inf) if exh else math.inf
            inputs = health_mod.HealthInputs(
                h,
                exp_up[h] >= 1 if h in exp_up else None,
                lv_up[h] >= 1 if h in lv_up else None,
                int(alerts.get(h, 0)),
                errors.get(h, 0.0),
                soonest,
                steal.get(h, 0.0),
            )
            out.append(health_mod.score(inputs, self.s.health))
        return out

    def _slos(self) -> Mapping[str, slo.TenantSlo]:
        """Tenant SLOs; if Prometheus refuses the long query (sample limit), keep the last ones."""
        p = self.s.slo
        windows = sorted(set(p.burn_windows) | {p.window})
        template = self.s.queries["tenant_availability"]
        try:
            av = {
                w: self.source.instant_values(slo.sli_query(w, p.resolution, template), "tenant")
                for w in windows
            }
        except SourceError as exc:
            log.warning("tenant SLOs not updated: %s", exc)
            self.state.failures += 1
            return self.state.decisions.slos if self.state.decisions else {}
        return slo.evaluate(av, p)

    # -- policy events ---------------------------------------------------------------------------
    def _events(self, d: Decisions) -> None:
        """Count each raised condition once (when it starts) and write it to the audit log."""
        now_active: set[tuple[str, str]] = set()
        for sig in d.scaling:
            if sig.direction != "none":
                now_active.add((f"scale_{sig.direction}", sig.group))
        for h in d.failover:
            now_active.add(("failover", h))
        for t, s in d.slos.items():
            if s.budget_remaining <= 0:
                now_active.add(("error_budget_exhausted", t))
        for kind, key in sorted(now_active - self._active):
            self.state.events[kind] += 1
            audit.info("action=decision kind=%s subject=%s", kind, key)
        self._active = now_active
