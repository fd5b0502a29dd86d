"""Cost: a price catalogue per provider and instance type, and per KVM host; monthly cost and savings.

Catalogue file (YAML, see deploy/analytics/prices.yml):

    currency: USD
    hours_per_month: 730
    instance_types:            # per provider: hourly price, vCPUs, memory
      aws:
        m5.large: {hourly: 0.096, vcpus: 2, memory_gib: 8}
    kvm_hosts:                 # monthly cost of a hypervisor host (hardware, power, licences)
      default: {monthly: 600}
      kvm-a1: {monthly: 900}

A cloud VM costs its instance type's price; its right-sized cost is the cheapest type of the same provider
and family (the name without its size: m5 for m5.xlarge, n2-standard for n2-standard-4, Standard_Ds_v5 for
Standard_D4s_v5) that holds the recommendation. A KVM VM costs its share of its
host: host cost x mean of (vCPUs / host CPUs, memory / host memory).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exporters.common.config import ConfigError, check_keys, load_yaml_mapping, parse_number

GIB = 1 << 30


@dataclass(frozen=True)
class InstanceType:
    provider: str
    name: str
    hourly: float
    vcpus: float
    memory_bytes: float

    @property
    def family(self) -> str:
        """The name without its size: m5.xlarge -> m5, n2-standard-4 -> n2-standard, D4s_v5 -> Ds_v5."""
        if "." in self.name:
            return self.name.split(".", 1)[0]
        if self.provider == "gcp" and "-" in self.name:
            return self.name.rsplit("-", 1)[0]
        return re.sub(r"(?<=_[A-Za-z])\d+", "", self.name)


@dataclass(frozen=True)
class Catalogue:
    currency: str = "USD"
    hours_per_month: float = 730.0
    instance_types: Mapping[tuple[str, str], InstanceType] = field(default_factory=dict)
    host_monthly: Mapping[str, float] = field(default_factory=dict)

    def host_cost(self, host: str) -> float | None:
        return self.host_monthly.get(host, self.host_monthly.get("default"))

    def instance_monthly(self, provider: str, instance_type: str) -> float | None:
        it = self.instance_types.get((provider, instance_type))
        return it.hourly * self.hours_per_month if it else None

    def cheapest_fit(
        self, provider: str, instance_type: str, vcpus: float, memory_bytes: float
    ) -> InstanceType | None:
        """Cheapest type of the same provider and family holding vcpus and memory."""
        current = self.instance_types.get((provider, instance_type))
        family = current.family if current else None
        fits = [
            it
            for (p, _), it in self.instance_types.items()
            if p == provider
            and (family is None or it.family == family)
            and it.vcpus >= vcpus
            and it.memory_bytes >= memory_bytes
        ]
        return min(fits, key=lambda it: it.hourly) if fits else None


def load_catalogue(path: str | None) -> Catalogue:
    """Parse the price catalogue; no file means no prices (cost metrics are then absent)."""
    if not path:
        return Catalogue()
    data = load_yaml_mapping(path, "cost.catalogue_file")
    check_keys(data, {"currency", "hours_per_month", "instance_types", "kvm_hosts"}, "catalogue")
    types: dict[tuple[str, str], InstanceType] = {}
    for provider, entries in _mapping(data, "instance_types").items():
        if not isinstance(entries, Mapping):
            raise ConfigError(f"instance_types.{provider}", "must map instance type names to prices")
        for name, spec in entries.items():
            where = f"instance_types.{provider}.{name}"
            if not isinstance(spec, Mapping):
                raise ConfigError(where, "must be a mapping with hourly, vcpus, memory_gib")
            check_keys(spec, {"hourly", "vcpus", "memory_gib"}, where)
            types[(str(provider), str(name))] = InstanceType(
                str(provider),
                str(name),
                _positive(spec, "hourly", where),
                _positive(spec, "vcpus", where),
                _positive(spec, "memory_gib", where) * GIB,
            )
    hosts: dict[str, float] = {}
    for host, spec in _mapping(data, "kvm_hosts").items():
        where = f"kvm_hosts.{host}"
        if not isinstance(spec, Mapping):
            raise ConfigError(where, "must be a mapping with monthly")
        check_keys(spec, {"monthly"}, where)
        hosts[str(host)] = _positive(spec, "monthly", where)
    hours = data.get("hours_per_month", 730)
    if not isinstance(hours, int | float) or hours <= 0:
        raise ConfigError("hours_per_month", "must be a positive number")
    return Catalogue(str(data.get("currency", "USD")), float(hours), types, hosts)


def _mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, "must be a mapping")
    return value


def _positive(spec: Mapping[str, Any], key: str, where: str) -> float:
    return parse_number(spec.get(key), f"{where}.{key}", 0)


@dataclass(frozen=True)
class VmCost:
    monthly: float  # what the VM costs now
    rightsized_monthly: float  # what it would cost at the recommendation (0 when idle: delete it)


def vm_cost(
    cat: Catalogue,
    info: Mapping[str, str],
    vcpus: float,
    memory_bytes: float,
    rec_vcpus: float,
    rec_memory_bytes: float,
    idle: bool,
    host_capacity: tuple[float, float] | None,
    cap_at_current: bool = True,
) -> VmCost | None:
    """Current and right-sized monthly cost of one VM; None when the catalogue has no price for it.

    `cap_at_current=False` prices a size above the current one too (cost forecasts of a growing VM).
    """
    cap = min if cap_at_current else (lambda _now, target: target)
    provider = info.get("provider", "")
    if provider == "kvm":
        host = info.get("host", "")
        price = cat.host_cost(host)
        if price is None or not host_capacity or host_capacity[0] <= 0 or host_capacity[1] <= 0:
            return None
        cpus, mem = host_capacity

        def share(c: float, m: float) -> float:
            return price * 0.5 * (c / cpus + m / mem)

        now = share(vcpus, memory_bytes)
        return VmCost(now, 0.0 if idle else cap(now, share(rec_vcpus, rec_memory_bytes)))
    current = cat.instance_monthly(provider, info.get("instance_type", ""))
    if current is None:
        return None
    if idle:
        return VmCost(current, 0.0)
    fit = cat.cheapest_fit(provider, info.get("instance_type", ""), rec_vcpus, rec_memory_bytes)
    target = fit.hourly * cat.hours_per_month if fit else current
    return VmCost(current, cap(current, target))
