"""One analysis cycle: read the fleet from Prometheus, run every analysis, return one immutable result set."""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analytics_sidecar import consolidation, cost, forecast, patterns, rightsizing
from analytics_sidecar.config import Config
from analytics_sidecar.series import Series, regularise
from analytics_sidecar.source import PromSource, SourceError, in_shard, labels_of, shard_of, vm_filter

log = logging.getLogger(__name__)

Bounds = tuple[float, float, float]  # point, lower, upper
# Called with (kind "vm" or "host", resource "cpu" or "memory", labels, utilisation ratio series) for every
# series a cycle reads, so other analyses (the anomaly detectors) reuse the same reads.
Observer = Callable[[str, str, Mapping[str, str], Series], None]
ANALYSES = ("patterns", "rightsizing", "forecast", "capacity", "consolidation", "cost", "efficiency")


@dataclass(frozen=True)
class VmResult:
    vm_id: str
    labels: Mapping[str, str]
    vcpus: float | None
    memory_bytes: float | None
    cpu_p95_cores: float | None
    memory_p95_bytes: float | None
    idle: bool
    patterns: patterns.Patterns | None
    recommendation: rightsizing.Recommendation | None
    forecasts: Mapping[str, Mapping[float, Bounds]]  # resource -> horizon seconds -> bounds
    cost: cost.VmCost | None
    cost_forecast: Mapping[float, float]  # horizon -> monthly cost of the size the forecast upper bound needs
    efficiency: float | None

    @property
    def tenant(self) -> str:
        return self.labels.get("tenant", "")

    @property
    def host(self) -> str:
        return self.labels.get("host", "")


@dataclass(frozen=True)
class HostResult:
    host: str
    cpus: float | None
    memory_bytes: float | None
    forecasts: Mapping[str, Mapping[float, Bounds]]
    exhaustion_seconds: Mapping[str, float]  # resource -> seconds from the analysis time
    efficiency: float | None


@dataclass(frozen=True)
class PoolResult:
    host: str
    pool: str
    capacity_bytes: float
    used_bytes: float
    exhaustion_seconds: float
    forecasts: Mapping[float, Bounds]


@dataclass(frozen=True)
class TenantResult:
    tenant: str
    efficiency: float | None
    monthly_cost: float
    rightsized_monthly_cost: float
    cpu_forecast: Mapping[float, Bounds]
    cost_forecast: Mapping[float, float]


@dataclass(frozen=True)
class Neighbour:
    vm_id: str
    neighbour_vm_id: str
    host: str
    correlation: float


@dataclass(frozen=True)
class ConsolidationResult:
    hosts_current: int
    hosts_needed: int
    hosts_freed: tuple[str, ...]
    placement: Mapping[str, str]
    unplaced: tuple[str, ...]
    monthly_savings: float


@dataclass(frozen=True)
class Results:
    generated_at: float
    duration_seconds: float
    shard: str
    vms: Mapping[str, VmResult] = field(default_factory=dict)
    hosts: Mapping[str, HostResult] = field(default_factory=dict)
    pools: tuple[PoolResult, ...] = ()
    tenants: Mapping[str, TenantResult] = field(default_factory=dict)
    neighbours: tuple[Neighbour, ...] = ()
    consolidation: ConsolidationResult | None = None
    currency: str = "USD"
    analysed_at: Mapping[str, float] = field(default_factory=dict)  # analysis name -> time it finished


