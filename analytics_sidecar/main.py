"""`novacron-analytics`: one command, a subcommand per job (serve, backtest, nab-detect, report, ...)."""

from __future__ import annotations

import argparse
import importlib
import sys

from exporters.common.cli import run_subcommand

# Each module provides `register(subparsers)`, which adds its subcommand and sets `func` on its parser.
SUBCOMMAND_MODULES: list[str] = [
    "analytics_sidecar.anomaly.nab",
    "analytics_sidecar.backtest",
    "analytics_sidecar.serve",
    "analytics_sidecar.recommend_cli",
    "analytics_sidecar.reports.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="novacron-analytics",
        description="NovaCron analytics sidecar: reads Prometheus, writes analytics back as metrics.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_subcommand(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
