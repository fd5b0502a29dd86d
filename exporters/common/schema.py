"""The normalised schema's shared identity: the labels of `novacron_vm_info`, the same for every source."""

from __future__ import annotations

# docs/metrics.md: identity lives on novacron_vm_info and is joined on vm_id.
VM_INFO_LABELS = (
    "provider",
    "account",
    "region",
    "zone",
    "host",
    "vm_id",
    "vm_name",
    "tenant",
    "project",
    "flavor",
    "instance_type",
    # The VM's scaling group (decision support scales per group): libvirt <novacron:group>, cloud tag.
    "novacron_group",
)
