"""The Flask app: Alertmanager webhook, JSON API with token roles, /healthz, /metrics, OpenAPI, web UI."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from werkzeug.exceptions import HTTPException

from alert_bridge import automation, queries
from alert_bridge.alertmanager import AlertmanagerClient, AlertmanagerError
from alert_bridge.auth import Principal, TokenStore
from alert_bridge.lifecycle import InvalidTransition
from alert_bridge.metrics import BridgeMetrics
from alert_bridge.openapi import openapi_document
from alert_bridge.payload import PayloadError, parse_notification, parse_time
from alert_bridge.service import Bridge, NotFound, StorageUnavailable, user_view
from exporters.common.config import ConfigError

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024
MAX_ROW_ID = 2**63 - 1


@dataclass
class AppContext:
    bridge: Bridge
    tokens: TokenStore
    metrics: BridgeMetrics
    poke: Callable[[], None]


class ApiError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _error(status: int, reason: str) -> Response:
    resp = jsonify({"status": "error", "error": reason})
    resp.status_code = status
    return resp


def principal() -> Principal:
    return g.principal  # type: ignore[no-any-return]


def requires(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A bearer token with at least `role`: 401 without a valid one, 403 when the role is too weak."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx: AppContext = request.environ["bridge.ctx"]
            header = request.headers.get("Authorization", "")
            token = header[7:].strip() if header[:7].lower() == "bearer " else None
            who = ctx.tokens.authenticate(token)
            if who is None:
                resp = _error(401, "missing or invalid bearer token")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="novacron-alert-bridge"'
                return resp
            if not who.can(role):
                return _error(403, f"role {who.role} may not do this (needs {role})")
            g.principal = who
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None and request.content_length:
        raise ApiError(400, "body must be JSON")
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    return body


def _str_field(body: dict[str, Any], name: str, required: bool = False, limit: int = 4000) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    if required and not value.strip():
        raise ApiError(400, f"{name} is required")
    if len(value) > limit:
        raise ApiError(400, f"{name} is longer than {limit} characters")
    return value


def _time_arg(name: str) -> float | None:
    value = request.args.get(name)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parse_time(value, name)
    except PayloadError as exc:
        raise ApiError(400, str(exc)) from None


def _until_arg() -> float | None:
    """`until` is inclusive: a time as the API shows it (milliseconds) covers its whole millisecond."""
    value = _time_arg("until")
    text = request.args.get("until", "")
    if value is not None and not text.replace(".", "", 1).lstrip("-").isdigit():
        value += 0.000999  # the store keeps sub-millisecond times; the shown value is rounded down
    return value


def _int_arg(name: str, default: int, maximum: int) -> int:
    value = request.args.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) > maximum:
        raise ApiError(400, f"{name} must be an integer from 0 to {maximum}")
    return int(value)


def create_app(ctx: AppContext) -> Flask:
    app = Flask("alert_bridge", template_folder=str(Path(__file__).parent / "templates"))
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.secret_key = ctx.bridge.config.session_secret or __import__("secrets").token_hex(32)
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"  # the UI's session cookie is not sent on cross-site posts
    bridge = ctx.bridge

    @app.before_request
    def _attach() -> None:
        request.environ["bridge.ctx"] = ctx
        # An id beyond a 64-bit row id names nothing; without this the database driver overflows (503).
        if any(isinstance(v, int) and v > MAX_ROW_ID for v in (request.view_args or {}).values()):
            raise NotFound("no such id")

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return _error(exc.status, exc.reason)

    @app.errorhandler(queries.QueryError)
    def _query_error(exc: queries.QueryError) -> Response:
        return _error(400, str(exc))

    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound) -> Response:
        return _error(404, str(exc.args[0]) if exc.args else "not found")

    @app.errorhandler(InvalidTransition)
    def _conflict(exc: InvalidTransition) -> Response:
        return _error(409, str(exc))

    @app.errorhandler(StorageUnavailable)
    def _unavailable(_exc: StorageUnavailable) -> Response:
        resp = _error(503, "storage unavailable, retry later")
        resp.headers["Retry-After"] = "5"
        return resp

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        return _error(exc.code or 400, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(_exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        # 503 rather than 500: the request changed nothing (transaction rolled back) and may be retried.
        return _error(503, "internal error; nothing was changed, retry later")

    # --- intake --------------------------------------------------------------------------------------------

    @app.post("/webhook/alertmanager")
    @requires("webhook")
    def webhook() -> Response:
        body = request.get_json(silent=True)
        if body is None:
            ctx.metrics.requests.labels("400").inc()
            return _error(400, "body must be a JSON Alertmanager webhook payload")
        try:
            note = parse_notification(body)
        except PayloadError as exc:
            ctx.metrics.requests.labels("400").inc()
            return _error(400, str(exc))
        try:
            result = bridge.ingest(note, f"alertmanager:{principal().name}")
        except StorageUnavailable:
            ctx.metrics.requests.labels("503").inc()
            raise
        ctx.metrics.requests.labels("200").inc()
        for outcome in ("created", "updated", "resolved", "duplicates"):
            count = getattr(result, outcome)
            if count:
                ctx.metrics.intake.labels(outcome.rstrip("s") if outcome == "duplicates" else outcome).inc(
                    count
                )
        if result.notifications:
            ctx.poke()
        return jsonify({"status": "success", **result.as_dict()})

    # --- alerts --------------------------------------------------------------------------------------------

    @app.get("/api/v1/alerts")
    @requires("viewer")
    def alerts_list() -> Response:
        incident = request.args.get("incident")
        if incident is not None and not incident.isdigit():
            raise ApiError(400, "incident must be an integer id")
        result = queries.list_alerts(
            bridge.db,
            states=request.args.getlist("state"),
            status=request.args.get("status") or None,
            labels=queries.label_filters(request.args.getlist("label")),
            incident_id=int(incident) if incident else None,
            alertname=request.args.get("alertname") or None,
            severity=request.args.get("severity") or None,
            since=_time_arg("since"),
            until=_until_arg(),
            limit=_int_arg("limit", 500, 10_000),
            offset=_int_arg("offset", 0, 10_000_000),
        )
        return jsonify(result)

    @app.get("/api/v1/alerts/<int:alert_id>")
    @requires("viewer")
    def alert_get(alert_id: int) -> Response:
        return jsonify(queries.get_alert(bridge.db, alert_id))

    @app.post("/api/v1/alerts/<int:alert_id>/ack")
    @requires("operator")
    def alert_ack(alert_id: int) -> Response:
        body = _json_body()
        minutes = body.get("silenceMinutes")
        if minutes is not None and (
            isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes < 0
        ):
            raise ApiError(400, "silenceMinutes must be a non-negative number")
        return jsonify(bridge.acknowledge(alert_id, principal().name, _str_field(body, "reason"), minutes))

    @app.post("/api/v1/alerts/<int:alert_id>/unack")
    @requires("operator")
    def alert_unack(alert_id: int) -> Response:
        return jsonify(bridge.unacknowledge(alert_id, principal().name, _str_field(_json_body(), "reason")))

    @app.post("/api/v1/alerts/<int:alert_id>/resolve")
    @requires("operator")
    def alert_resolve(alert_id: int) -> Response:
        view = bridge.resolve(alert_id, principal().name, _str_field(_json_body(), "reason"))
        ctx.poke()
        return jsonify(view)

    @app.post("/api/v1/alerts/<int:alert_id>/notes")
    @requires("operator")
    def alert_note(alert_id: int) -> Response:
        text_ = _str_field(_json_body(), "text", required=True)
        resp = jsonify(bridge.add_note(principal().name, text_, alert_id=alert_id))
        resp.status_code = 201
        return resp

    # --- incidents -----------------------------------------------------------------------------------------

    @app.get("/api/v1/incidents")
    @requires("viewer")
    def incidents_list() -> Response:
        return jsonify(queries.list_incidents(bridge.db, request.args.get("status") or None))

    @app.get("/api/v1/incidents/<int:incident_id>")
    @requires("viewer")
    def incident_get(incident_id: int) -> Response:
        return jsonify(queries.get_incident(bridge.db, incident_id))

    @app.post("/api/v1/incidents/<int:incident_id>/notes")
    @requires("operator")
    def incident_note(incident_id: int) -> Response:
        text_ = _str_field(_json_body(), "text", required=True)
        resp = jsonify(bridge.add_note(principal().name, text_, incident_id=incident_id))
        resp.status_code = 201
        return resp

    # --- audit, deliveries, dead letters, channels ---------------------------------------------------------

    @app.get("/api/v1/audit")
    @requires("viewer")
    def audit_list() -> Response:
        return jsonify(
            queries.list_audit(
                bridge.db,
                since=_time_arg("since"),
                until=_until_arg(),
                labels=queries.label_filters(request.args.getlist("label")),
                actor=request.args.get("actor") or None,
                action=request.args.get("action") or None,
                limit=_int_arg("limit", 1000, 100_000),
            )
        )

    @app.get("/api/v1/deliveries")
    @requires("viewer")
    def deliveries_list() -> Response:
        return jsonify(
            queries.list_deliveries(
                bridge.db,
                request.args.get("channel") or None,
                request.args.get("status") or None,
                _int_arg("limit", 500, 10_000),
            )
        )

    @app.get("/api/v1/dead-letters")
    @requires("viewer")
    def dead_letters() -> Response:
        return jsonify(queries.list_deliveries(bridge.db, request.args.get("channel") or None, "dead"))

    @app.post("/api/v1/dead-letters/<int:outbox_id>/replay")
    @requires("operator")
    def dead_letter_replay(outbox_id: int) -> Response:
        if not bridge.replay_dead_letter(outbox_id, principal().name):
            raise ApiError(404, f"no dead letter {outbox_id}")
        ctx.poke()
        return jsonify({"status": "success", "id": outbox_id})

    @app.post("/api/v1/channels/<name>/test")
    @requires("operator")
    def channel_test(name: str) -> Response:
        recipient = _str_field(_json_body(), "recipient", limit=255)
        outbox_id = bridge.enqueue_test(name, recipient, principal().name)
        ctx.poke()
        resp = jsonify({"status": "queued", "id": outbox_id})
        resp.status_code = 202
        return resp

    # --- silences and maintenance (Alertmanager) -----------------------------------------------------------

    def _am() -> AlertmanagerClient:
        if bridge.alertmanager is None:
            raise ApiError(400, "no Alertmanager configured (alertmanager.urls)")
        return bridge.alertmanager  # type: ignore[no-any-return]

    @app.get("/api/v1/silences")
    @requires("viewer")
    def silences_list() -> Response:
        try:
            return jsonify(_am().silences())
        except AlertmanagerError as exc:
            raise ApiError(503, f"Alertmanager: {exc}") from None

    @app.post("/api/v1/maintenance")
    @requires("operator")
    def maintenance_create() -> Response:
        body = _json_body()
        matchers = body.get("matchers")
        if (
            not isinstance(matchers, dict)
            or not matchers
            or not all(isinstance(v, str) for v in matchers.values())
        ):
            raise ApiError(400, "matchers must be a non-empty object of label name to value")
        try:
            raw_start = body.get("startsAt")
            starts = (parse_time(raw_start, "startsAt") if raw_start is not None else None) or time.time()
            ends = parse_time(body.get("endsAt"), "endsAt")
        except PayloadError as exc:
            raise ApiError(400, str(exc)) from None
        if ends is None or ends <= starts:
            raise ApiError(400, "endsAt must be after startsAt")
        comment = _str_field(body, "comment", required=True)
        am_matchers = [
            {"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()
        ]
        try:
            silence_id = _am().create_silence_matchers(am_matchers, starts, ends, principal().name, comment)
        except AlertmanagerError as exc:
            raise ApiError(503, f"Alertmanager: {exc}") from None
        record = bridge.add_maintenance(matchers, starts, ends, comment, principal().name, [silence_id])
        resp = jsonify(record)
        resp.status_code = 201
        return resp

    @app.get("/api/v1/maintenance")
    @requires("viewer")
    def maintenance_list() -> Response:
        return jsonify(bridge.list_maintenance())

    @app.delete("/api/v1/silences/<silence_id>")
    @requires("operator")
    def silence_expire(silence_id: str) -> Response:
        try:
            _am().expire_silence(silence_id)
        except AlertmanagerError as exc:
            raise ApiError(503, f"Alertmanager: {exc}") from None
        bridge.audit_event(principal().name, "silence:expired", {"silence_id": silence_id})
        return jsonify({"status": "success"})

    # --- users' own preferences -----------------------------------------------------------------------------

    def _may_edit(name: str) -> None:
        who = principal()
        if who.role != "admin" and who.name != name:
            raise ApiError(403, "only an admin or the user's own token (token name = user name) may do this")

    @app.get("/api/v1/users")
    @requires("viewer")
    def users_list() -> Response:
        return jsonify([user_view(p) for p in bridge.user_preferences().values()])

    @app.put("/api/v1/users/<name>/preferences")
    @requires("viewer")
    def user_prefs_put(name: str) -> Response:
        _may_edit(name)
        body = _json_body()
        try:
            prefs = bridge.set_user_preferences(name, body, principal().name)
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from None
        return jsonify(user_view(prefs))

    # --- tokens --------------------------------------------------------------------------------------------

    @app.get("/api/v1/tokens")
    @requires("admin")
    def tokens_list() -> Response:
        return jsonify(ctx.tokens.list())

    @app.post("/api/v1/tokens")
    @requires("admin")
    def tokens_create() -> Response:
        body = _json_body()
        name = _str_field(body, "name", required=True, limit=128)
        role = _str_field(body, "role", required=True, limit=16)
        try:
            token_id, token = ctx.tokens.create(name, role, principal().name)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        bridge.audit_event(
            principal().name, "token:created", {"token_id": token_id, "name": name, "role": role}
        )
        resp = jsonify({"id": token_id, "name": name, "role": role, "token": token})
        resp.status_code = 201
        return resp

    @app.delete("/api/v1/tokens/<int:token_id>")
    @requires("admin")
    def tokens_revoke(token_id: int) -> Response:
        if not ctx.tokens.revoke(token_id):
            raise ApiError(404, f"no active token {token_id}")
        bridge.audit_event(principal().name, "token:revoked", {"token_id": token_id})
        return jsonify({"status": "success"})

    # --- operational ---------------------------------------------------------------------------------------

    @app.get("/healthz")
    def healthz() -> Response:
        try:
            with bridge.db.read() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("healthz: store unavailable: %s", type(exc).__name__)
            return _error(503, "store unavailable")
        return jsonify({"status": "ok"})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(ctx.metrics.registry), content_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(openapi_document())

    from alert_bridge.ui import register_ui

    register_ui(app, ctx)
    automation.register_routes(app, bridge, ctx.poke)
    return app
