"""Alertmanager API v2 client: list alerts (reconcile), create and expire silences (ack, maintenance)."""

from __future__ import annotations

import time
from typing import Any

import requests


class AlertmanagerError(RuntimeError):
    pass


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + "Z"


class AlertmanagerClient:
    """Talks to the first answering URL of a cluster (peers share silences by gossip)."""

    def __init__(self, urls: tuple[str, ...], timeout: float = 5.0) -> None:
        self.urls = urls
        self.timeout = timeout

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        last = "no Alertmanager URL configured"
        for url in self.urls:
            try:
                resp = requests.request(method, f"{url}{path}", timeout=self.timeout, **kwargs)
            except requests.RequestException as exc:
                last = f"{url}: {type(exc).__name__}"
                continue
            if resp.status_code < 500:
                return resp
            last = f"{url}: HTTP {resp.status_code}"
        raise AlertmanagerError(last)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds: active, silenced and inhibited (they are all still alerts)."""
        resp = self._call(
            "GET", "/api/v2/alerts", params={"active": "true", "silenced": "true", "inhibited": "true"}
        )
        if resp.status_code != 200:
            raise AlertmanagerError(f"GET /api/v2/alerts: HTTP {resp.status_code}")
        data = resp.json()
        if not isinstance(data, list):
            raise AlertmanagerError("GET /api/v2/alerts did not return a list")
        return data

    def create_silence(
        self, labels: dict[str, str], starts: float, ends: float, created_by: str, comment: str
    ) -> str:
        """A silence matching these labels exactly; returns its id."""
        matchers = [
            {"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in sorted(labels.items())
        ]
        return self.create_silence_matchers(matchers, starts, ends, created_by, comment)

    def create_silence_matchers(
        self, matchers: list[dict[str, Any]], starts: float, ends: float, created_by: str, comment: str
    ) -> str:
        body = {
            "matchers": matchers,
            "startsAt": _rfc3339(starts),
            "endsAt": _rfc3339(ends),
            "createdBy": created_by,
            "comment": comment,
        }
        resp = self._call("POST", "/api/v2/silences", json=body)
        if resp.status_code != 200:
            raise AlertmanagerError(f"POST /api/v2/silences: HTTP {resp.status_code}: {resp.text[:200]}")
        return str(resp.json()["silenceID"])

    def expire_silence(self, silence_id: str) -> None:
        resp = self._call("DELETE", f"/api/v2/silence/{silence_id}")
        if resp.status_code not in (200, 404):
            raise AlertmanagerError(f"DELETE silence: HTTP {resp.status_code}")

    def silences(self) -> list[dict[str, Any]]:
        resp = self._call("GET", "/api/v2/silences")
        if resp.status_code != 200:
            raise AlertmanagerError(f"GET /api/v2/silences: HTTP {resp.status_code}")
        return list(resp.json())
