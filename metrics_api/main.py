"""`novacron-metrics-api`: authenticated, tenant-scoped read API in front of Prometheus."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import secrets
import signal
import socket
import sys
from types import FrameType

from werkzeug.serving import WSGIRequestHandler, make_server

from exporters.common.cli import add_web_flags, setup_logging
from exporters.common.config import ConfigError, exit_config_error
from exporters.common.web import parse_listen_address
from exporters.common.webconfig import load_web_config
from metrics_api.app import create_app
from metrics_api.config import load_config

log = logging.getLogger("metrics_api")
PROG = "novacron-metrics-api"
DEFAULT_PORT = 9096


class _RequestHandler(WSGIRequestHandler):
    """No per-request access log (the audit log has every request) and TCP_NODELAY on each connection.

    Without NODELAY, a response written as headers then body waits on Nagle for the client's delayed ACK.
    """

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):
            super().log_request(code, size)


def _token_tools(argv: list[str]) -> int | None:
    """`hash-token` (token on stdin -> sha256 for the config), `gen-token` (new token and its hash)."""
    if argv[:1] == ["hash-token"]:
        token = sys.stdin.readline().strip()
        if len(token) < 16:
            print(f"{PROG}: a token needs at least 16 characters", file=sys.stderr)
            return 2
        print(hashlib.sha256(token.encode()).hexdigest())
        return 0
    if argv[:1] == ["gen-token"]:
        token = secrets.token_urlsafe(32)
        print(f"token:  {token}\nsha256: {hashlib.sha256(token.encode()).hexdigest()}")
        return 0
    return None


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    tool = _token_tools(args_list)
    if tool is not None:
        return tool
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split(":", 1)[1].strip())
    parser.add_argument(
        "--config.file", dest="config_file", required=True, help="YAML config (docs/metrics-api.md)"
    )
    add_web_flags(parser, DEFAULT_PORT)
    args = parser.parse_args(args_list)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config_file)
        web = load_web_config(args.web_config_file)
        host, port = parse_listen_address(args.listen_address)
    except ConfigError as err:
        exit_config_error(PROG, err)
    except ValueError as err:
        exit_config_error(PROG, ConfigError("web.listen-address", str(err)))
    if not args.telemetry_path.startswith("/") or args.telemetry_path.startswith("/api/"):
        exit_config_error(PROG, ConfigError("web.telemetry-path", "must start with / and not with /api/"))
    app = create_app(config, web_config=web, telemetry_path=args.telemetry_path, config_path=args.config_file)
    service = app.extensions["novacron_service"]

    def reload(signum: int, frame: FrameType | None) -> None:
        try:
            service.reload_from_file()
        except ConfigError as err:
            log.error("configuration not reloaded, keeping the running one: %s", err)

    signal.signal(signal.SIGHUP, reload)
    try:
        server = make_server(
            host, port, app, threaded=True, request_handler=_RequestHandler, ssl_context=web.ssl_context()
        )
    except OSError as exc:
        print(f"{PROG}: cannot listen on {args.listen_address}: {exc.strerror}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    log.info(
        "listening on %s%s, Prometheus at %s",
        args.listen_address,
        " (TLS)" if web.cert_file else "",
        config.prometheus_url,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
