"""Root-cause context for anomaly alerts, fetched from the analytics sidecar's incidents API at delivery time.

When a notification for an alert whose labels match `enrichment.match` (default `type: anomaly`, the label of
the rules on `novacron_anomaly_score` and the learned band) is about to be sent, the worker asks the sidecar
`GET /api/v1/anomalies/incidents?vm_id=<vm_id>` (bearer token, short timeout, answers cached briefly) and adds
the incident's likely cause and correlated series to the payload as `context`:

    {"source": "analytics-sidecar", "incident": "1764...-host-kvm-1-cpu", "start": "2026-...Z",
     "ongoing": true, "likelyCause": {"kind": "host", "vm_id": "kvm-1", "resource": "cpu", ...},
     "correlated": [{"kind": "vm", "vm_id": "vm-a", "resource": "cpu", ...}], "summary": "host kvm-1 cpu ..."}

The sidecar being down, slow or wrong never holds a notification back longer than the timeout and never
drops it: the notification goes out without `context`, `novacron_bridge_enrichment_failures_total{reason}`
counts it, and after a transport failure the sidecar is not asked again for `backoff_seconds` (so an outage
costs one timeout, not one per message).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from cachetools import LRUCache, TTLCache

from alert_bridge.payload import PayloadError, parse_time
from exporters.common.config import ConfigError, check_keys, parse_number, read_secret

CACHE_ENTRIES = 10_000  # VMs whose context (and single-flight lock) is kept
log = logging.getLogger(__name__)

CONTEXT_ACTION = "context:anomaly"  # audit action that keeps the context shown with the alert
_KEYS = {
    "sidecar_url",
    "token_env",
    "token_file",
    "timeout_seconds",
    "cache_seconds",
    "backoff_seconds",
    "since_seconds",
    "match",
    "max_correlated",
}


@dataclass(frozen=True)
class EnrichmentConfig:
    """`enrichment:` section of the bridge config; disabled while `sidecar_url` is empty."""

    sidecar_urls: tuple[str, ...] = ()  # one per sidecar shard: a VM's incidents live on its own shard
    token: str | None = field(default=None, repr=False)
    timeout_seconds: float = 2.0
    cache_seconds: float = 30.0
    backoff_seconds: float = 10.0
    since_seconds: float = 6 * 3600.0
    match: Mapping[str, str] = field(default_factory=lambda: {"type": "anomaly"})
    max_correlated: int = 10

    @property
    def enabled(self) -> bool:
        return bool(self.sidecar_urls)


def parse_enrichment(section: Mapping[str, Any]) -> EnrichmentConfig:
    """Validate the section; errors name `enrichment.<key>`."""
    check_keys(section, _KEYS, "enrichment")
    urls = _urls(section.get("sidecar_url") or [])
    match = section.get("match", {"type": "anomaly"})
    if not isinstance(match, Mapping) or not all(isinstance(v, str) for v in match.values()):
        raise ConfigError("enrichment.match", "must map label names to values")
    token = read_secret(
        env=section.get("token_env"), file=section.get("token_file"), key="enrichment.token_file"
    )
    return EnrichmentConfig(
        sidecar_urls=urls,
        token=token,
        timeout_seconds=_num(section, "timeout_seconds", 2.0, 0.05, 30.0),
        cache_seconds=_num(section, "cache_seconds", 30.0, 0.0, 3600.0),
        backoff_seconds=_num(section, "backoff_seconds", 10.0, 0.0, 3600.0),
        since_seconds=_num(section, "since_seconds", 6 * 3600.0, 60.0, 30 * 86400.0),
        match={str(k): v for k, v in match.items()},
        max_correlated=int(_num(section, "max_correlated", 10, 0, 100)),
    )


def _urls(value: Any) -> tuple[str, ...]:
    """One URL, or a list of them for sharded sidecars (`--shard i/n`): the bridge asks each."""
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not all(
        isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls
    ):
        raise ConfigError(
            "enrichment.sidecar_url", f"must be an http(s) URL or a list of them (got {value!r})"
        )
    return tuple(u.rstrip("/") for u in urls)


def _num(section: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    return parse_number(section.get(name, default), f"enrichment.{name}", low, high)


class EnrichmentFailed(Exception):
    """The sidecar could not answer; `reason` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Enricher:
    """Thread-safe: delivery threads share the cache; one request per VM at a time (others wait for it)."""

    def __init__(
        self,
        config: EnrichmentConfig,
        on_failure: Callable[[str], None] = lambda _reason: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.on_failure = on_failure
        self.clock = clock
        # Bounded, so a storm over many VMs evicts the oldest entries instead of growing without end.
        self._cache: TTLCache[str, list[dict[str, Any]]] = TTLCache(
            CACHE_ENTRIES, config.cache_seconds, timer=clock
        )
        self._locks: LRUCache[str, threading.Lock] = LRUCache(CACHE_ENTRIES)
        self._lock = threading.Lock()
        self._down_until: dict[str, float] = {}
        self._local = threading.local()

    def applies(self, alert: Mapping[str, Any]) -> bool:
        labels = alert.get("labels") or {}
        return bool(labels.get("vm_id")) and all(labels.get(k) == v for k, v in self.config.match.items())

    def enrich(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload with `context` added when the sidecar knows the alert's incident; else unchanged."""
        alert = payload.get("alert")
        if not isinstance(alert, Mapping) or "context" in payload or not self.applies(alert):
            return payload
        context = self.context(alert)
        return {**payload, "context": context} if context else payload

    def context(self, alert: Mapping[str, Any]) -> dict[str, Any] | None:
        labels = alert["labels"]
        try:
            incidents = self._incidents(str(labels["vm_id"]))
        except EnrichmentFailed as exc:
            self.on_failure(exc.reason)
            log.warning("no anomaly context for %s: %s", labels.get("vm_id"), exc)
            return None
        chosen = pick_incident(
            incidents, labels["vm_id"], labels.get("resource"), _epoch(alert.get("startsAt"))
        )
        return build_context(chosen, self.config.max_correlated) if chosen else None

    # --- the sidecar call, cached ---------------------------------------------------------------------------

    def _incidents(self, vm_id: str) -> list[dict[str, Any]]:
        with self._lock:
            lock = self._locks.setdefault(vm_id, threading.Lock())
        with lock:  # single flight: concurrent deliveries of one alert make one request
            with self._lock:
                cached = self._cache.get(vm_id)
            if cached is not None:
                return cached
            incidents = self._from_every_shard(vm_id)
            with self._lock:
                self._cache[vm_id] = incidents
            return incidents

    def _from_every_shard(self, vm_id: str) -> list[dict[str, Any]]:
        """Incidents from every sidecar that answers; fails only when none does (partial answers counted)."""
        incidents: list[dict[str, Any]] = []
        failures: list[EnrichmentFailed] = []
        for url in self.config.sidecar_urls:
            try:
                incidents.extend(self._from_one(url, vm_id))
            except EnrichmentFailed as exc:
                failures.append(exc)
        if failures and len(failures) == len(self.config.sidecar_urls):
            raise failures[0]
        for failure in failures:
            self.on_failure(failure.reason)
        return incidents

    def _from_one(self, url: str, vm_id: str) -> list[dict[str, Any]]:
        if self.clock() < self._down_until.get(url, 0.0):
            raise EnrichmentFailed("backoff", "sidecar failed recently; not asking again yet")
        try:
            return self._fetch(url, vm_id)
        except EnrichmentFailed as exc:
            if exc.reason in ("timeout", "unreachable"):
                self._down_until[url] = self.clock() + self.config.backoff_seconds
            raise

    @property
    def _http(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _fetch(self, url: str, vm_id: str) -> list[dict[str, Any]]:
        cfg = self.config
        headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}
        try:
            resp = self._http.get(
                f"{url}/api/v1/anomalies/incidents",
                params={"vm_id": vm_id, "since": f"{cfg.since_seconds:.0f}"},
                headers=headers,
                timeout=cfg.timeout_seconds,
            )
        except requests.Timeout:
            raise EnrichmentFailed("timeout", f"no answer within {cfg.timeout_seconds:g}s") from None
        except requests.RequestException as exc:
            raise EnrichmentFailed("unreachable", type(exc).__name__) from None
        if resp.status_code != 200:
            raise EnrichmentFailed("http", f"HTTP {resp.status_code}")
        try:
            incidents = resp.json()["data"]["incidents"]
            if not isinstance(incidents, list) or not all(_valid(i) for i in incidents):
                raise ValueError("unexpected incident shape")
        except (ValueError, KeyError, TypeError) as exc:
            raise EnrichmentFailed("invalid", str(exc)[:100]) from None
        return incidents


def _valid(incident: Any) -> bool:
    return (
        isinstance(incident, dict)
        and isinstance(incident.get("members"), list)
        and bool(incident["members"])
        and all(isinstance(m, dict) for m in incident["members"])
        and isinstance(incident.get("start"), int | float)
    )


def pick_incident(
    incidents: list[dict[str, Any]], vm_id: str, resource: str | None, starts_at: float | None
) -> dict[str, Any] | None:
    """The incident holding the alert's series (or at least its VM), nearest in time to the alert's start."""

    def holds(inc: dict[str, Any], same_resource: bool) -> bool:
        return any(
            m.get("vm_id") == vm_id and (not same_resource or m.get("resource") == resource)
            for m in inc["members"]
        )

    for same_resource in (True, False):
        found = [i for i in incidents if holds(i, same_resource and resource is not None)]
        if found:
            if starts_at is None:
                return found[0]  # newest first, as the sidecar lists them
            return min(found, key=lambda i: abs(float(i["start"]) - starts_at))
    return None


def build_context(incident: dict[str, Any], max_correlated: int) -> dict[str, Any]:
    members: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for raw in incident["members"]:  # one per episode, best ranked first: keep each series once
        m = _member(raw)
        series = (m["kind"], m["vm_id"], m["resource"])
        if series not in seen:
            seen.add(series)
            members.append(m)
    cause, others = members[0], members[1 : 1 + max_correlated]
    return {
        "source": "analytics-sidecar",
        "incident": str(incident.get("id", "")),
        "start": _iso(incident.get("start")),
        "ongoing": bool(incident.get("ongoing")),
        "hosts": [str(h) for h in incident.get("hosts") or []],
        "likelyCause": cause,
        "correlated": others,
        "summary": f"{describe(cause)}, anomalous since {cause['onset'] or '?'}"
        + (f"; {len(members) - 1} correlated series" if len(members) > 1 else ""),
    }


def _member(m: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "kind": str(m.get("kind", "vm")),
        "vm_id": str(m.get("vm_id", "")),
        "resource": str(m.get("resource", "")),
        "host": str(m.get("host", "")),
        "tenant": str(m.get("tenant", "")),
        "onset": _iso(m.get("onset")),
        "peakScore": _num_or_none(m.get("peak_score")),
        "correlation": _num_or_none(m.get("correlation")),
        "causeScore": _num_or_none(m.get("cause_score")),
    }


def describe(member: Mapping[str, Any]) -> str:
    """`host kvm-1 cpu` / `VM vm-a (on kvm-1) memory`."""
    if member.get("kind") == "host":
        return f"host {member.get('vm_id')} {member.get('resource')}"
    where = f" (on {member['host']})" if member.get("host") else ""
    return f"VM {member.get('vm_id')}{where} {member.get('resource')}"


def context_lines(context: Mapping[str, Any]) -> list[str]:
    """Plain lines for text, HTML and chat renderings of a notification."""
    cause = context.get("likelyCause") or {}
    lines = [f"Likely cause: {describe(cause)}, anomalous since {cause.get('onset') or '?'}"]
    if cause.get("causeScore") is not None:
        lines[0] += f" (cause score {cause['causeScore']:.2f})"
    correlated = context.get("correlated") or []
    if correlated:
        lines.append(f"Correlated series (incident {context.get('incident', '')}):")
        for m in correlated:
            extra = [f"since {m.get('onset') or '?'}"]
            if m.get("peakScore") is not None:
                extra.append(f"peak score {m['peakScore']:.2f}")
            if m.get("correlation") is not None:
                extra.append(f"r={m['correlation']:.2f}")
            lines.append(f"  {describe(m)}: {', '.join(extra)}")
    return lines


def _num_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _iso(ts: Any) -> str | None:
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _epoch(iso: Any) -> float | None:
    """The alert's startsAt through the bridge's own RFC 3339 parser; None when absent or unreadable."""
    try:
        return parse_time(iso, "startsAt")
    except PayloadError:
        return None
