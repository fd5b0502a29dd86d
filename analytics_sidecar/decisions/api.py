"""JSON API of the decisions, under `/api/v1/decisions/`, behind the sidecar's bearer token.

| route | body |
| --- | --- |
| `GET /api/v1/decisions/scaling` | per group: direction, current and desired VMs, utilisation, forecast |
| `GET /api/v1/decisions/migrations` | proposed moves with reason, cost and balance gain, and their dry run |
| `GET /api/v1/decisions/simulate?move=VM:HOST&move=...` | dry run of any moves on the current fleet state |
| `GET /api/v1/decisions/health` | host health scores with reasons, failover hosts, evacuation targets |
| `GET /api/v1/decisions/placement[?size=NAME]` | placement offers per size, cheapest first |
| `GET /api/v1/decisions/slo[?tenant=T]` | per tenant: objective, availability, burn rates, budget left |
| `GET /api/v1/decisions/insights[?host=H]` | expected host load per horizon, VM tags, threshold suggestions |

Unknown parameters are a 400 naming them; before the first decision cycle every route answers 503, and so
does a sharded replica on standby (another replica holds the decision lease).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from analytics_sidecar.api import unknown_args_reason
from analytics_sidecar.config import format_duration
from analytics_sidecar.decisions import migration
from analytics_sidecar.decisions.engine import Decisions, DecisionState

Handler = Callable[[Request], Response]
Guard = Callable[[Handler], Handler]


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, allow_nan=False) + "\n", status=status, content_type="application/json")


def _error(status: int, reason: str) -> Response:
    return _json({"status": "error", "error": reason}, status)


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


class DecisionApi:
    def __init__(self, state: DecisionState, policy: migration.MigrationPolicy) -> None:
        self.state = state
        self.policy = policy

    def routes(self, guard: Guard) -> dict[str, Handler]:
        table: dict[str, tuple[Callable[[Request, Decisions], Response], set[str]]] = {
            "scaling": (self.scaling, {"group"}),
            "migrations": (self.migrations, set()),
            "simulate": (self.simulate, {"move"}),
            "health": (self.health, {"host"}),
            "placement": (self.placement, {"size"}),
            "slo": (self.slo, {"tenant"}),
            "insights": (self.insights, {"host", "vm_id"}),
        }
        return {
            f"/api/v1/decisions/{k}": guard(self._read(fn, allowed)) for k, (fn, allowed) in table.items()
        }

    def _read(self, fn: Callable[[Request, Decisions], Response], allowed: set[str]) -> Handler:
        def handler(request: Request) -> Response:
            if reason := unknown_args_reason(request.args, allowed):
                return _error(400, reason)
            d = self.state.decisions
            if self.state.role == "standby":
                return _error(503, "standby: another sidecar replica holds the decision lease (shard 0)")
            if d is None:
                return _error(503, "no decision cycle has completed yet")
            return fn(request, d)

        return handler

    @staticmethod
    def _ok(d: Decisions, key: str, body: Any) -> Response:
        return _json({"status": "success", "generated_at": d.generated_at, key: body})

    def scaling(self, request: Request, d: Decisions) -> Response:
        g = request.args.get("group")
        items = [
            {
                "group": s.group,
                "direction": s.direction,
                "current_vms": s.current_vms,
                "desired_vms": s.desired_vms,
                "utilisation": s.utilisation,
                "forecast_utilisation": _num(s.forecast_utilisation),
                "reason": s.reason,
                "since": s.since,
            }
            for s in d.scaling
            if not g or s.group == g
        ]
        return self._ok(d, "groups", items)

    def migrations(self, request: Request, d: Decisions) -> Response:
        plan = d.plan
        body = {
            "moves": [_move(m) for m in plan.moves] if plan else [],
            "hosts_freed": list(plan.freed) if plan else [],
            "still_hot": list(plan.still_hot) if plan else [],
            "simulation": _sim(d.simulation) if d.simulation else None,
        }
        return self._ok(d, "plan", body)

    def simulate(self, request: Request, d: Decisions) -> Response:
        moves = []
        for raw in request.args.getlist("move"):
            vm, sep, host = raw.partition(":")
            if not sep or not vm or not host:
                return _error(400, f"move must be VM:HOST, got {raw[:100]!r}")
            moves.append((vm, host))
        if not moves:
            return _error(400, "give at least one move=VM:HOST")
        try:
            sim = migration.simulate(d.hosts, d.vms, moves, self.policy)
        except ValueError as exc:
            return _error(400, str(exc))
        return self._ok(d, "simulation", _sim(sim))

    def health(self, request: Request, d: Decisions) -> Response:
        h = request.args.get("host")
        ev = d.evacuation
        body = {
            "hosts": [
                {
                    "host": x.host,
                    "score": x.score,
                    "reasons": list(x.reasons),
                    "failover": x.host in d.failover,
                }
                for x in d.health
                if not h or x.host == h
            ],
            "evacuation": [_move(m) for m in ev.moves if not h or m.source == h] if ev else [],
            "unplaced": list(ev.unplaced) if ev else [],
        }
        return self._ok(d, "health", body)

    def placement(self, request: Request, d: Decisions) -> Response:
        size = request.args.get("size")
        if size and size not in d.placement:
            return _error(400, f"unknown size {size[:100]!r} (sizes: {', '.join(sorted(d.placement))})")
        body = {
            name: [
                {
                    "provider": o.provider,
                    "target": o.target,
                    "monthly_cost": o.monthly,
                    "currency": d.currency,
                    "cpu_after": o.cpu_after,
                    "memory_after": o.memory_after,
                }
                for o in offers
            ]
            for name, offers in sorted(d.placement.items())
            if not size or name == size
        }
        return self._ok(d, "placement", body)

    def slo(self, request: Request, d: Decisions) -> Response:
        t = request.args.get("tenant")
        body = [
            {
                "tenant": s.tenant,
                "objective": s.objective,
                "availability": {format_duration(w): a for w, a in sorted(s.availability.items())},
                "burn_rates": {format_duration(w): b for w, b in sorted(s.burn_rates.items())},
                "error_budget_remaining": s.budget_remaining,
            }
            for s in d.slos.values()
            if not t or s.tenant == t
        ]
        return self._ok(d, "tenants", body)

    def insights(self, request: Request, d: Decisions) -> Response:
        host, vm = request.args.get("host"), request.args.get("vm_id")
        body = {
            "expected_load": {
                h: {r: {format_duration(k): v for k, v in sorted(by.items())} for r, by in res.items()}
                for h, res in sorted(d.expected_load.items())
                if not host or h == host
            },
            "tags": [
                {"vm_id": x.vm_id, "workload_class": x.workload_class, "criticality": x.criticality}
                for x in d.tags
                if not vm or x.vm_id == vm
            ],
            "threshold_suggestions": [
                {
                    "vm_id": s.vm_id,
                    "current": s.current,
                    "suggested": s.suggested,
                    "normal_p95": s.normal_p95,
                    "reason": s.reason,
                }
                for s in d.suggestions
                if not vm or s.vm_id == vm
            ],
        }
        return self._ok(d, "insights", body)


def _move(m: migration.Move) -> dict[str, Any]:
    return {
        "vm_id": m.vm_id,
        "source_host": m.source,
        "target_host": m.target,
        "reason": m.reason,
        "memory_gib": m.cost,
        "balance_gain": m.gain,
    }


def _sim(s: migration.Simulation) -> dict[str, Any]:
    return {
        "hosts": {h: dict(v) for h, v in s.hosts.items()},
        "overloaded_before": list(s.overloaded_before),
        "overloaded_after": list(s.overloaded_after),
        "balance_before": s.balance_before,
        "balance_after": s.balance_after,
        "hosts_freed": list(s.hosts_freed),
        "anti_affinity_violations": s.anti_affinity_violations,
    }
