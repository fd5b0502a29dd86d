"""Cost-based placement of a new VM: KVM hosts with headroom and cloud types that hold it, cheapest first.

A KVM host's price for the VM is the catalogue's host monthly cost x the VM's share of the host (the mean of
its CPU and memory shares, as the sidecar prices KVM VMs); it is offered only when the host stays at or below
the migration planner's target utilisation with the VM on it. A cloud offer is the cheapest instance type of
each provider in the catalogue with the vCPUs and memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from analytics_sidecar.cost import Catalogue


@dataclass(frozen=True)
class Size:
    name: str
    vcpus: float
    memory_bytes: float


@dataclass(frozen=True)
class Offer:
    size: str
    provider: str
    target: str  # host name or instance type
    monthly: float
    cpu_after: float | None  # KVM: host CPU utilisation with the VM at full use
    memory_after: float | None


def offers(
    size: Size,
    catalogue: Catalogue,
    hosts: Mapping[str, tuple[float, float, float, float]],  # host -> cpus, memory, cpu used, memory used
    cpu_max: float,
    memory_max: float,
    limit: int = 5,
) -> list[Offer]:
    out: list[Offer] = []
    for host, (cpus, mem, cpu_used, mem_used) in sorted(hosts.items()):
        monthly = catalogue.host_cost(host)
        if monthly is None or cpus <= 0 or mem <= 0:
            continue
        c, m = (cpu_used + size.vcpus) / cpus, (mem_used + size.memory_bytes) / mem
        if c <= cpu_max and m <= memory_max:
            share = (size.vcpus / cpus + size.memory_bytes / mem) / 2
            out.append(Offer(size.name, "kvm", host, monthly * share, c, m))
    providers = sorted({p for p, _ in catalogue.instance_types})
    for provider in providers:
        it = catalogue.cheapest_fit(provider, "", size.vcpus, size.memory_bytes)
        if it is not None:
            out.append(Offer(size.name, provider, it.name, it.hourly * catalogue.hours_per_month, None, None))
    out.sort(key=lambda o: (o.monthly, o.provider, o.target))
    return out[:limit]


def all_offers(
    sizes: Sequence[Size],
    catalogue: Catalogue,
    hosts: Mapping[str, tuple[float, float, float, float]],
    cpu_max: float,
    memory_max: float,
    limit: int = 5,
) -> dict[str, list[Offer]]:
    return {s.name: offers(s, catalogue, hosts, cpu_max, memory_max, limit) for s in sizes}
