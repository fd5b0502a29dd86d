"""Write-back of the decisions as metrics on the sidecar's `/metrics` (rendered at scrape time).

Sample output:

    novacron_group_scaling_signal{direction="out",group="web"} 1.0
    novacron_group_desired_vms{group="web"} 5.0
    novacron_vm_migration_recommended{reason="hot",source_host="kvm-a",target_host="kvm-c",vm_id="vm-7"} 1.0
    novacron_migration_plan_balance{when="after"} 0.08
    novacron_host_health_score{host="kvm-b"} 0.0
    novacron_host_failover_signal{host="kvm-b"} 1.0
    novacron_vm_evacuation_target{source_host="kvm-b",target_host="kvm-a",vm_id="vm-3"} 1.0
    novacron_placement_offer_cost_per_month{currency="USD",provider="kvm",rank="1",size="small",target="c"} 20
    novacron_tenant_slo_error_budget_remaining_ratio{tenant="acme"} 0.42
    novacron_tenant_slo_burn_rate{tenant="acme",window="1h"} 3.1
    novacron_host_expected_utilisation_ratio{horizon="6h",host="kvm-a",resource="cpu"} 0.71
    novacron_vm_tags_info{criticality="high",vm_id="vm-1",workload_class="steady"} 1.0
    novacron_vm_cpu_alert_threshold_suggested_ratio{reason="load growing",vm_id="vm-9"} 0.97
    novacron_decision_events_total{kind="failover"} 1.0
    novacron_decisions_active 1.0
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from analytics_sidecar.config import format_duration
from analytics_sidecar.decisions.engine import Decisions, DecisionState

EVENT_KINDS = ("scale_out", "scale_in", "failover", "error_budget_exhausted")


class DecisionCollector:
    def __init__(self, state: DecisionState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        st = self.state
        c = CounterMetricFamily(
            "novacron_decision_events", "Policy events raised by the decision cycle", labels=["kind"]
        )
        for kind in EVENT_KINDS:
            c.add_metric([kind], st.events.get(kind, 0))
        yield c
        f = CounterMetricFamily("novacron_decisions_failures", "Decision cycles that failed")
        f.add_metric([], st.failures)
        yield f
        yield GaugeMetricFamily(
            "novacron_decisions_active",
            "1 while this replica holds the decision lease and decides (0 on standby or before a cycle)",
            value=1.0 if st.role == "deciding" else 0.0,
        )
        d = st.decisions
        if d is None:
            return
        yield GaugeMetricFamily(
            "novacron_decisions_last_success_timestamp_seconds",
            "Unix time the last decision cycle finished",
            value=d.generated_at,
        )
        yield from _scaling(d)
        yield from _migration(d)
        yield from _health(d)
        yield from _placement(d)
        yield from _slo(d)
        yield from _insights(d)


def _g(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _scaling(d: Decisions) -> Iterator[Metric]:
    sig = _g(
        "novacron_group_scaling_signal",
        "1 for the group's stabilised scaling direction",
        ["group", "direction"],
    )
    want = _g("novacron_group_desired_vms", "VMs the group should run (HPA formula)", ["group"])
    have = _g("novacron_group_vms", "VMs the group runs", ["group"])
    util = _g("novacron_group_cpu_utilisation_ratio", "Group CPU used / vCPUs now", ["group"])
    for s in d.scaling:
        for direction in ("out", "in", "none"):
            sig.add_metric([s.group, direction], 1.0 if s.direction == direction else 0.0)
        want.add_metric([s.group], s.desired_vms)
        have.add_metric([s.group], s.current_vms)
        util.add_metric([s.group], s.utilisation)
    yield from (sig, want, have, util)


def _migration(d: Decisions) -> Iterator[Metric]:
    rec = _g(
        "novacron_vm_migration_recommended",
        "1 for each proposed move of the migration planner",
        ["vm_id", "source_host", "target_host", "reason"],
    )
    moves = _g("novacron_migration_plan_moves", "Moves in the current plan", [])
    gib = _g("novacron_migration_plan_memory_bytes", "Memory the plan's moves copy", [])
    bal = _g("novacron_migration_plan_balance", "Std dev of host utilisation before/after the plan", ["when"])
    over = _g("novacron_migration_plan_overloaded_hosts", "Hot hosts before/after the plan", ["when"])
    freed = _g("novacron_migration_plan_hosts_freed", "Hosts the plan leaves empty", [])
    if d.plan is not None:
        for m in d.plan.moves:
            rec.add_metric([m.vm_id, m.source, m.target, m.reason], 1.0)
        moves.add_metric([], len(d.plan.moves))
        gib.add_metric([], sum(m.cost for m in d.plan.moves) * (1 << 30))
        freed.add_metric([], len(d.plan.freed))
    if d.simulation is not None:
        bal.add_metric(["before"], d.simulation.balance_before)
        bal.add_metric(["after"], d.simulation.balance_after)
        over.add_metric(["before"], len(d.simulation.overloaded_before))
        over.add_metric(["after"], len(d.simulation.overloaded_after))
    yield from (rec, moves, gib, bal, over, freed)


def _health(d: Decisions) -> Iterator[Metric]:
    score = _g("novacron_host_health_score", "Host health 0-1 (exporter, libvirtd, alerts, errors)", ["host"])
    sig = _g("novacron_host_failover_signal", "1 when the host should be evacuated", ["host"])
    evac = _g(
        "novacron_vm_evacuation_target",
        "1 for each VM of a failing host and the host it should go to",
        ["vm_id", "source_host", "target_host"],
    )
    unplaced = _g(
        "novacron_vm_evacuation_unplaced", "1 for a VM of a failing host that fits nowhere", ["vm_id"]
    )
    for h in d.health:
        score.add_metric([h.host], h.score)
        sig.add_metric([h.host], 1.0 if h.host in d.failover else 0.0)
    if d.evacuation is not None:
        for m in d.evacuation.moves:
            if m.reason == "evacuate":
                evac.add_metric([m.vm_id, m.source, m.target], 1.0)
        for vm in d.evacuation.unplaced:
            unplaced.add_metric([vm], 1.0)
    yield from (score, sig, evac, unplaced)


def _placement(d: Decisions) -> Iterator[Metric]:
    fam = _g(
        "novacron_placement_offer_cost_per_month",
        "Monthly cost of placing a new VM of a size on a target, cheapest first",
        ["size", "rank", "provider", "target", "currency"],
    )
    for size, offers in d.placement.items():
        for i, o in enumerate(offers, 1):
            fam.add_metric([size, str(i), o.provider, o.target, d.currency], o.monthly)
    yield fam


def _slo(d: Decisions) -> Iterator[Metric]:
    obj = _g("novacron_tenant_slo_objective_ratio", "Availability objective of the tenant", ["tenant"])
    av = _g(
        "novacron_tenant_slo_availability_ratio", "Share of the tenant's VMs running", ["tenant", "window"]
    )
    burn = _g("novacron_tenant_slo_burn_rate", "Error ratio / allowed error ratio", ["tenant", "window"])
    left = _g(
        "novacron_tenant_slo_error_budget_remaining_ratio",
        "Error budget left over the SLO window",
        ["tenant"],
    )
    for t, s in sorted(d.slos.items()):
        obj.add_metric([t], s.objective)
        for w, a in sorted(s.availability.items()):
            av.add_metric([t, format_duration(w)], a)
        for w, b in sorted(s.burn_rates.items()):
            burn.add_metric([t, format_duration(w)], b)
        left.add_metric([t], s.budget_remaining)
    yield from (obj, av, burn, left)


def _insights(d: Decisions) -> Iterator[Metric]:
    load = _g(
        "novacron_host_expected_utilisation_ratio",
        "Forecast upper bound of host usage / capacity at a horizon",
        ["host", "resource", "horizon"],
    )
    for host, res in sorted(d.expected_load.items()):
        for resource, by_h in sorted(res.items()):
            for h, v in sorted(by_h.items()):
                load.add_metric([host, resource, format_duration(h)], v)
    tags = _g(
        "novacron_vm_tags_info", "Analytics-based tags of a VM", ["vm_id", "workload_class", "criticality"]
    )
    for t in d.tags:
        tags.add_metric([t.vm_id, t.workload_class, t.criticality], 1.0)
    sug = _g(
        "novacron_vm_cpu_alert_threshold_suggested_ratio",
        "CPU alert threshold the VM's normal load calls for (only where it differs from the default)",
        ["vm_id", "reason"],
    )
    for s in d.suggestions:
        sug.add_metric([s.vm_id, s.reason], s.suggested)
    yield from (load, tags, sug)
