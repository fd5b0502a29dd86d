"""`novacron-cloud-exporter`: Prometheus exporter for AWS, Azure and GCP VMs in the normalised schema. (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="novacron-cloud-exporter", description="Prometheus exporter for AWS, Azure and GCP VMs in the normalised schema.")
    parser.parse_args(argv)
    return 0
