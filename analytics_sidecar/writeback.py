"""Write-back: the latest analysis results as Prometheus metrics on the sidecar's `/metrics`.

Sample output:

    novacron_vm_recommended_vcpus{risk="balanced",vm_id="vm-1"} 2.0
    novacron_vm_recommended_memory_bytes{risk="balanced",vm_id="vm-1"} 4.294967296e+09
    novacron_vm_rightsizing_status{status="over_provisioned",vm_id="vm-1"} 1.0
    novacron_vm_workload_class{class="diurnal",vm_id="vm-1"} 1.0
    novacron_vm_seasonality_strength_ratio{period="daily",vm_id="vm-1"} 0.83
    novacron_vm_cpu_forecast_cores{bound="upper",horizon="1d",vm_id="vm-1"} 1.7
    novacron_host_time_to_exhaustion_seconds{host="kvm-a1",resource="memory_bytes"} 1.2096e+06
    novacron_vm_potential_savings_per_month{currency="USD",vm_id="vm-1"} 35.0
    novacron_analytics_last_success_timestamp_seconds 1.764e+09
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from analytics_sidecar import patterns
from analytics_sidecar.config import format_duration
from analytics_sidecar.engine import ANALYSES, Bounds, Results
from analytics_sidecar.source import SourceStats

RIGHTSIZING_STATES = ("over_provisioned", "under_provisioned", "optimized")


@dataclass
class State:
    """What the HTTP side reads: the last good results and the sidecar's own counters."""

    results: Results | None = None
    last_success: float | None = None
    cycles: int = 0
    failures: int = 0
    last_duration: float = 0.0
    risk: str = "balanced"
    source_stats: SourceStats | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, results: Results, when: float) -> None:
        with self.lock:
            self.results = results
            self.last_success = when
            self.cycles += 1
            self.last_duration = results.duration_seconds

    def failed(self) -> None:
        with self.lock:
            self.cycles += 1
            self.failures += 1


