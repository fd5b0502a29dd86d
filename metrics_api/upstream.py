"""The Prometheus HTTP API client: POST form requests, bounded time, Prometheus' errors mapped to ours."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import requests

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
    """A thin client for the read endpoints; one pooled session shared by all request threads."""

    def __init__(
        self, url: str, timeout_seconds: float, bearer_token: str | None = None, ca_file: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout_seconds
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if bearer_token:
            self.session.headers["Authorization"] = f"Bearer {bearer_token}"
        if ca_file:
            self.session.verify = ca_file

    def call(self, path: str, params: Params, method: str = "POST") -> Any:
        """The `data` of a successful answer; UpstreamError otherwise (no exception text reaches clients)."""
        url = f"{self.url}{path}"
        # Prometheus stops evaluating at its own `timeout`; the socket waits a little longer for its answer.
        try:
            if method == "POST":
                resp = self.session.post(url, data=list(params), timeout=self.timeout + 5)
            else:
                resp = self.session.get(url, params=list(params), timeout=self.timeout + 5)
        except requests.Timeout:
            raise UpstreamError(503, "timeout", "Prometheus did not answer in time") from None
        except requests.RequestException as exc:
            log.warning("Prometheus request failed: %s", type(exc).__name__)
            raise UpstreamError(503, "unavailable", "Prometheus is unavailable") from None
        try:
            body = resp.json()
        except ValueError:
            raise UpstreamError(
                503, "unavailable", f"Prometheus answered HTTP {resp.status_code} without JSON"
            ) from None
        if resp.status_code == 200 and body.get("status") == "success":
            return body.get("data")
        error_type = str(body.get("errorType") or "internal")
        message = str(body.get("error") or f"HTTP {resp.status_code}")
        if resp.status_code in (400, 422):
            raise UpstreamError(resp.status_code, error_type, message)
        if error_type in ("timeout", "canceled") or resp.status_code == 503:
            raise UpstreamError(503, "timeout" if error_type == "timeout" else "unavailable", message)
        raise UpstreamError(503, "unavailable", f"Prometheus error: {message}")
