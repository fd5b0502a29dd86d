"""`novacron-dashboards`: Build, push and pull NovaCron's Grafana dashboards. (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="novacron-dashboards", description="Build, push and pull NovaCron's Grafana dashboards.")
    parser.parse_args(argv)
    return 0
