"""JSON API for automation: `/api/v1/recommendations` and siblings, behind a bearer token.

Every route needs `Authorization: Bearer <token>` (the token comes from `api.token_env` or
`api.token_file`; without one the API answers 403). GET routes read the last completed analysis;
`POST /api/v1/analyse` asks for a cycle now and is written to the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from werkzeug.wrappers import Request, Response

from analytics_sidecar.config import format_duration
from analytics_sidecar.engine import Bounds, Results, VmResult
from analytics_sidecar.writeback import State

audit = logging.getLogger("analytics_sidecar.audit")

Handler = Callable[[Request], Response]
_FILTERS = {"vm_id", "tenant", "provider", "host", "status", "class"}
_STATUSES = {"over_provisioned", "under_provisioned", "optimized"}


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, allow_nan=False) + "\n", status=status, content_type="application/json")


def unknown_args_reason(args: Iterable[str], allowed: set[str]) -> str | None:
    """The 400 reason every route of the sidecar's API gives for query parameters outside `allowed`."""
    unknown = set(args) - allowed
    return f"unknown query parameter(s): {', '.join(sorted(unknown))[:200]}" if unknown else None


def _error(status: int, reason: str) -> Response:
    return _json({"status": "error", "error": reason}, status)


def _num(x: float | None) -> float | None:
    """JSON has no infinity: +Inf (never exhausted) and NaN become null."""
    return x if x is not None and math.isfinite(x) else None


def _bounds(fc: Mapping[float, Bounds]) -> dict[str, dict[str, float | None]]:
    return {
        format_duration(h): {"point": _num(p), "lower": _num(lo), "upper": _num(hi)}
        for h, (p, lo, hi) in sorted(fc.items())
    }


