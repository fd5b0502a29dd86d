"""`novacron-metrics-api`: Authenticated, tenant-scoped read API in front of Prometheus. (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="novacron-metrics-api", description="Authenticated, tenant-scoped read API in front of Prometheus.")
    parser.parse_args(argv)
    return 0
