"""`novacron-alert-bridge`: alert lifecycle service behind Alertmanager's webhook (flags, wiring, serving)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from werkzeug.serving import BaseWSGIServer, make_server

from alert_bridge.alertmanager import AlertmanagerClient
from alert_bridge.api import AppContext, create_app
from alert_bridge.auth import ADMIN_ENV, TokenStore
from alert_bridge.channels import build_channels
from alert_bridge.config import BridgeConfig, TokenSpec, parse_config
from alert_bridge.db import Database
from alert_bridge.enrichment import Enricher
from alert_bridge.metrics import BridgeMetrics
from alert_bridge.service import Bridge
from alert_bridge.worker import Worker
from exporters.common.cli import LOG_LEVELS, setup_logging
from exporters.common.config import ConfigError, exit_config_error, load_yaml_mapping, read_secret
from exporters.common.web import parse_listen_address
from exporters.common.webconfig import load_web_config

log = logging.getLogger("alert_bridge")
PROG = "novacron-alert-bridge"
DEFAULT_PORT = 9095
# A PostgreSQL URL holds a password: from here or --storage.url-file, it stays out of the process list.
STORAGE_ENV = "NOVACRON_BRIDGE_STORAGE_URL"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Alert lifecycle service behind Alertmanager's webhook."
    )
    parser.add_argument("--web.listen-address", dest="listen_address", default=f":{DEFAULT_PORT}")
    parser.add_argument("--config.file", dest="config_file", default=None, help="YAML config (see docs)")
    parser.add_argument(
        "--storage.url",
        dest="storage_url",
        default=None,
        help="SQLAlchemy URL: sqlite:///PATH (default: sqlite under --storage.path) or postgresql+psycopg://...",
    )
    parser.add_argument(
        "--storage.url-file",
        dest="storage_url_file",
        default=None,
        help=f"file holding the storage URL (or set ${STORAGE_ENV}); keeps a database password out of `ps`",
    )
    parser.add_argument(
        "--storage.path", dest="storage_path", default="data/alert-bridge", help="data folder"
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        help="exporter-toolkit web config for TLS (tls_server_config); the API itself uses bearer tokens",
    )
    parser.add_argument("--log.level", dest="log_level", default="info", choices=LOG_LEVELS)
    parser.add_argument(
        "--no-worker", dest="worker", action="store_false", help="intake/API only (scale-out)"
    )
    return parser


@dataclass
class Service:
    """Everything a running bridge holds; tests build one in-process with `build_service`."""

    config: BridgeConfig
    db: Database
    bridge: Bridge
    tokens: TokenStore
    metrics: BridgeMetrics
    worker: Worker
    app: object

    def close(self) -> None:
        self.worker.stop()
        self.db.dispose()


def load_config(path: str | None) -> BridgeConfig:
    return parse_config(load_yaml_mapping(path) if path else {})


def build_service(config: BridgeConfig, storage_url: str) -> Service:
    db = Database(storage_url)
    db.migrate()
    am = AlertmanagerClient(config.alertmanager_urls) if config.alertmanager_urls else None
    bridge = Bridge(config, db, alertmanager=am)
    tokens = TokenStore(db)
    for spec in config.tokens:
        tokens.ensure(spec)
    admin = os.environ.get(ADMIN_ENV)
    if admin:
        tokens.ensure(TokenSpec("admin", "admin", admin), actor="environment")
    metrics = BridgeMetrics(db)
    enricher = None
    if config.enrichment.enabled:
        failures = metrics.enrichment_failures
        enricher = Enricher(config.enrichment, lambda reason: failures.labels(reason).inc())
    worker = Worker(bridge, build_channels(dict(config.channels)), metrics, enricher)
    app = create_app(AppContext(bridge, tokens, metrics, worker.poke))
    return Service(config, db, bridge, tokens, metrics, worker, app)


def storage_url(args: argparse.Namespace) -> str:
    if args.storage_url:
        return str(args.storage_url)
    secret = read_secret(STORAGE_ENV, args.storage_url_file, "storage.url-file")
    if secret:
        return secret
    return f"sqlite:///{Path(args.storage_path).resolve() / 'bridge.db'}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    if args.log_level != "debug":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per webhook call
    try:
        config = load_config(args.config_file)
        web = load_web_config(args.web_config_file)
        if web.users:
            raise ConfigError(
                "basic_auth_users", "not supported by the bridge: it authenticates with API tokens"
            )
        host, port = parse_listen_address(args.listen_address)
        url = storage_url(args)
    except ConfigError as err:
        exit_config_error(PROG, err)
    except ValueError as err:
        exit_config_error(PROG, ConfigError("web.listen-address", str(err)))
    if not (url.startswith("sqlite") or url.startswith("postgresql")):
        exit_config_error(
            PROG, ConfigError("storage.url", "must be sqlite:///PATH or postgresql+psycopg://...")
        )
    if ADMIN_ENV in os.environ and len(os.environ[ADMIN_ENV]) < 16:
        exit_config_error(PROG, ConfigError(ADMIN_ENV, "admin token must be at least 16 characters"))
    try:
        service = build_service(config, url)
    except Exception as exc:  # cannot reach or migrate the store: say so without a trace, exit non-zero
        log.error("cannot open storage: %s: %s", type(exc).__name__, str(exc).splitlines()[0][:200])
        return 1
    server = make_server(host, port, service.app, threaded=True, ssl_context=web.ssl_context())  # type: ignore[arg-type]
    if args.worker:
        service.worker.start()
    _install_signals(server)
    log.info("listening on %s (storage: %s)", args.listen_address, url.split("://", 1)[0])
    try:
        server.serve_forever()
    finally:
        service.close()
    return 0


def _install_signals(server: BaseWSGIServer) -> None:
    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


if __name__ == "__main__":
    raise SystemExit(main())
