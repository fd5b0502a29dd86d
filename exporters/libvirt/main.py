"""`novacron-libvirt-exporter`: Prometheus exporter for KVM/libvirt hypervisors, hosts and VMs. (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="novacron-libvirt-exporter", description="Prometheus exporter for KVM/libvirt hypervisors, hosts and VMs.")
    parser.parse_args(argv)
    return 0
