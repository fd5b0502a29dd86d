"""`novacron-alert-bridge`: Alert lifecycle service behind Alertmanager's webhook. (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="novacron-alert-bridge", description="Alert lifecycle service behind Alertmanager's webhook.")
    parser.parse_args(argv)
    return 0