class Engine:
    """Runs cycles; the HTTP side only reads the Results object a cycle returns."""

    def __init__(
        self,
        cfg: Config,
        source: PromSource,
        clock: Callable[[], float] = time.time,
        observer: Observer | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.clock = clock
        self.observer = observer
        self.catalogue = cost.load_catalogue(cfg.catalogue_file)

    # -- reading ---------------------------------------------------------------------------------
    def _vm_ids(self) -> tuple[dict[str, dict[str, str]], list[str]]:
        """This shard's VMs and the `$vm_filter` matchers that select them, `batch_size` ids per matcher."""
        info: dict[str, dict[str, str]] = {}
        for r in self.source.instant(self.cfg.query("vm_info")):
            labels = labels_of(r["metric"])
            vm = labels.get("vm_id")
            if vm and in_shard(vm, self.cfg.shard):
                info[vm] = labels
        if self.cfg.shard.count == 1:
            return info, [vm_filter(None)]
        ids, size = sorted(info), self.cfg.analysis.batch_size
        # Batches keep each query's URL short (the matcher travels in it) and stable from cycle to cycle.
        return info, [vm_filter(ids[i : i + size]) for i in range(0, len(ids), size)]

    def read_vms(self, now: float) -> dict[str, Any]:
        """Everything per VM this shard needs: labels, allocations, usage series."""
        info, filters = self._vm_ids()
        start = now - self.cfg.analysis.lookback
        q, src = self.cfg.query, self.source
        data: dict[str, Any] = {"info": info, "vcpus": {}, "memory": {}, "cpu": {}, "mem_used": {}, "net": {}}
        for flt in filters:
            data["vcpus"].update(src.instant_values(q("vm_vcpus", flt)))
            data["memory"].update(src.instant_values(q("vm_memory_bytes", flt)))
            data["cpu"].update(src.range(q("vm_cpu_cores", flt), start, now))
            data["mem_used"].update(src.range(q("vm_memory_used_bytes", flt), start, now))
            data["net"].update(src.range(q("vm_network_bytes_per_second", flt), start, now))
        return data

    # -- the cycle -------------------------------------------------------------------------------
    def run(self) -> Results:
        t0 = time.perf_counter()
        now = self.clock()
        done: dict[str, float] = {}
        data = self.read_vms(now)
        data["host_capacity"] = self._all_host_capacities()
        vms = {vm: self._analyse_vm(vm, labels, data, now) for vm, labels in data["info"].items()}
        for name in ("patterns", "rightsizing", "forecast", "cost", "efficiency"):
            done[name] = self.clock()
        hosts, pools = self._capacity(now, vms)
        done["capacity"] = self.clock()
        neighbours = self._neighbours(vms, data["cpu"])
        plan = self._consolidate(vms, hosts)
        if plan is not None:
            done["consolidation"] = self.clock()
        tenants = self._tenants(vms)
        return Results(
            generated_at=now,
            duration_seconds=time.perf_counter() - t0,
            shard=f"{self.cfg.shard.index}/{self.cfg.shard.count}",
            vms=vms,
            hosts=hosts,
            pools=tuple(pools),
            tenants=tenants,
            neighbours=tuple(neighbours),
            consolidation=plan,
            currency=self.catalogue.currency,
            analysed_at=done,
        )

    def _analyse_vm(
        self, vm: str, labels: Mapping[str, str], data: Mapping[str, Any], now: float
    ) -> VmResult:
        cfg = self.cfg
        cpu: Series = data["cpu"].get(vm, Series.of([], []))
        mem: Series = data["mem_used"].get(vm, Series.of([], []))
        net: Series | None = data["net"].get(vm)
        vcpus = data["vcpus"].get(vm)
        memory = data["memory"].get(vm)
        cpu_f, mem_f = cpu.finite(), mem.finite()
        if self.observer is not None:
            if vcpus and len(cpu_f):
                self.observer("vm", "cpu", labels, Series(cpu_f.t, cpu_f.v / vcpus))
            if memory and len(mem_f):
                self.observer("vm", "memory", labels, Series(mem_f.t, mem_f.v / memory))
        idle = False
        if vcpus and len(cpu_f):
            idle = rightsizing.is_idle(Series(cpu_f.t, cpu_f.v / vcpus), net, cfg.idle)
        pats = patterns.analyse(cpu_f, idle, cfg.patterns) if len(cpu_f) else None
        rec = rightsizing.recommend(cpu_f, mem_f, now, vcpus, memory, cfg.rightsizing)
        forecasts: dict[str, dict[float, Bounds]] = {}
        for resource, series in (("cpu_cores", cpu_f), ("memory_bytes", mem_f)):
            model = forecast.fit(series, now + 1e-6, cfg.forecast) if len(series) else None
            if model is not None:
                forecasts[resource] = _at_horizons(model, now, cfg.analysis.horizons)
        cpu_p95 = float(np.percentile(cpu_f.v, 95)) if len(cpu_f) else None
        mem_p95 = float(np.percentile(mem_f.v, 95)) if len(mem_f) else None
        vm_cost = None
        if vcpus and memory and rec is not None:
            host_cap = data.get("host_capacity", {}).get(labels.get("host", ""))
            vm_cost = cost.vm_cost(
                self.catalogue, labels, vcpus, memory, rec.vcpus, rec.memory_bytes, idle, host_cap
            )
        cost_fc: dict[float, float] = {}
        if vm_cost is not None and vcpus and memory:
            cost_fc = self._cost_forecast(labels, vcpus, memory, forecasts, data)
        return VmResult(
            cost_forecast=cost_fc,
            vm_id=vm,
            labels=labels,
            vcpus=vcpus,
            memory_bytes=memory,
            cpu_p95_cores=cpu_p95,
            memory_p95_bytes=mem_p95,
            idle=idle,
            patterns=pats,
            recommendation=rec,
            forecasts=forecasts,
            cost=vm_cost,
            efficiency=efficiency([(cpu_p95, vcpus), (mem_p95, memory)]),
        )

    def _cost_forecast(
        self,
        labels: Mapping[str, str],
        vcpus: float,
        memory: float,
        forecasts: Mapping[str, Mapping[float, Bounds]],
        data: Mapping[str, Any],
    ) -> dict[float, float]:
        """What the VM will cost at each horizon if sized to its forecast's upper bound (no idle shortcut)."""
        cpu_fc, mem_fc = forecasts.get("cpu_cores", {}), forecasts.get("memory_bytes", {})
        host_cap = data.get("host_capacity", {}).get(labels.get("host", ""))
        out: dict[float, float] = {}
        for h in self.cfg.analysis.horizons:
            if h not in cpu_fc or h not in mem_fc:
                continue
            need_cpu = max(1, math.ceil(cpu_fc[h][2] - 1e-9))
            c = cost.vm_cost(
                self.catalogue,
                labels,
                vcpus,
                memory,
                need_cpu,
                mem_fc[h][2],
                False,
                host_cap,
                cap_at_current=False,
            )
            if c is not None:
                out[h] = c.rightsized_monthly
        return out

    def _capacity(
        self, now: float, vms: Mapping[str, VmResult]
    ) -> tuple[dict[str, HostResult], list[PoolResult]]:
        """Host and storage pool forecasts and times to exhaustion (hosts split across shards by name)."""
        q, src, cfg = self.cfg.query, self.source, self.cfg
        start = now - cfg.analysis.lookback
        mine = self._mine
        cpus = {h: v for h, v in src.instant_values(q("host_cpus"), "host").items() if mine(h)}
        mems = {h: v for h, v in src.instant_values(q("host_memory_bytes"), "host").items() if mine(h)}
        cpu_used = src.range(q("host_cpu_cores_used"), start, now, "host")
        mem_used = src.range(q("host_memory_used_bytes"), start, now, "host")
        by_host: dict[str, list[VmResult]] = defaultdict(list)
        for r in vms.values():
            if r.host:
                by_host[r.host].append(r)
        hosts: dict[str, HostResult] = {}
        for h in sorted(set(cpus) | set(mems)):
            fc: dict[str, dict[float, Bounds]] = {}
            exh: dict[str, float] = {}
            for resource, series, capacity in (
                ("cpu_cores", cpu_used.get(h), cpus.get(h)),
                ("memory_bytes", mem_used.get(h), mems.get(h)),
            ):
                model = forecast.fit(series, now + 1e-6, cfg.forecast) if series is not None else None
                if model is None:
                    continue
                if self.observer is not None and series is not None and capacity:
                    kind = "cpu" if resource == "cpu_cores" else "memory"
                    f = series.finite()
                    self.observer("host", kind, {"host": h}, Series(f.t, f.v / capacity))
                fc[resource] = _at_horizons(model, now, cfg.analysis.horizons)
                if capacity:
                    exh[resource] = forecast.time_to_exhaustion(model, capacity, now)
            members = by_host.get(h, [])
            eff = efficiency(
                [
                    (_sum(r.cpu_p95_cores for r in members), cpus.get(h)),
                    (_sum(r.memory_p95_bytes for r in members), mems.get(h)),
                ]
            )
            hosts[h] = HostResult(h, cpus.get(h), mems.get(h), fc, exh, eff)
        pools: list[PoolResult] = []
        caps = src.instant_values(q("pool_capacity_bytes"), ("host", "pool"))
        used = src.range(q("pool_used_bytes"), start, now, ("host", "pool"))
        for (h, p), capacity in sorted(caps.items()):
            series = used.get((h, p))
            if not mine(h) or series is None or not len(series.finite()):
                continue
            model = forecast.fit(series, now + 1e-6, cfg.forecast)
            if model is None:
                continue
            last = float(series.finite().v[-1])
            pools.append(
                PoolResult(
                    h,
                    p,
                    capacity,
                    last,
                    forecast.time_to_exhaustion(model, capacity, now),
                    _at_horizons(model, now, cfg.analysis.horizons),
                )
            )
        return hosts, pools

    def _mine(self, host: str) -> bool:
        return self.cfg.shard.count == 1 or self.cfg.shard.owns(shard_of(host, self.cfg.shard.count))

    def _neighbours(self, vms: Mapping[str, VmResult], cpu: Mapping[str, Series]) -> list[Neighbour]:
        step = self.cfg.analysis.step
        by_host: dict[str, dict[str, Series]] = defaultdict(dict)
        for r in vms.values():
            if r.host and r.vm_id in cpu and not r.idle:
                by_host[r.host][r.vm_id] = cpu[r.vm_id]
        out: list[Neighbour] = []
        for host, members in sorted(by_host.items()):
            if len(members) < 2:
                continue
            end = max(float(s.t[-1]) for s in members.values() if len(s)) + step
            start = min(float(s.t[0]) for s in members.values() if len(s))
            grid = {vm: regularise(s, step, end=end, start=start) for vm, s in members.items()}
            n = self.cfg.neighbours
            for a, b, corr in patterns.neighbour_correlations(grid, n.min_correlation, n.max_per_vm):
                out.append(Neighbour(a, b, host, corr))
        return out

    def _consolidate(
        self, vms: Mapping[str, VmResult], hosts: Mapping[str, HostResult]
    ) -> ConsolidationResult | None:
        """Pack KVM VMs at their recommended sizes; with shards, shard 0 reads every shard's results back."""
        cfg = self.cfg
        if cfg.shard.count > 1 and not cfg.shard.owns(0):  # share 0's owner (or its adopter) plans
            return None
        kvm = {vm: r for vm, r in vms.items() if r.labels.get("provider") == "kvm" and r.host}
        sizes: dict[str, tuple[float, float]] = {
            vm: (float(r.recommendation.vcpus), float(r.recommendation.memory_bytes))
            for vm, r in kvm.items()
            if r.recommendation
        }
        info: Mapping[str, Mapping[str, str]] = {vm: r.labels for vm, r in kvm.items()}
        if cfg.shard.count > 1:
            try:
                info, sizes = self._fleet_recommendations()
            except SourceError as exc:
                log.warning("consolidation skipped: %s", exc)
                return None
        host_caps = {h: (r.cpus, r.memory_bytes) for h, r in hosts.items() if r.cpus and r.memory_bytes}
        if cfg.shard.count > 1:
            host_caps = self._all_host_capacities()
        current = {info[vm].get("host", "") for vm in sizes if info.get(vm, {}).get("host")}
        bins = [
            consolidation.Bin(
                h, c * cfg.consolidation.cpu_overcommit, m * cfg.consolidation.memory_overcommit
            )
            for h, (c, m) in host_caps.items()
        ]
        if not bins or not sizes:
            return None
        label = cfg.consolidation.anti_affinity_label
        items = [
            consolidation.Item(vm, float(c), float(m), info.get(vm, {}).get(label, ""))
            for vm, (c, m) in sizes.items()
        ]
        plan = consolidation.pack(items, bins)
        freed = tuple(sorted((current & set(host_caps)) - set(plan.hosts_used)))
        savings = sum(self.catalogue.host_cost(h) or 0.0 for h in freed)
        return ConsolidationResult(
            len(current), plan.hosts_needed, freed, dict(plan.placement), plan.unplaced, savings
        )

    def _fleet_recommendations(self) -> tuple[dict[str, dict[str, str]], dict[str, tuple[float, float]]]:
        q, src = self.cfg.query, self.source
        info = {
            labels_of(r["metric"])["vm_id"]: labels_of(r["metric"])
            for r in src.instant(q("vm_info"))
            if r["metric"].get("vm_id")
        }
        kvm = {
            vm: labels
            for vm, labels in info.items()
            if labels.get("provider") == "kvm" and labels.get("host")
        }
        vc = src.instant_values(q("recommended_vcpus"))
        mem = src.instant_values(q("recommended_memory_bytes"))
        return kvm, {vm: (vc[vm], mem[vm]) for vm in kvm if vm in vc and vm in mem}

    def _all_host_capacities(self) -> dict[str, tuple[float, float]]:
        cpus = self.source.instant_values(self.cfg.query("host_cpus"), "host")
        mems = self.source.instant_values(self.cfg.query("host_memory_bytes"), "host")
        return {h: (cpus[h], mems[h]) for h in cpus if h in mems and cpus[h] > 0 and mems[h] > 0}

    def _tenants(self, vms: Mapping[str, VmResult]) -> dict[str, TenantResult]:
        groups: dict[str, list[VmResult]] = defaultdict(list)
        for r in vms.values():
            groups[r.tenant].append(r)
        out: dict[str, TenantResult] = {}
        for tenant, members in sorted(groups.items()):
            eff = efficiency(
                [
                    (_sum(r.cpu_p95_cores for r in members), _sum(r.vcpus for r in members)),
                    (_sum(r.memory_p95_bytes for r in members), _sum(r.memory_bytes for r in members)),
                ]
            )
            horizons: dict[float, list[Bounds]] = defaultdict(list)
            for r in members:
                for h, b in r.forecasts.get("cpu_cores", {}).items():
                    horizons[h].append(b)
            cpu_fc = {
                h: (sum(b[0] for b in bs), sum(b[1] for b in bs), sum(b[2] for b in bs))
                for h, bs in horizons.items()
            }
            costs = [r.cost for r in members if r.cost]
            cost_fc: dict[float, float] = defaultdict(float)
            for r in members:
                for h, v in r.cost_forecast.items():
                    cost_fc[h] += v
            out[tenant] = TenantResult(
                tenant,
                eff,
                sum(c.monthly for c in costs),
                sum(c.rightsized_monthly for c in costs),
                cpu_fc,
                dict(cost_fc),
            )
        return out


def efficiency(pairs: list[tuple[float | None, float | None]]) -> float | None:
    """Mean over resources of min(1, p95 usage / allocation); resources without data are left out."""
    ratios = [
        min(1.0, max(0.0, u / a)) for u, a in pairs if u is not None and a and a > 0 and math.isfinite(u)
    ]
    return sum(ratios) / len(ratios) if ratios else None


def _sum(values: Any) -> float | None:
    vals = [v for v in values if v is not None]
    return float(sum(vals)) if vals else None


def _at_horizons(
    model: forecast.SeasonalModel, now: float, horizons: tuple[float, ...]
) -> dict[float, Bounds]:
    ts = np.array([now + h for h in horizons])
    p, lo, hi = model.predict(ts)
    return {h: (float(p[i]), float(lo[i]), float(hi[i])) for i, h in enumerate(horizons)}
