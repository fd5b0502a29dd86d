"""Flask blueprint `anomaly_api`: incidents (grouped anomalies, ranked likely cause) and per-series scores.

Mount it on the sidecar app and hand it the engine once:

    app.register_blueprint(anomaly_api)
    init_anomaly_api(app, engine)

GET /api/v1/anomalies/incidents?since=3600&gap=600&min_score=0.5&host=&tenant=&vm_id=
    {"status": "success", "data": {"incidents": [{"id", "start", "ongoing", "hosts", "tenants", "vm_ids",
                                                  "likely_cause": {...}, "members": [...]}]}}
GET /api/v1/anomalies/series?vm_id=...   latest score and band per series
Bad parameters get a 400 with the reason; no engine configured yet gets a 503.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from analytics_sidecar.anomaly.correlation import find_incidents
from analytics_sidecar.anomaly.engine import AnomalyEngine
from analytics_sidecar.api import unknown_args_reason

EXTENSION_KEY = "novacron_anomaly_engine"
MAX_SINCE = 30 * 86400.0

anomaly_api = Blueprint("anomaly_api", __name__)


class BadRequest(ValueError):
    """A query parameter is malformed; the message names it."""


def init_anomaly_api(app: Flask, engine: AnomalyEngine, clock: Callable[[], float] = time.time) -> None:
    """Attach the engine (and a clock, for tests) that the blueprint's views read."""
    app.extensions[EXTENSION_KEY] = (engine, clock)


def _float_arg(name: str, default: float, low: float, high: float) -> float:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise BadRequest(f"{name} must be between {low:g} and {high:g}")
    return value


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"status": "error", "error": message}), status


def _unknown_args(allowed: set[str]) -> tuple[Response, int] | None:
    """A 400 naming unknown query parameters, as every other route of the sidecar's API answers."""
    reason = unknown_args_reason(request.args, allowed)
    return _error(400, reason) if reason else None


def _engine() -> tuple[AnomalyEngine, Callable[[], float]] | None:
    return current_app.extensions.get(EXTENSION_KEY)


@anomaly_api.get("/api/v1/anomalies/incidents")
def incidents() -> tuple[Response, int] | Response:
    if bad := _unknown_args({"since", "gap", "min_score", "host", "tenant", "vm_id"}):
        return bad
    got = _engine()
    if got is None:
        return _error(503, "anomaly engine not running yet")
    engine, clock = got
    try:
        since = _float_arg("since", 3600.0, 0.0, MAX_SINCE)
        gap = _float_arg("gap", 600.0, 0.0, 86400.0)
        min_score = _float_arg("min_score", 0.0, 0.0, 1.0)
    except BadRequest as exc:
        return _error(400, str(exc))
    with engine.lock:  # the sidecar's cycle appends to episodes and traces concurrently
        found = find_incidents(engine.series(), since=clock() - since, gap=gap, min_peak=min_score)
    wanted = {k: v for k in ("host", "tenant", "vm_id") if (v := request.args.get(k))}
    out = [inc.to_json() for inc in found]
    if wanted:
        out = [i for i in out if _matches(i, wanted)]
    return jsonify({"status": "success", "data": {"incidents": out}})


def _matches(incident: dict, wanted: dict[str, str]) -> bool:
    members = incident["members"]
    return all(any(m[k] == v for m in members) for k, v in wanted.items())


@anomaly_api.get("/api/v1/anomalies/series")
def series() -> tuple[Response, int] | Response:
    if bad := _unknown_args({"vm_id"}):
        return bad
    got = _engine()
    if got is None:
        return _error(503, "anomaly engine not running yet")
    engine, _ = got
    vm_id = request.args.get("vm_id")
    rows = []
    for st in engine.series():
        if vm_id and st.key.vm_id != vm_id:
            continue
        rows.append(
            {
                "vm_id": st.key.vm_id,
                "resource": st.key.resource,
                "kind": st.key.kind,
                "host": st.key.host,
                "tenant": st.key.tenant,
                "timestamp": st.last_t if math.isfinite(st.last_t) else None,
                "score": st.score,
                "upper": None if math.isnan(st.upper) else st.upper,
                "lower": None if math.isnan(st.lower) else st.lower,
                "anomalous_since": st.onset,
            }
        )
    return jsonify({"status": "success", "data": {"series": rows}})
