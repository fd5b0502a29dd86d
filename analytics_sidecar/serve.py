"""`novacron-analytics serve`: the long-running sidecar (analysis loop + /metrics + JSON API)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from werkzeug.wrappers import Request, Response

from analytics_sidecar.api import Api
from analytics_sidecar.config import Config, Shard, load_config, prometheus_url
from analytics_sidecar.decisions.wiring import attach
from analytics_sidecar.engine import Engine, Results
from analytics_sidecar.series import Series
from analytics_sidecar.shard_lease import ShardLease
from analytics_sidecar.source import PromSource, SourceError
from analytics_sidecar.writeback import State, WritebackCollector
from exporters.common.cli import add_web_flags, setup_logging
from exporters.common.config import ConfigError, exit_config_error, parse_duration
from exporters.common.web import ExporterApp, registry_with, serve
from exporters.common.webconfig import load_web_config

log = logging.getLogger(__name__)
DEFAULT_PORT = 9180


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `serve` and `recommendations`."""
    parser.add_argument("--prometheus.url", dest="prometheus_url", default=None, help="Prometheus base URL")
    parser.add_argument(
        "--config.file", dest="config_file", default=None, help="sidecar configuration (YAML)"
    )
    parser.add_argument("--shard", default=None, help="i/n: analyse the VMs whose vm_id hashes to i mod n")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the sidecar: analyse periodically, serve metrics and API"
    )
    add_source_flags(parser)
    add_web_flags(parser, DEFAULT_PORT)
    parser.add_argument("--interval", default=None, help="time between analysis cycles (e.g. 60s, 15m)")
    parser.add_argument(
        "--state.dir",
        dest="state_dir",
        default=None,
        help="folder for the audit log and the anomaly detectors' state",
    )
    parser.add_argument(
        "--shard.lease-ttl",
        dest="lease_ttl",
        default=None,
        help="with --shard i/n: a peer whose heartbeat is older than this is dead and its share adopted "
        "(default 3 intervals)",
    )
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file, then command-line flags over it."""
    cfg = load_config(args.config_file)
    if args.prometheus_url:
        url = prometheus_url(args.prometheus_url, "prometheus.url")
        cfg = replace(cfg, prometheus=replace(cfg.prometheus, url=url))
    if args.shard:
        cfg = replace(cfg, shard=Shard.parse(args.shard))
    if getattr(args, "interval", None):
        cfg = replace(cfg, analysis=replace(cfg.analysis, interval=parse_duration(args.interval, "interval")))
    return cfg


class Loop:
    """Runs a cycle every interval (or when triggered); a failed cycle keeps the previous results."""

    def __init__(
        self, engine: Engine, state: State, interval: float, lease: ShardLease | None = None
    ) -> None:
        self.engine = engine
        self.state = state
        self.interval = interval
        self.lease = lease
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.after: list[Callable[[Results], None]] = []  # run after each good cycle (decisions)
        self.on_stop: list[Callable[[], object]] = []  # run once at shutdown (save the anomaly state)
        self._thread: threading.Thread | None = None

    def once(self) -> bool:
        if self.lease is not None:
            shard = self.engine.cfg.shard
            adopted = self.lease.refresh() - {shard.index}
            self.engine.cfg = replace(self.engine.cfg, shard=replace(shard, adopted=adopted))
        try:
            results = self.engine.run()
        except SourceError as exc:
            log.warning("analysis cycle failed, keeping the previous results: %s", exc)
            self.state.failed()
            return False
        except Exception:  # one bad series must not stop the sidecar; the failure counter shows it
            log.exception("analysis cycle failed")
            self.state.failed()
            return False
        self.state.publish(results, time.time())
        for hook in self.after:
            hook(results)
        log.info("analysed %d VMs in %.2fs", len(results.vms), results.duration_seconds)
        return True

    def run_forever(self) -> None:
        while not self.stop.is_set():
            self.once()
            self.wake.wait(self.interval)
            self.wake.clear()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="analytics-loop", daemon=True)
        thread.start()
        self._thread = thread
        return thread

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop cycling, let a running cycle finish for up to `grace` seconds, then run the stop hooks.

        A cycle still running after the grace keeps going while the hooks save: the anomaly engine's lock
        makes each series' saved state whole, and the few points scored after it are re-scored next start."""
        self.stop.set()
        self.wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(grace)
            if self._thread.is_alive():
                log.warning("analysis cycle still running after %.0fs; saving state anyway", grace)
        for hook in self.on_stop:
            try:
                hook()
            except Exception:  # one failing hook (a full disk) must not skip the others
                log.exception("shutdown step failed")