class Api:
    """The routes, bound to the shared `State` and the token."""

    def __init__(self, state: State, token: str | None, trigger: Callable[[], None]) -> None:
        self.state = state
        self.token = token
        self.trigger = trigger

    def routes(self) -> dict[str, Handler]:
        table: dict[str, Callable[[Request, Results], Response]] = {
            "/api/v1/recommendations": self.recommendations,
            "/api/v1/patterns": self.patterns,
            "/api/v1/forecasts": self.forecasts,
            "/api/v1/capacity": self.capacity,
            "/api/v1/consolidation": self.consolidation,
            "/api/v1/efficiency": self.efficiency,
            "/api/v1/neighbours": self.neighbours,
        }
        out: dict[str, Handler] = {path: self._read(fn) for path, fn in table.items()}
        out["/api/v1/status"] = self._guard(self.status, "GET")
        out["/api/v1/analyse"] = self._guard(self.analyse, "POST")
        return out

    def guard_get(self, fn: Handler) -> Handler:
        """Token-protect a GET route served by another module (the anomaly API)."""
        return self._guard(fn, "GET")

    # -- plumbing --------------------------------------------------------------------------------
    def _guard(self, fn: Handler, method: str) -> Handler:
        def handler(request: Request) -> Response:
            if request.method != method:
                return Response(f"method not allowed, use {method}\n", status=405, headers={"Allow": method})
            if not self.token:
                return _error(403, "API disabled: no token configured (api.token_env or api.token_file)")
            header = request.headers.get("Authorization", "")
            given = header[7:] if header.startswith("Bearer ") else ""
            if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                return Response(
                    json.dumps({"status": "error", "error": "missing or wrong bearer token"}) + "\n",
                    status=401,
                    content_type="application/json",
                    headers={"WWW-Authenticate": 'Bearer realm="novacron-analytics"'},
                )
            return fn(request)

        return handler

    def _read(self, fn: Callable[[Request, Results], Response]) -> Handler:
        def handler(request: Request) -> Response:
            if reason := unknown_args_reason(request.args, _FILTERS):
                return _error(400, reason)
            status = request.args.get("status")
            if status is not None and status not in _STATUSES:
                return _error(400, f"status must be one of {', '.join(sorted(_STATUSES))}")
            with self.state.lock:
                res = self.state.results
            if res is None:
                return _error(503, "no analysis has completed yet")
            return fn(request, res)

        return self._guard(handler, "GET")

    def _vms(self, request: Request, res: Results) -> list[VmResult]:
        a = request.args
        out = []
        for r in sorted(res.vms.values(), key=lambda r: r.vm_id):
            if a.get("vm_id") and r.vm_id != a["vm_id"]:
                continue
            if any(a.get(k) and r.labels.get(k, "") != a[k] for k in ("tenant", "provider", "host")):
                continue
            if a.get("status") and (not r.recommendation or r.recommendation.status != a["status"]):
                continue
            if a.get("class") and (not r.patterns or r.patterns.workload_class != a["class"]):
                continue
            out.append(r)
        return out

    def _envelope(self, res: Results, key: str, items: Any) -> Response:
        return _json({"status": "success", "generated_at": res.generated_at, "shard": res.shard, key: items})

    # -- routes ----------------------------------------------------------------------------------
    def recommendations(self, request: Request, res: Results) -> Response:
        items = []
        for r in self._vms(request, res):
            rec = r.recommendation
            items.append(
                {
                    **_identity(r),
                    "current": {"vcpus": r.vcpus, "memory_bytes": r.memory_bytes},
                    "recommended": None
                    if rec is None
                    else {
                        "vcpus": rec.vcpus,
                        "cpu_cores": rec.cpu_cores,
                        "memory_bytes": rec.memory_bytes,
                    },
                    "risk": self.state.risk,
                    "status": rec.status if rec else None,
                    "cpu_status": rec.cpu_status if rec else None,
                    "memory_status": rec.memory_status if rec else None,
                    "idle": r.idle,
                    "monthly_cost": r.cost.monthly if r.cost else None,
                    "monthly_savings": (r.cost.monthly - r.cost.rightsized_monthly) if r.cost else None,
                    "currency": res.currency,
                }
            )
        return self._envelope(res, "recommendations", items)

    def patterns(self, request: Request, res: Results) -> Response:
        items = []
        for r in self._vms(request, res):
            p = r.patterns
            items.append(
                {
                    **_identity(r),
                    "class": p.workload_class if p else None,
                    "seasonality": {"daily": p.daily_strength, "weekly": p.weekly_strength} if p else None,
                    "trend": None
                    if p is None
                    else {
                        "slope_cores_per_second": p.trend.slope_per_second,
                        "mann_kendall_tau": p.trend.tau,
                        "p_value": p.trend.p_value,
                    },
                    "outlier_ratio": p.outlier_ratio if p else None,
                }
            )
        return self._envelope(res, "patterns", items)

    def forecasts(self, request: Request, res: Results) -> Response:
        vms = [
            {**_identity(r), **{k: _bounds(v) for k, v in r.forecasts.items()}}
            for r in self._vms(request, res)
        ]
        hosts = [
            {"host": h.host, **{k: _bounds(v) for k, v in h.forecasts.items()}}
            for h in res.hosts.values()
            if not request.args.get("host") or h.host == request.args["host"]
        ]
        tenants = [
            {
                "tenant": t.tenant,
                "cpu_cores": _bounds(t.cpu_forecast),
                "monthly_cost": {format_duration(h): v for h, v in sorted(t.cost_forecast.items())},
            }
            for t in res.tenants.values()
        ]
        return self._envelope(res, "forecasts", {"vms": vms, "hosts": hosts, "tenants": tenants})

    def capacity(self, request: Request, res: Results) -> Response:
        hosts = [
            {
                "host": h.host,
                "cpus": h.cpus,
                "memory_bytes": h.memory_bytes,
                "time_to_exhaustion_seconds": {k: _num(v) for k, v in h.exhaustion_seconds.items()},
            }
            for h in res.hosts.values()
        ]
        pools = [
            {
                "host": p.host,
                "pool": p.pool,
                "capacity_bytes": p.capacity_bytes,
                "used_bytes": p.used_bytes,
                "time_to_exhaustion_seconds": _num(p.exhaustion_seconds),
            }
            for p in res.pools
        ]
        return self._envelope(res, "capacity", {"hosts": hosts, "storage_pools": pools})

    def consolidation(self, request: Request, res: Results) -> Response:
        c = res.consolidation
        body = (
            None
            if c is None
            else {
                "hosts_current": c.hosts_current,
                "hosts_needed": c.hosts_needed,
                "hosts_freed": list(c.hosts_freed),
                "placement": dict(c.placement),
                "unplaced": list(c.unplaced),
                "monthly_savings": c.monthly_savings,
                "currency": res.currency,
            }
        )
        return self._envelope(res, "consolidation", body)

    def efficiency(self, request: Request, res: Results) -> Response:
        return self._envelope(
            res,
            "efficiency",
            {
                "vms": {r.vm_id: r.efficiency for r in self._vms(request, res)},
                "hosts": {h.host: h.efficiency for h in res.hosts.values()},
                "tenants": {t.tenant: t.efficiency for t in res.tenants.values()},
            },
        )

    def neighbours(self, request: Request, res: Results) -> Response:
        items = [
            {
                "vm_id": n.vm_id,
                "neighbour_vm_id": n.neighbour_vm_id,
                "host": n.host,
                "correlation": n.correlation,
            }
            for n in res.neighbours
            if not request.args.get("vm_id") or n.vm_id == request.args["vm_id"]
        ]
        return self._envelope(res, "neighbours", items)

    def status(self, request: Request) -> Response:
        with self.state.lock:
            st = self.state
            res = st.results
            body = {
                "status": "success",
                "last_success": st.last_success,
                "cycles": st.cycles,
                "failures": st.failures,
                "shard": res.shard if res else None,
                "vms": len(res.vms) if res else 0,
                "analysed_at": dict(res.analysed_at) if res else {},
            }
        return _json(body)

    def analyse(self, request: Request) -> Response:
        who = hashlib.sha256((self.token or "").encode()).hexdigest()[:12]
        audit.info("action=analyse remote=%s token_sha256=%s", request.remote_addr, who)
        self.trigger()
        return _json({"status": "accepted"}, 202)


def _identity(r: VmResult) -> dict[str, Any]:
    return {
        "vm_id": r.vm_id,
        "vm_name": r.labels.get("vm_name", ""),
        "tenant": r.tenant,
        "provider": r.labels.get("provider", ""),
        "host": r.host,
    }
