"""Serve an exporter: telemetry path, landing page, extra routes, TLS and basic auth from the web config."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from exporters.common.webconfig import WebConfig

log = logging.getLogger(__name__)

Handler = Callable[[Request], Response]


@dataclass
class ExporterApp:
    """A small WSGI app: `/metrics` from a registry, `/` landing page, and named extra routes."""

    name: str
    registry: CollectorRegistry
    telemetry_path: str = "/metrics"
    web_config: WebConfig = field(default_factory=WebConfig)
    routes: dict[str, Handler] = field(default_factory=dict)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        response = self._dispatch(request)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        if not self._authorised(request):
            return Response(
                "Unauthorized\n", status=401, headers={"WWW-Authenticate": f'Basic realm="{self.name}"'}
            )
        try:
            if request.path == self.telemetry_path:
                return Response(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)
            if request.path in self.routes:
                return self.routes[request.path](request)
            if request.path == "/":
                return Response(self._landing_page(), content_type="text/html; charset=utf-8")
            if request.path == "/-/healthy":
                return Response("OK\n")
            return Response("Not Found\n", status=404)
        except Exception:  # a failing collector must not kill the server or leak a trace to the client
            log.exception("request %s failed", request.path)
            return Response("internal error, see the exporter log\n", status=500)

    def _authorised(self, request: Request) -> bool:
        if not self.web_config.users:
            return True
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return self.web_config.check_basic_auth(user, password)

    def _landing_page(self) -> str:
        links = "".join(f'<li><a href="{p}">{p}</a></li>' for p in [self.telemetry_path, *self.routes])
        head = f"<head><title>{self.name}</title></head>"
        return f"<html>{head}<body><h1>{self.name}</h1><ul>{links}</ul></body></html>"


def parse_listen_address(address: str) -> tuple[str, int]:
    """`host:port` or `:port` (all interfaces), as Prometheus tools accept it."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be host:port, got {address!r}")
    if int(port) > 65535:
        # werkzeug would silently bind port % 65536 while the log names the typo'd one.
        raise ValueError(f"listen address port must be 0-65535, got {address!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def serve(app: ExporterApp, listen_address: str) -> BaseWSGIServer:
    """Bind (raising OSError on a busy port) and return a threaded server; call `serve_forever()`."""
    host, port = parse_listen_address(listen_address)
    server = make_server(host, port, app, threaded=True, ssl_context=app.web_config.ssl_context())
    log.info("%s listening on %s%s", app.name, listen_address, " (TLS)" if app.web_config.cert_file else "")
    return server


def serve_in_thread(app: ExporterApp, listen_address: str) -> BaseWSGIServer:
    """Start serving in a daemon thread (for tests and embedded use); `shutdown()` stops it."""
    server = serve(app, listen_address)
    threading.Thread(target=server.serve_forever, name=f"{app.name}-http", daemon=True).start()
    return server


def registry_with(*collectors: Collector) -> CollectorRegistry:
    """A fresh registry holding the given collectors (no process-global default registry)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry
