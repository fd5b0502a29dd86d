"""The normalised metric names the cloud exporter writes (docs/metrics.md is the contract)."""

from __future__ import annotations

from exporters.common.schema import VM_INFO_LABELS

INFO_LABELS = VM_INFO_LABELS

# name -> HELP. Every per-VM value is a gauge: clouds publish per-period aggregates, not counters.
VM_METRICS: dict[str, str] = {
    "novacron_vm_cpu_utilisation_ratio": "CPU utilisation of the VM, 0-1, averaged over the provider period.",
    "novacron_vm_network_receive_bytes_per_second": "Bytes received per second over the provider period.",
    "novacron_vm_network_transmit_bytes_per_second": "Bytes sent per second over the provider period.",
    "novacron_vm_network_receive_packets_per_second": "Packets received per second over the provider period.",
    "novacron_vm_network_transmit_packets_per_second": "Packets sent per second over the provider period.",
    "novacron_vm_disk_read_bytes_per_second": "Disk bytes read per second over the provider period.",
    "novacron_vm_disk_write_bytes_per_second": "Disk bytes written per second over the provider period.",
    "novacron_vm_disk_read_ops_per_second": "Disk read operations per second over the provider period.",
    "novacron_vm_disk_write_ops_per_second": "Disk write operations per second over the provider period.",
    "novacron_vm_memory_utilisation_ratio": "Memory in use, 0-1 (needs the guest agent on AWS and GCP).",
    "novacron_vm_memory_available_bytes": "Memory available to the guest in bytes (Azure).",
    "novacron_vm_status_check_failed": "1 when the provider's status check failed in the period, else 0.",
}
