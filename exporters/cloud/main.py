"""`novacron-cloud-exporter`: AWS, Azure and GCP VMs in the normalised schema, from a background cache."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from exporters.cloud.collector import CloudCollector
from exporters.cloud.config import ExporterConfig, load_config
from exporters.cloud.refresh import RefreshScheduler, TargetRefresher
from exporters.cloud.resilience import CircuitBreaker
from exporters.common.cli import add_web_flags, check_web_flags, setup_logging
from exporters.common.config import ConfigError, exit_config_error
from exporters.common.web import ExporterApp, registry_with, serve
from exporters.common.webconfig import load_web_config

PROG = "novacron-cloud-exporter"
DEFAULT_PORT = 9179
log = logging.getLogger(PROG)


def build_refreshers(config: ExporterConfig) -> list[TargetRefresher]:
    """One refresher (own breaker, own counters) per provider target."""
    return [
        TargetRefresher(
            provider,
            target,
            prices=config.prices.get(provider.name, {}),
            backoff=config.backoff,
            breaker=CircuitBreaker(config.breaker_threshold, config.breaker_reset_after),
            stale_after=config.stale_after,
        )
        for provider in config.providers
        for target in provider.targets()
    ]


def build_app(
    refreshers: Sequence[TargetRefresher], telemetry_path: str, web_config_file: str | None
) -> ExporterApp:
    registry = registry_with(CloudCollector(refreshers))
    return ExporterApp(PROG, registry, telemetry_path, load_web_config(web_config_file))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_web_flags(parser, DEFAULT_PORT)
    parser.add_argument("--config.file", dest="config_file", required=True, help="cloud exporter YAML config")
    parser.add_argument(
        "--config.check", dest="config_check", action="store_true", help="validate the config and exit"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config_file)
        check_web_flags(args)
        if args.config_check:
            print(f"{PROG}: {args.config_file} is valid")
            return 0
        refreshers = build_refreshers(config)
        app = build_app(refreshers, args.telemetry_path, args.web_config_file)
    except ConfigError as err:
        exit_config_error(PROG, err)
    try:
        server = serve(app, args.listen_address)
    except (OSError, ValueError) as exc:
        print(f"{PROG}: cannot listen on {args.listen_address}: {exc}", file=sys.stderr)
        return 1
    scheduler = RefreshScheduler(refreshers, config.refresh_interval)
    scheduler.start()
    log.info("refreshing %d targets every %.0fs", len(refreshers), config.refresh_interval)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server.serve_forever()
    finally:
        scheduler.stop()
        for provider in config.providers:
            provider.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