def build(
    cfg: Config,
    web_config_file: str | None,
    telemetry_path: str,
    state_dir: str | None = None,
    lease_ttl: float | None = None,
) -> tuple[ExporterApp, Loop]:
    """The app and its analysis loop; the anomaly detectors ride on the same cycle when installed."""
    source = PromSource(cfg.prometheus, cfg.analysis.step, cfg.analysis.chunk, time.time)
    state = State(risk=cfg.rightsizing.risk.name, source_stats=source.stats)
    anomaly = _anomaly_parts(state_dir)
    engine = Engine(cfg, source, observer=anomaly.observer if anomaly else None)
    lease = None
    if cfg.shard.count > 1:
        lease = ShardLease(cfg.shard, source.instant, lease_ttl or 3 * cfg.analysis.interval)
    loop = Loop(engine, state, cfg.analysis.interval, lease)
    api = Api(state, cfg.api_token, loop.wake.set)
    routes = api.routes()
    collectors: list[Any] = [WritebackCollector(state)]
    if lease is not None:
        collectors.append(lease)
    decision_hook = attach(cfg, source, engine, routes, collectors, api.guard_get)
    if decision_hook is not None:
        loop.after.append(decision_hook)
    if anomaly:
        collectors.append(anomaly.collector)
        loop.on_stop.append(anomaly.save)
        for path in anomaly.paths:
            routes[path] = api.guard_get(anomaly.handler)
    app = ExporterApp(
        name="novacron-analytics",
        registry=registry_with(*collectors),
        telemetry_path=telemetry_path,
        web_config=load_web_config(web_config_file),
        routes=routes,
    )
    return app, loop


# On first sight of a series the detectors get this much history (then only newer points each cycle).
ANOMALY_WARMUP_SECONDS = 2 * 86400.0


class _AnomalyParts:
    """The anomaly package's engine, collector and Flask blueprint, wired to this sidecar's cycle."""

    paths = ("/api/v1/anomalies/incidents", "/api/v1/anomalies/series")

    def __init__(self, state_dir: str | None) -> None:
        from flask import Flask

        from analytics_sidecar.anomaly.api import anomaly_api, init_anomaly_api
        from analytics_sidecar.anomaly.engine import AnomalyCollector, AnomalyEngine, keys_from_labels

        self.engine = AnomalyEngine(state_dir=str(Path(state_dir) / "anomaly") if state_dir else None)
        self.collector = AnomalyCollector(self.engine)
        self._keys = keys_from_labels
        self.flask = Flask("novacron-anomaly")
        self.flask.register_blueprint(anomaly_api)
        init_anomaly_api(self.flask, self.engine)

    def observer(self, kind: str, resource: str, labels: Mapping[str, str], series: Series) -> None:
        recent = series.since(float(series.t[-1]) - ANOMALY_WARMUP_SECONDS) if len(series) else series
        self.engine.update(self._keys(resource, labels, kind), recent.t.tolist(), recent.v.tolist())

    def handler(self, request: Request) -> Response:
        return Response.from_app(self.flask.wsgi_app, request.environ)

    def save(self) -> None:
        written = self.engine.save()
        if self.engine.state_dir is not None:
            log.info("anomaly state saved (%d changed series) in %s", written, self.engine.state_dir)


def _anomaly_parts(state_dir: str | None) -> _AnomalyParts | None:
    try:
        return _AnomalyParts(state_dir)
    except ImportError:  # a build without the anomaly package: right-sizing and forecasts still run
        return None


def _audit_to(state_dir: str | None) -> None:
    if not state_dir:
        return
    folder = Path(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / "audit.log")
    handler.setFormatter(logging.Formatter("ts=%(asctime)s %(message)s"))
    logging.getLogger("analytics_sidecar.audit").addHandler(handler)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    try:
        cfg = config_from_args(args)
        ttl = parse_duration(args.lease_ttl, "shard.lease-ttl") if args.lease_ttl else None
        app, loop = build(cfg, args.web_config_file, args.telemetry_path, args.state_dir, ttl)
    except ConfigError as err:
        exit_config_error("novacron-analytics serve", err)
    _audit_to(args.state_dir)
    try:
        server = serve(app, args.listen_address)
    except (OSError, ValueError) as exc:
        log.error("cannot listen on %s: %s", args.listen_address, exc)
        return 1
    log.info(
        "analysing %s every %.0fs (shard %d/%d)",
        cfg.prometheus.url,
        cfg.analysis.interval,
        cfg.shard.index,
        cfg.shard.count,
    )
    loop.start()
    _stop_on_signals(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        loop.shutdown()
    return 0


def _stop_on_signals(server: Any) -> None:
    """SIGTERM/SIGINT end serve_forever (from another thread: shutdown() waits for the serving loop), so the
    `finally` in run() saves state; Python's default SIGTERM would kill the process without it."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, name="analytics-shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
