"""GCE machine type name -> (vCPUs, memory): parsed from the documented naming scheme, no API call.

Compute Engine names predefined types `<family>-<standard|highmem|highcpu>-<vCPUs>` with a fixed memory per
vCPU for each family and class, and custom types `custom-<vCPUs>-<MiB>` (N1) or
`<family>-custom-<vCPUs>-<MiB>`, with `-ext` when the memory exceeds the family's per-vCPU limit. Memory
follows the Compute API's `memoryMb` (GB = 1024 MiB; n1-highcpu-2 is 1843 MiB). Shared-core types report
their nominal vCPU count (e2-micro: 2, at a 25 % sustained share), as AWS does for its burstable types.
Anything else (m1-megamem-96, a2-highgpu-1g, a family added after this table) resolves to None: the
exporter leaves its size unknown and counts it, and `machine_types` in the config can supply it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class MachineSize:
    """vCPUs and memory of one machine type."""

    vcpus: float
    memory_mb: int

    @property
    def memory_bytes(self) -> float:
        return float(self.memory_mb * MIB)


# GB of memory per vCPU by family and class, from Google's machine family pages (general-purpose,
# compute-optimised). A family/class pair not listed here does not exist or is not regular.
GB_PER_VCPU: dict[str, dict[str, float]] = {
    "e2": {"standard": 4, "highmem": 8, "highcpu": 1},
    "n1": {"standard": 3.75, "highmem": 6.5, "highcpu": 0.9},
    "n2": {"standard": 4, "highmem": 8, "highcpu": 1},
    "n2d": {"standard": 4, "highmem": 8, "highcpu": 1},
    "n4": {"standard": 4, "highmem": 8, "highcpu": 2},
    "t2d": {"standard": 4},
    "t2a": {"standard": 4},
    "c2": {"standard": 4},
    "c2d": {"standard": 4, "highmem": 8, "highcpu": 2},
    "c3": {"standard": 4, "highmem": 8, "highcpu": 2},
    "c3d": {"standard": 4, "highmem": 8, "highcpu": 2},
    "c4": {"standard": 3.75, "highmem": 7.75, "highcpu": 2},
    "c4a": {"standard": 4, "highmem": 8, "highcpu": 2},
    "h3": {"standard": 4},
}

# Shared-core types: nominal vCPUs and memoryMb as the Compute API reports them.
SHARED_CORE: dict[str, MachineSize] = {
    "e2-micro": MachineSize(2, 1024),
    "e2-small": MachineSize(2, 2048),
    "e2-medium": MachineSize(2, 4096),
    "f1-micro": MachineSize(1, 614),
    "g1-small": MachineSize(1, 1740),
}
_SHARED_CUSTOM_VCPUS = {"micro": 2, "small": 2, "medium": 2}  # e2-custom-<micro|small|medium>-<MiB>

_PREDEFINED = re.compile(
    r"^(?P<family>[a-z][a-z0-9]*)-(?P<cls>standard|highmem|highcpu)-(?P<n>\d+)(?:-lssd)?$"
)
_CUSTOM = re.compile(
    r"^(?:(?P<family>[a-z][a-z0-9]*)-)?custom-(?P<n>\d+|micro|small|medium)-(?P<mb>\d+)(?:-ext)?$"
)


def resolve(name: str, overrides: Mapping[str, MachineSize] | None = None) -> MachineSize | None:
    """The size of `name` (a bare name or a `.../machineTypes/<name>` URL), or None when unknown."""
    bare = name.rsplit("/", 1)[-1].strip().lower()
    if overrides and bare in overrides:
        return overrides[bare]  # the operator's word wins over parsing
    if bare in SHARED_CORE:
        return SHARED_CORE[bare]
    if m := _PREDEFINED.match(bare):
        per_vcpu = GB_PER_VCPU.get(m["family"], {}).get(m["cls"])
        n = int(m["n"])
        if per_vcpu is None or n < 1:
            return None
        return MachineSize(n, int(per_vcpu * n * 1024))
    if m := _CUSTOM.match(bare):
        family = m["family"] or "n1"
        if family not in GB_PER_VCPU:
            return None
        count = m["n"]
        if not count.isdigit():
            if family != "e2":
                return None
            vcpus = _SHARED_CUSTOM_VCPUS[count]
        else:
            vcpus = int(count)
        mb = int(m["mb"])
        return MachineSize(vcpus, mb) if vcpus >= 1 and mb >= 1 else None
    return None
