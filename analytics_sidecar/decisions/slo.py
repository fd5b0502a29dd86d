"""Per-tenant availability SLOs: error budget left over the SLO window and burn rates (Sloth/Pyrra style).

The SLI is the share of a tenant's VMs that are meant to run (state not "shut off", 5) and do run (state 1),
averaged over a window by a Prometheus subquery. Burn rate = error ratio / (1 - objective); budget left =
1 - error ratio over the SLO window / (1 - objective). A budget that reaches 0 is a policy event (counted,
written to the audit log) and `NovaCronTenantErrorBudgetExhausted` fires from the write-back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

AVAILABILITY_GOOD = (
    "sum by (tenant) ((novacron_vm_state == bool 1) * on(vm_id) group_left(tenant) "
    "max by (vm_id, tenant) (novacron_vm_info))"
)
AVAILABILITY_TOTAL = (
    "count by (tenant) ((novacron_vm_state != 5) * on(vm_id) group_left(tenant) "
    "max by (vm_id, tenant) (novacron_vm_info))"
)


@dataclass(frozen=True)
class SloPolicy:
    objective: float = 0.999
    window: float = 30 * 86400.0
    burn_windows: tuple[float, ...] = (3600.0, 6 * 3600.0)
    resolution: float = 300.0  # subquery step
    objectives: Mapping[str, float] | None = None  # per-tenant override


@dataclass(frozen=True)
class TenantSlo:
    tenant: str
    objective: float
    availability: Mapping[float, float]  # window seconds -> availability ratio
    burn_rates: Mapping[float, float]
    budget_remaining: float


# Default `decisions.queries.tenant_availability`: a subquery, so it works without any recording rule. On a
# large fleet point it at the recording rule of rules/decisions.rules.yml instead (far cheaper over 30 days):
#     avg_over_time(tenant:novacron_vm_available:ratio[$window])
SLI_TEMPLATE = f"avg_over_time(({AVAILABILITY_GOOD} / {AVAILABILITY_TOTAL})[$window:$resolution])"


def sli_query(window: float, resolution: float, template: str = SLI_TEMPLATE) -> str:
    """Availability per tenant averaged over `window`; `$window` and `$resolution` are substituted."""
    return template.replace("$window", f"{int(window)}s").replace("$resolution", f"{int(resolution)}s")


def evaluate(availability: Mapping[float, Mapping[str, float]], p: SloPolicy) -> dict[str, TenantSlo]:
    """From window -> tenant -> availability, each tenant's burn rates and budget left."""
    tenants = sorted({t for by_tenant in availability.values() for t in by_tenant})
    out: dict[str, TenantSlo] = {}
    for t in tenants:
        objective = (p.objectives or {}).get(t, p.objective)
        allowed = max(1e-9, 1.0 - objective)
        av = {w: by[t] for w, by in availability.items() if t in by}
        burn = {w: (1.0 - a) / allowed for w, a in av.items() if w in p.burn_windows}
        long = av.get(p.window)
        remaining = 1.0 - (1.0 - long) / allowed if long is not None else 1.0
        out[t] = TenantSlo(t, objective, av, burn, remaining)
    return out
