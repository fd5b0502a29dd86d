"""Unit and property tests of the decision models: scaling, migrations, health, placement, SLOs, insights."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics_sidecar.cost import Catalogue, InstanceType
from analytics_sidecar.decisions import config as dconfig
from analytics_sidecar.decisions import health, migration, placement, scaling, slo
from exporters.common.config import ConfigError

GIB = float(1 << 30)
P = migration.MigrationPolicy()


# -- scaling -----------------------------------------------------------------------------------------
def _load(util: float, vms: int = 4, forecast: float | None = None) -> scaling.GroupLoad:
    return scaling.GroupLoad("web", vms, 4.0 * vms, util * 4.0 * vms, forecast)


def _run(trig: scaling.ScalingTriggers, utils: list[float], step: float = 60.0) -> list[str]:
    return [trig.update([_load(u)], i * step)[0].direction for i, u in enumerate(utils)]


def test_scale_out_needs_the_whole_window() -> None:
    p = scaling.ScalingPolicy(scale_out_window=180, cooldown=600)
    dirs = _run(scaling.ScalingTriggers(p), [0.95] * 6)
    assert dirs == ["none", "none", "none", "out", "out", "out"]


def test_flapping_input_never_triggers() -> None:
    p = scaling.ScalingPolicy(scale_out_window=120, scale_in_window=120)
    dirs = _run(scaling.ScalingTriggers(p), [0.95, 0.1, 0.95, 0.1, 0.95, 0.1, 0.95, 0.1] * 3)
    assert set(dirs) == {"none"}


def test_cooldown_blocks_a_second_signal() -> None:
    p = scaling.ScalingPolicy(scale_out_window=60, scale_in_window=60, cooldown=600)
    dirs = _run(scaling.ScalingTriggers(p), [0.95] * 3 + [0.1] * 4 + [0.1] * 8)
    assert dirs[1] == "out"
    first_in = dirs.index("in")
    assert first_in * 60 >= 60 + 600  # the scale-in waited for the cooldown of the scale-out
    assert "in" not in dirs[:first_in]


def test_desired_vms_follows_the_hpa_formula() -> None:
    trig = scaling.ScalingTriggers(scaling.ScalingPolicy(scale_out_window=0, target=0.6))
    sig = trig.update([_load(0.9, vms=4)], 0.0)[0]
    assert sig.direction == "out" and sig.desired_vms == math.ceil(4 * 0.9 / 0.6)


def test_forecast_alone_can_scale_out_but_not_in() -> None:
    p = scaling.ScalingPolicy(scale_out_window=0, scale_in_window=0)
    high_fc = scaling.GroupLoad("g", 2, 8, 2.0, 7.5)
    assert scaling.ScalingTriggers(p).update([high_fc], 0)[0].direction == "out"
    low_now_high_fc = scaling.GroupLoad("g", 2, 8, 0.5, 4.0)
    assert scaling.ScalingTriggers(p).update([low_now_high_fc], 0)[0].direction == "none"


# -- migrations ----------------------------------------------------------------------------------------
def _fleet() -> tuple[list[migration.Host], list[migration.Vm]]:
    hosts = [migration.Host(f"h{i}", 16, 64 * GIB) for i in range(4)]
    vms = [
        migration.Vm("hot-1", "h0", 6, 8 * GIB, "db"),
        migration.Vm("hot-2", "h0", 5, 8 * GIB),
        migration.Vm("hot-3", "h0", 4, 8 * GIB),
        migration.Vm("db-2", "h1", 2, 8 * GIB, "db"),
        migration.Vm("small", "h2", 1, 4 * GIB),
        migration.Vm("mid", "h3", 6, 16 * GIB),
    ]
    return hosts, vms


def test_hot_host_is_relieved_without_breaking_anti_affinity() -> None:
    hosts, vms = _fleet()
    plan = migration.plan(hosts, vms, P)
    assert plan.moves and not plan.still_hot
    assert all(m.source == "h0" and m.reason == "hot" for m in plan.moves)
    moved = {m.vm_id: m.target for m in plan.moves}
    assert moved.get("hot-1") != "h1"  # db-2 is there
    sim = migration.simulate(hosts, vms, [(m.vm_id, m.target) for m in plan.moves], P)
    assert sim.overloaded_before == ("h0",) and sim.overloaded_after == ()
    assert sim.anti_affinity_violations == 0 and sim.balance_after < sim.balance_before


def test_consolidation_drains_a_light_host() -> None:
    hosts = [migration.Host(f"h{i}", 16, 64 * GIB) for i in range(3)]
    vms = [
        migration.Vm("a", "h0", 4, 16 * GIB),
        migration.Vm("b", "h1", 4, 16 * GIB),
        migration.Vm("c", "h2", 1, 4 * GIB),
    ]
    plan = migration.plan(hosts, vms, P)
    assert plan.freed == ("h2",)
    assert [(m.vm_id, m.reason) for m in plan.moves] == [("c", "consolidate")]
    assert not migration.plan(hosts, vms, migration.MigrationPolicy(consolidate=False)).moves


def test_evacuation_moves_every_vm_or_reports_it() -> None:
    hosts, vms = _fleet()
    plan = migration.plan(hosts, vms, P, evacuate=["h3"])
    assert next(m.vm_id for m in plan.moves if m.reason == "evacuate") == "mid"
    assert "h3" not in {m.target for m in plan.moves}
    tiny = [migration.Host("a", 2, 4 * GIB), migration.Host("b", 2, 4 * GIB)]
    big = [migration.Vm("big", "a", 1.8, 3 * GIB), migration.Vm("x", "b", 1, 1 * GIB)]
    assert migration.plan(tiny, big, P, evacuate=["a"]).unplaced == ("big",)


def test_simulation_rejects_unknown_names() -> None:
    hosts, vms = _fleet()
    with pytest.raises(ValueError, match="unknown vm_id"):
        migration.simulate(hosts, vms, [("nope", "h1")], P)
    with pytest.raises(ValueError, match="unknown host"):
        migration.simulate(hosts, vms, [("small", "h9")], P)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[migration.Host], list[migration.Vm], list[str]]:
    n_hosts = draw(st.integers(2, 6))
    hosts = [
        migration.Host(
            f"h{i}",
            draw(st.sampled_from([4.0, 8.0, 16.0])),
            draw(st.sampled_from([8.0, 32.0, 64.0])) * GIB,
            steal=draw(st.sampled_from([0.0, 0.0, 0.3])),
        )
        for i in range(n_hosts)
    ]
    vms: list[migration.Vm] = []
    for j in range(draw(st.integers(1, 18))):
        h = draw(st.sampled_from(hosts))
        group = draw(st.sampled_from(["", "", "g1", "g2"]))
        # anti-affinity holds before planning; the planner must keep it
        if group and any(v.group == group and v.host == h.name for v in vms):
            group = ""
        vms.append(
            migration.Vm(
                f"vm{j}",
                h.name,
                draw(st.floats(0.1, h.cpus * 0.6)),
                draw(st.floats(0.25, 0.5 * h.memory_bytes / GIB)) * GIB,
                group,
            )
        )
    evac = draw(st.lists(st.sampled_from([h.name for h in hosts]), max_size=1))
    return hosts, vms, evac


@settings(max_examples=150, deadline=None)
@given(fleets())
def test_moves_never_overload_a_target_or_break_anti_affinity(
    fleet: tuple[list[migration.Host], list[migration.Vm], list[str]],
) -> None:
    hosts, vms, evac = fleet
    plan = migration.plan(hosts, vms, P, evacuate=evac)
    sim = migration.simulate(hosts, vms, [(m.vm_id, m.target) for m in plan.moves], P)
    assert sim.anti_affinity_violations == 0
    targets = {m.target for m in plan.moves}
    sources = {m.source for m in plan.moves}
    assert not targets & set(evac)
    for t in targets:
        assert t not in sources  # a target is never also emptied or relieved
        row = sim.hosts[t]
        assert row["cpu_after"] <= P.target_cpu_max + 1e-6
        assert row["memory_after"] <= P.target_memory_max + 1e-6
    assert len({m.vm_id for m in plan.moves}) == len(plan.moves)  # each VM moves at most once
    if evac:
        left = {v.vm_id for v in vms if v.host == evac[0]} - {m.vm_id for m in plan.moves}
        assert left == set(plan.unplaced)


# -- health ----------------------------------------------------------------------------------------
def test_health_scores_and_failover_hold() -> None:
    hp = health.HealthPolicy(failover_for=120)
    ok = health.score(health.HealthInputs("a", True, True), hp)
    down = health.score(health.HealthInputs("b", True, False), hp)
    warn = health.score(health.HealthInputs("c", True, True, alerts=1, exhaustion_seconds=3600), hp)
    assert ok.score == 1.0 and down.score == 0.0 and "libvirtd down" in down.reasons
    assert warn.score == pytest.approx(0.5)
    gate = health.FailoverGate(hp)
    assert gate.update([ok, down], 0) == set()
    assert gate.update([ok, down], 60) == set()
    assert gate.update([ok, down], 120) == {"b"}
    assert gate.update([ok, health.Health("b", 1.0, ())], 180) == set()  # recovered: no signal
    assert gate.update([ok, down], 240) == set()  # the hold time starts again


# -- placement -------------------------------------------------------------------------------------
def test_placement_cheapest_first_with_headroom() -> None:
    cat = Catalogue(
        instance_types={
            ("aws", "m5.large"): InstanceType("aws", "m5.large", 0.096, 2, 8 * GIB),
            ("aws", "m5.xlarge"): InstanceType("aws", "m5.xlarge", 0.192, 4, 16 * GIB),
            ("gcp", "n2-standard-2"): InstanceType("gcp", "n2-standard-2", 0.097, 2, 8 * GIB),
        },
        host_monthly={"default": 400.0},
    )
    hosts = {"idle": (32.0, 128 * GIB, 2.0, 10 * GIB), "busy": (32.0, 128 * GIB, 30.0, 100 * GIB)}
    offers = placement.offers(placement.Size("small", 2, 4 * GIB), cat, hosts, 0.75, 0.85)
    assert [o.target for o in offers] == ["idle", "m5.large", "n2-standard-2"]
    assert offers[0].monthly == pytest.approx(400 * (2 / 32 + 4 / 128) / 2)
    assert offers[1].monthly == pytest.approx(0.096 * 730)


# -- SLOs ------------------------------------------------------------------------------------------
def test_slo_budget_and_burn_rates() -> None:
    p = slo.SloPolicy(objective=0.99, window=86400, burn_windows=(3600,), objectives={"strict": 0.999})
    out = slo.evaluate({3600: {"a": 0.9, "strict": 1.0}, 86400: {"a": 0.995, "strict": 0.998}}, p)
    assert out["a"].burn_rates[3600] == pytest.approx(10.0)
    assert out["a"].budget_remaining == pytest.approx(0.5)
    assert out["strict"].budget_remaining == pytest.approx(-1.0)
    assert "avg_over_time(" in slo.sli_query(3600, 60) and "[3600s:60s]" in slo.sli_query(3600, 60)
    recorded = "avg_over_time(tenant:novacron_vm_available:ratio[$window])"
    assert slo.sli_query(86400, 300, recorded) == "avg_over_time(tenant:novacron_vm_available:ratio[86400s])"


# -- config ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"nope": 1}, "decisions.nope"),
        ({"scaling": {"cooldown": "soon"}}, "decisions.scaling.cooldown"),
        ({"migration": {"max_moves": -1}}, "decisions.migration.max_moves"),
        ({"migration": {"consolidate": "yes"}}, "decisions.migration.consolidate"),
        ({"slo": {"objective": 99.9}}, "decisions.slo.objective"),
        ({"slo": {"tenants": {"acme": 2}}}, "decisions.slo.tenants.acme"),
        (
            {"placement": {"sizes": [{"name": "x", "vcpus": 0, "memory_gib": 1}]}},
            "decisions.placement.sizes[0].vcpus",
        ),
        ({"queries": {"host_alerts": ""}}, "decisions.queries.host_alerts"),
    ],
)
def test_config_errors_name_the_key(section: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        dconfig.load(section)
    assert err.value.key == key


def test_config_overrides() -> None:
    s = dconfig.load(
        {
            "scaling": {"cooldown": "10m", "group_label": "app"},
            "migration": {"max_moves": 3, "cpu_high": 0.9},
            "slo": {"objective": 0.995, "burn_windows": ["5m"]},
            "placement": {"sizes": [{"name": "tiny", "vcpus": 1, "memory_gib": 0.5}], "limit": 2},
        }
    )
    assert s.scaling.cooldown == 600 and s.scaling.group_label == "app"
    assert s.migration.max_moves == 3 and s.migration.cpu_high == 0.9
    assert s.slo.objective == 0.995 and s.slo.burn_windows == (300.0,)
    assert s.sizes[0].memory_bytes == 0.5 * GIB and s.placement_limit == 2


def test_window_equal_to_the_history_kept_still_triggers() -> None:
    p = scaling.ScalingPolicy(scale_out_window=120, scale_in_window=120)
    assert _run(scaling.ScalingTriggers(p), [0.95] * 5) == ["none", "none", "out", "out", "out"]


def test_window_shorter_than_a_cycle_means_two_cycles_in_a_row() -> None:
    p = scaling.ScalingPolicy(scale_out_window=10, scale_in_window=10)
    assert _run(scaling.ScalingTriggers(p), [0.1, 0.5, 0.95, 0.95]) == ["none", "none", "none", "out"]


def test_steal_moves_one_noisy_neighbour() -> None:
    hosts = [migration.Host("busy", 16, 64 * GIB, steal=0.3), migration.Host("spare", 16, 64 * GIB)]
    vms = [
        migration.Vm("big", "busy", 5, 16 * GIB),
        migration.Vm("noisy-a", "busy", 3, 4 * GIB),
        migration.Vm("noisy-b", "busy", 3, 4 * GIB),
    ]
    plan = migration.plan(hosts, vms, P, noisy={"noisy-a", "noisy-b"})
    assert len(plan.moves) == 1 and plan.moves[0].vm_id in {"noisy-a", "noisy-b"}
    assert plan.moves[0].reason == "steal" and plan.moves[0].target == "spare"
    assert len(migration.plan(hosts, vms, P).moves) == 1  # without pairs: still one move, the best one