class WritebackCollector:
    """A prometheus_client collector that renders `State` at scrape time (no per-series objects kept)."""

    def __init__(self, state: State, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with self.state.lock:
            res, st = self.state.results, self.state
            yield from self._self_metrics(st)
        if res is not None:
            yield from self._vm_metrics(res, st.risk)
            yield from self._host_metrics(res)
            yield from self._fleet_metrics(res)

    def _self_metrics(self, st: State) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            "novacron_analytics_last_success_timestamp_seconds",
            "Unix time the last analysis cycle finished successfully",
        )
        if st.last_success is not None:
            g.add_metric([], st.last_success)
        yield g
        c = CounterMetricFamily("novacron_analytics_cycles", "Analysis cycles run", labels=["outcome"])
        c.add_metric(["success"], st.cycles - st.failures)
        c.add_metric(["failure"], st.failures)
        yield c
        yield GaugeMetricFamily(
            "novacron_analytics_cycle_duration_seconds",
            "Duration of the last successful cycle",
            value=st.last_duration,
        )
        stats = st.source_stats
        if stats is not None:
            q = CounterMetricFamily(
                "novacron_analytics_prometheus_queries",
                "PromQL queries sent to Prometheus",
                labels=["outcome"],
            )
            q.add_metric(["success"], stats.queries - stats.failures)
            q.add_metric(["failure"], stats.failures)
            yield q
            h = CounterMetricFamily(
                "novacron_analytics_query_cache",
                "Range-query chunks served from the cache or fetched",
                labels=["result"],
            )
            h.add_metric(["hit"], stats.cache_hits)
            h.add_metric(["miss"], stats.cache_misses)
            yield h
        res = st.results
        if res is None:
            return
        age = GaugeMetricFamily(
            "novacron_analytics_analysis_age_seconds",
            "Seconds since each analysis last completed",
            labels=["analysis"],
        )
        now = self.clock()
        for name in ANALYSES:
            if name in res.analysed_at:
                age.add_metric([name], max(0.0, now - res.analysed_at[name]))
        yield age
        yield GaugeMetricFamily(
            "novacron_analytics_vms_analysed",
            "VMs in this replica's shard at the last cycle",
            value=len(res.vms),
        )

    def _vm_metrics(self, res: Results, risk: str) -> Iterator[Metric]:
        rec_c = GaugeMetricFamily(
            "novacron_vm_recommended_vcpus", "Recommended whole vCPUs", labels=["vm_id", "risk"]
        )
        rec_cc = GaugeMetricFamily(
            "novacron_vm_recommended_cpu_cores",
            "Recommended CPU before rounding (percentile + headroom), cores",
            labels=["vm_id", "risk"],
        )
        rec_m = GaugeMetricFamily(
            "novacron_vm_recommended_memory_bytes", "Recommended memory", labels=["vm_id", "risk"]
        )
        status = GaugeMetricFamily(
            "novacron_vm_rightsizing_status",
            "Right-sizing verdict (state set: 1 for the current state)",
            labels=["vm_id", "status"],
        )
        idle = GaugeMetricFamily(
            "novacron_vm_idle", "1 when the VM meets the idle thresholds", labels=["vm_id"]
        )
        cls = GaugeMetricFamily(
            "novacron_vm_workload_class",
            "Workload class (state set: 1 for the current class)",
            labels=["vm_id", "class"],
        )
        season = GaugeMetricFamily(
            "novacron_vm_seasonality_strength_ratio",
            "Seasonal strength of CPU usage (0 none, 1 pure)",
            labels=["vm_id", "period"],
        )
        trend = GaugeMetricFamily(
            "novacron_vm_cpu_trend_cores_per_second",
            "Theil-Sen slope of daily median CPU usage",
            labels=["vm_id"],
        )
        trend_p = GaugeMetricFamily(
            "novacron_vm_cpu_trend_p_value", "Mann-Kendall p-value of the CPU trend", labels=["vm_id"]
        )
        outl = GaugeMetricFamily(
            "novacron_vm_cpu_outlier_ratio",
            "Share of hourly CPU samples flagged as outliers",
            labels=["vm_id"],
        )
        fc_c = GaugeMetricFamily(
            "novacron_vm_cpu_forecast_cores",
            "Forecast CPU usage with prediction bounds",
            labels=["vm_id", "horizon", "bound"],
        )
        fc_m = GaugeMetricFamily(
            "novacron_vm_memory_forecast_bytes",
            "Forecast memory usage with prediction bounds",
            labels=["vm_id", "horizon", "bound"],
        )
        cost_now = GaugeMetricFamily(
            "novacron_vm_cost_per_month",
            "Monthly cost from the price catalogue",
            labels=["vm_id", "currency"],
        )
        savings = GaugeMetricFamily(
            "novacron_vm_potential_savings_per_month",
            "Monthly saving at the recommendation (all of it if idle)",
            labels=["vm_id", "currency"],
        )
        eff = GaugeMetricFamily(
            "novacron_vm_efficiency_ratio",
            "Efficiency score: mean of min(1, p95 usage / allocation)",
            labels=["vm_id"],
        )
        for vm, r in sorted(res.vms.items()):
            if r.recommendation:
                rec = r.recommendation
                rec_c.add_metric([vm, risk], rec.vcpus)
                rec_cc.add_metric([vm, risk], rec.cpu_cores)
                rec_m.add_metric([vm, risk], rec.memory_bytes)
                for s in RIGHTSIZING_STATES:
                    status.add_metric([vm, s], 1.0 if rec.status == s else 0.0)
            idle.add_metric([vm], 1.0 if r.idle else 0.0)
            if r.patterns:
                p = r.patterns
                for c in patterns.CLASSES:
                    cls.add_metric([vm, c], 1.0 if p.workload_class == c else 0.0)
                season.add_metric([vm, "daily"], p.daily_strength)
                season.add_metric([vm, "weekly"], p.weekly_strength)
                trend.add_metric([vm], p.trend.slope_per_second)
                trend_p.add_metric([vm], p.trend.p_value)
                outl.add_metric([vm], p.outlier_ratio)
            _add_forecasts(fc_c, [vm], r.forecasts.get("cpu_cores", {}))
            _add_forecasts(fc_m, [vm], r.forecasts.get("memory_bytes", {}))
            if r.cost:
                cost_now.add_metric([vm, res.currency], r.cost.monthly)
                savings.add_metric([vm, res.currency], r.cost.monthly - r.cost.rightsized_monthly)
            if r.efficiency is not None:
                eff.add_metric([vm], r.efficiency)
        yield from (rec_c, rec_cc, rec_m, status, idle, cls, season, trend, trend_p, outl, fc_c, fc_m)
        yield from (cost_now, savings, eff)
        nb = GaugeMetricFamily(
            "novacron_vm_neighbour_cpu_correlation",
            "Pearson correlation of CPU usage with a VM on the same host",
            labels=["vm_id", "neighbour_vm_id", "host"],
        )
        for n in res.neighbours:
            nb.add_metric([n.vm_id, n.neighbour_vm_id, n.host], n.correlation)
        yield nb

    def _host_metrics(self, res: Results) -> Iterator[Metric]:
        fc_c = GaugeMetricFamily(
            "novacron_host_cpu_forecast_cores",
            "Forecast host CPU usage with bounds",
            labels=["host", "horizon", "bound"],
        )
        fc_m = GaugeMetricFamily(
            "novacron_host_memory_forecast_bytes",
            "Forecast host memory usage with bounds",
            labels=["host", "horizon", "bound"],
        )
        exh = GaugeMetricFamily(
            "novacron_host_time_to_exhaustion_seconds",
            "Seconds until the forecast peak reaches the host's capacity (+Inf: not growing)",
            labels=["host", "resource"],
        )
        eff = GaugeMetricFamily(
            "novacron_host_efficiency_ratio",
            "Mean of min(1, sum of VM p95 usage / host capacity)",
            labels=["host"],
        )
        for h, r in sorted(res.hosts.items()):
            _add_forecasts(fc_c, [h], r.forecasts.get("cpu_cores", {}))
            _add_forecasts(fc_m, [h], r.forecasts.get("memory_bytes", {}))
            for resource, seconds in r.exhaustion_seconds.items():
                exh.add_metric([h, resource], seconds)
            if r.efficiency is not None:
                eff.add_metric([h], r.efficiency)
        pool = GaugeMetricFamily(
            "novacron_storage_pool_time_to_exhaustion_seconds",
            "Seconds until the pool's forecast usage reaches its capacity (+Inf: not growing)",
            labels=["host", "pool"],
        )
        pool_fc = GaugeMetricFamily(
            "novacron_storage_pool_forecast_bytes",
            "Forecast pool usage with bounds",
            labels=["host", "pool", "horizon", "bound"],
        )
        for p in res.pools:
            pool.add_metric([p.host, p.pool], p.exhaustion_seconds)
            _add_forecasts(pool_fc, [p.host, p.pool], p.forecasts)
        yield from (fc_c, fc_m, exh, eff, pool, pool_fc)

    def _fleet_metrics(self, res: Results) -> Iterator[Metric]:
        t_eff = GaugeMetricFamily(
            "novacron_tenant_efficiency_ratio",
            "Mean of min(1, tenant's p95 usage / allocation)",
            labels=["tenant"],
        )
        t_cost = GaugeMetricFamily(
            "novacron_tenant_cost_per_month",
            "Monthly cost of the tenant's VMs (now and right-sized)",
            labels=["tenant", "currency", "scenario"],
        )
        t_fc = GaugeMetricFamily(
            "novacron_tenant_cpu_forecast_cores",
            "Sum of the tenant's VM CPU forecasts (bounds summed)",
            labels=["tenant", "horizon", "bound"],
        )
        t_cost_fc = GaugeMetricFamily(
            "novacron_tenant_cost_forecast_per_month",
            "Monthly cost of the tenant's VMs sized to their forecast upper bounds at the horizon",
            labels=["tenant", "currency", "horizon"],
        )
        for t, r in sorted(res.tenants.items()):
            for horizon, v in sorted(r.cost_forecast.items()):
                t_cost_fc.add_metric([t, res.currency, format_duration(horizon)], v)
            if r.efficiency is not None:
                t_eff.add_metric([t], r.efficiency)
            t_cost.add_metric([t, res.currency, "current"], r.monthly_cost)
            t_cost.add_metric([t, res.currency, "rightsized"], r.rightsized_monthly_cost)
            _add_forecasts(t_fc, [t], r.cpu_forecast)
        yield from (t_eff, t_cost, t_fc, t_cost_fc)
        if res.consolidation is None:
            return
        c = res.consolidation
        hosts = GaugeMetricFamily(
            "novacron_consolidation_hosts",
            "Hosts in use now and needed after consolidation",
            labels=["scenario"],
        )
        hosts.add_metric(["current"], c.hosts_current)
        hosts.add_metric(["needed"], c.hosts_needed)
        yield hosts
        freed = GaugeMetricFamily(
            "novacron_consolidation_host_freed",
            "1 for each host the consolidation plan empties",
            labels=["host"],
        )
        for h in c.hosts_freed:
            freed.add_metric([h], 1.0)
        yield freed
        place = GaugeMetricFamily(
            "novacron_vm_consolidation_target_host",
            "Host the consolidation plan puts the VM on (value 1)",
            labels=["vm_id", "host"],
        )
        for vm, h in sorted(c.placement.items()):
            place.add_metric([vm, h], 1.0)
        yield place
        yield _single(
            "novacron_consolidation_savings_per_month",
            "Monthly cost of the hosts the consolidation plan frees",
            ["currency"],
            [res.currency],
            c.monthly_savings,
        )


def _single(name: str, doc: str, labels: list[str], values: list[str], value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=labels)
    g.add_metric(values, value)
    return g


def _add_forecasts(fam: GaugeMetricFamily, prefix: list[str], fc: Mapping[float, Bounds]) -> None:
    for h, (p, lo, hi) in sorted(fc.items()):
        label = format_duration(h)
        fam.add_metric([*prefix, label, "point"], p)
        fam.add_metric([*prefix, label, "lower"], lo)
        fam.add_metric([*prefix, label, "upper"], hi)
