"""`novacron-libvirt-exporter`: Prometheus exporter for KVM/libvirt hypervisors, hosts and VMs.

Two modes, as snmp_exporter has them: `/metrics` scrapes `--libvirt.uri` (one exporter per host), and
`/probe?target=qemu+ssh://host/system` scrapes any allowed URI (one exporter for many hosts).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from prometheus_client.process_collector import ProcessCollector
from werkzeug.wrappers import Request, Response

from exporters.common.cli import add_web_flags, check_web_flags, setup_logging
from exporters.common.config import ConfigError, exit_config_error, parse_duration
from exporters.common.web import ExporterApp, registry_with, serve
from exporters.common.webconfig import WebConfig, load_web_config
from exporters.libvirt.collector import ALL_GROUPS, LibvirtCollector
from exporters.libvirt.exposition import CONTENT_TYPE, render
from exporters.libvirt.target import Target, silence_libvirt_stderr, start_event_loop
from exporters.libvirt.workers import DaemonPool

PROG = "novacron-libvirt-exporter"
DEFAULT_PORT = 9178
DEFAULT_PROBE_PATTERN = r"^(qemu|qemu\+(ssh|libssh|libssh2|tls|tcp|unix))://"
DEFAULT_OFF: frozenset[str] = frozenset()
TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
TIMEOUT_MARGIN = 0.5  # seconds kept for rendering and the network, so Prometheus gets an answer in time

log = logging.getLogger("novacron.libvirt")


@dataclass(frozen=True)
class Settings:
    """Validated command line."""

    uri: str
    timeout: float
    hostname: str
    groups: frozenset[str]
    metadata_refresh: float
    parallelism: int
    probe_pattern: re.Pattern[str]
    probe_max_targets: int
    listen_address: str
    telemetry_path: str
    web_config: WebConfig
    log_level: str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Prometheus exporter for KVM/libvirt hosts and VMs."
    )
    parser.add_argument(
        "--libvirt.uri", dest="uri", default="qemu:///system", help="URI that /metrics scrapes"
    )
    parser.add_argument(
        "--libvirt.timeout",
        dest="timeout",
        default="5s",
        help="hard deadline for the libvirt side of a scrape",
    )
    parser.add_argument(
        "--libvirt.hostname",
        dest="hostname",
        default="",
        help="value of the host label for --libvirt.uri (default: the hypervisor's hostname)",
    )
    parser.add_argument(
        "--libvirt.metadata-refresh",
        dest="metadata_refresh",
        default="5m",
        help="how long a domain's parsed XML is reused before it is fetched again",
    )
    parser.add_argument(
        "--libvirt.stats-parallelism",
        dest="parallelism",
        type=int,
        default=4,
        help="bulk stats calls made at once, each for a share of the domains (libvirtd allows 5 per client)",
    )
    parser.add_argument(
        "--probe.allowed-targets",
        dest="probe_pattern",
        default=DEFAULT_PROBE_PATTERN,
        help="regular expression a /probe target URI must match",
    )
    parser.add_argument(
        "--probe.max-targets",
        dest="probe_max_targets",
        type=int,
        default=64,
        help="connections kept for /probe",
    )
    add_web_flags(parser, DEFAULT_PORT)
    for group in ALL_GROUPS:
        flags = parser.add_mutually_exclusive_group()
        flags.add_argument(
            f"--collector.{group}",
            dest=f"collector_{group}",
            action="store_true",
            default=None,
            help=f"enable the {group} collector, --no-collector.{group} disables it "
            f"(default: {'off' if group in DEFAULT_OFF else 'on'})",
        )
        flags.add_argument(
            f"--no-collector.{group}", dest=f"collector_{group}", action="store_false", help=argparse.SUPPRESS
        )
    return parser


def _enabled(args: argparse.Namespace, group: str) -> bool:
    flag = getattr(args, f"collector_{group}")
    return group not in DEFAULT_OFF if flag is None else bool(flag)


def settings_from(args: argparse.Namespace) -> Settings:
    """Validate flags into Settings; raises ConfigError naming the flag."""
    groups = frozenset(g for g in ALL_GROUPS if _enabled(args, g))
    try:
        pattern = re.compile(args.probe_pattern)
    except re.error as exc:
        raise ConfigError("probe.allowed-targets", f"not a valid regular expression: {exc}") from None
    if not 1 <= args.parallelism <= 5:
        raise ConfigError("libvirt.stats-parallelism", "must be 1 to 5 (libvirtd's max_client_requests is 5)")
    if args.probe_max_targets < 1:
        raise ConfigError("probe.max-targets", "must be at least 1")
    check_web_flags(args, reserved_paths=("/", "/probe"))
    return Settings(
        uri=args.uri,
        timeout=parse_duration(args.timeout, "libvirt.timeout"),
        hostname=args.hostname,
        groups=groups,
        metadata_refresh=parse_duration(args.metadata_refresh, "libvirt.metadata-refresh"),
        parallelism=args.parallelism,
        probe_pattern=pattern,
        probe_max_targets=args.probe_max_targets,
        listen_address=args.listen_address,
        telemetry_path=args.telemetry_path,
        web_config=load_web_config(args.web_config_file),
        log_level=args.log_level,
    )


class ProbeTargets:
    """Targets opened through /probe, kept (least recently used evicted) so connections are reused."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._targets: OrderedDict[str, Target] = OrderedDict()
        self._lock = threading.Lock()
        # One pool for every probed target: idle threads are not multiplied by the number of hypervisors.
        self._pool = DaemonPool("libvirt-probe", min_workers=4, max_workers=256)

    def get(self, uri: str) -> Target:
        with self._lock:
            target = self._targets.pop(uri, None)
            if target is None:
                target = Target(
                    uri,
                    self.settings.groups,
                    xml_ttl=self.settings.metadata_refresh,
                    pool=self._pool,
                    parallelism=self.settings.parallelism,
                )
            self._targets[uri] = target
            while len(self._targets) > self.settings.probe_max_targets:
                _, old = self._targets.popitem(last=False)
                threading.Thread(target=old.close, daemon=True).start()
            return target


