"""The Prometheus HTTP API client: POST form requests, bounded time, Prometheus' errors mapped to ours.

It keeps one persistent `http.client` connection per request thread: the read path is the API's hot path,
and a general HTTP library cost several milliseconds per call here (bench/metrics_api_overhead.py).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

log = logging.getLogger(__name__)

Params = Sequence[tuple[str, str]]


class UpstreamError(Exception):
    """Prometheus refused or failed; `status` and `error_type` are what the client gets."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


class Prometheus:
    """A thin client for the read endpoints of one Prometheus (or Thanos/Mimir/VictoriaMetrics) URL."""

    def __init__(
        self, url: str, timeout_seconds: float, bearer_token: str | None = None, ca_file: str | None = None
    ) -> None:
        parts = urlsplit(url.rstrip("/"))
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path
        self.timeout = timeout_seconds
        self._headers = {"Accept": "application/json", "User-Agent": "novacron-metrics-api"}
        if bearer_token:
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        self._ssl = ssl.create_default_context(cafile=ca_file) if self._https else None
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Prometheus stops evaluating at its own `timeout`; the socket waits a little longer for it.
            if self._https:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout + 5, context=self._ssl
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout + 5)
            conn.connect()
            # Headers and body go out in separate writes: without NODELAY, Nagle holds the body back.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def _exchange(self, method: str, path: str, params: Params) -> tuple[int, bytes]:
        encoded = urlencode(list(params))
        target = f"{self._prefix}{path}"
        headers = dict(self._headers)
        if method == "POST":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif encoded:
            target, encoded = f"{target}?{encoded}", ""
        # A kept-alive connection the server has closed fails on first use: retry once on a fresh one
        # (these requests are reads, so a retry is safe).
        for attempt in (0, 1):
            try:
                conn = self._connection()
                conn.request(
                    method, target, body=encoded.encode() if method == "POST" else None, headers=headers
                )
                resp = conn.getresponse()
                return resp.status, resp.read()
            except TimeoutError:
                self._drop()
                raise UpstreamError(503, "timeout", "Prometheus did not answer in time") from None
            except (http.client.HTTPException, OSError) as exc:
                self._drop()
                if attempt == 1:
                    log.warning("Prometheus request failed: %s", type(exc).__name__)
                    raise UpstreamError(503, "unavailable", "Prometheus is unavailable") from None
        raise AssertionError("unreachable")

    def call(self, path: str, params: Params, method: str = "POST") -> Any:
        """The `data` of a successful answer; UpstreamError otherwise (no exception text reaches clients)."""
        status, raw = self._exchange(method, path, params)
        try:
            body = json.loads(raw)
        except ValueError:
            raise UpstreamError(
                503, "unavailable", f"Prometheus answered HTTP {status} without JSON"
            ) from None
        if not isinstance(body, dict):
            raise UpstreamError(503, "unavailable", f"Prometheus answered HTTP {status} with unexpected JSON")
        if status == 200 and body.get("status") == "success":
            return body.get("data")
        error_type = str(body.get("errorType") or "internal")
        message = str(body.get("error") or f"HTTP {status}")
        if status in (400, 422):
            raise UpstreamError(status, error_type, message)
        if error_type in ("timeout", "canceled") or status == 503:
            raise UpstreamError(503, "timeout" if error_type == "timeout" else "unavailable", message)
        raise UpstreamError(503, "unavailable", f"Prometheus error: {message}")
