"""Command-line flags every exporter shares, named as Prometheus tools name them; subcommand dispatch."""

from __future__ import annotations

import argparse
import logging
import sys

from exporters.common.config import ConfigError
from exporters.common.web import parse_listen_address

LOG_LEVELS = ("debug", "info", "warn", "error")


def add_web_flags(parser: argparse.ArgumentParser, default_port: int) -> None:
    """--web.listen-address, --web.telemetry-path, --web.config.file, --log.level."""
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=f":{default_port}",
        help="host:port to listen on",
    )
    parser.add_argument(
        "--web.telemetry-path", dest="telemetry_path", default="/metrics", help="path that serves metrics"
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        help="exporter-toolkit web config (TLS and basic auth)",
    )
    parser.add_argument("--log.level", dest="log_level", default="info", choices=LOG_LEVELS, help="log level")


def check_web_flags(args: argparse.Namespace, reserved_paths: tuple[str, ...] = ("/",)) -> None:
    """The flags of add_web_flags, checked before anything starts: ConfigError naming the flag."""
    try:
        parse_listen_address(args.listen_address)
    except ValueError as exc:
        raise ConfigError("web.listen-address", str(exc)) from None
    if not args.telemetry_path.startswith("/") or args.telemetry_path in reserved_paths:
        raise ConfigError("web.telemetry-path", f"must start with / and not be {' or '.join(reserved_paths)}")


def setup_logging(level: str) -> None:
    """logfmt-like lines on stderr, as Prometheus components log."""
    numeric = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
    logging.basicConfig(
        level=numeric[level],
        stream=sys.stderr,
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)r",
    )


def run_subcommand(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse `argv` and run the chosen subcommand's `func`; without a subcommand print help and return 2."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)