def scrape_timeout(settings: Settings, request: Request) -> float:
    """The flag's deadline, shortened to fit Prometheus' own scrape timeout when it sends one."""
    header = request.headers.get(TIMEOUT_HEADER)
    try:
        prometheus = float(header) if header else None
    except ValueError:
        prometheus = None
    if prometheus is None:
        return settings.timeout
    return max(0.1, min(settings.timeout, prometheus - TIMEOUT_MARGIN))


class LibvirtExporterApp(ExporterApp):
    """ExporterApp whose /metrics and /probe build a registry per request (the deadline is per request)."""

    def __init__(self, settings: Settings, target: Target | None) -> None:
        super().__init__(
            name=PROG,
            registry=registry_with(),
            telemetry_path=settings.telemetry_path,
            web_config=settings.web_config,
        )
        self.settings = settings
        self.target = target
        self.probes = ProbeTargets(settings)
        self.process = ProcessCollector(registry=None)
        self.routes["/probe"] = self._probe

    def _dispatch(self, request: Request) -> Response:
        if request.path != self.telemetry_path:
            return super()._dispatch(request)
        if not self._authorised(request):
            return super()._dispatch(request)  # the 401 with its realm header
        collectors: list[Any] = [self.process]
        if self.target is not None:
            collectors.append(
                LibvirtCollector(self.target, self.settings.groups, scrape_timeout(self.settings, request))
            )
        return self._render(collectors)

    def _probe(self, request: Request) -> Response:
        uri = request.args.get("target", "").strip()
        if not uri:
            return Response("missing target parameter (a libvirt URI)\n", status=400)
        if not self.settings.probe_pattern.search(uri):
            return Response("target is not allowed by --probe.allowed-targets\n", status=400)
        target = self.probes.get(uri)
        return self._render(
            [LibvirtCollector(target, self.settings.groups, scrape_timeout(self.settings, request))]
        )

    @staticmethod
    def _render(collectors: list[Any]) -> Response:
        try:
            body = render(registry_with(*collectors).collect())
        except Exception:  # a collector bug must not kill the server or leak a trace to the client
            log.exception("rendering metrics failed")
            return Response("internal error, see the exporter log\n", status=500)
        return Response(body, content_type=CONTENT_TYPE)


def make_app(settings: Settings) -> LibvirtExporterApp:
    target = None
    if settings.uri:
        target = Target(
            settings.uri,
            settings.groups,
            xml_ttl=settings.metadata_refresh,
            hostname=settings.hostname,
            parallelism=settings.parallelism,
        )
    return LibvirtExporterApp(settings, target)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as err:
        exit_config_error(PROG, err)
    setup_logging(settings.log_level)
    # One access-log line per scrape is noise at info level; keep it for debugging.
    logging.getLogger("werkzeug").setLevel(logging.INFO if settings.log_level == "debug" else logging.WARNING)
    silence_libvirt_stderr()
    start_event_loop()
    app = make_app(settings)
    try:
        server = serve(app, settings.listen_address)
    except (OSError, ValueError) as exc:
        print(f"{PROG}: cannot listen on {settings.listen_address}: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
