"""The OpenAPI 3.1 document served at /openapi.json (kept beside the routes it describes)."""

from __future__ import annotations

from typing import Any

from alert_bridge.automation import openapi_paths as automation_paths

_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
_ERR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def _op(
    summary: str,
    role: str | None,
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    ok: str = "200",
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            ok: {
                "description": "success",
                "content": {"application/json": {"schema": schema or {"type": "object"}}},
            },
            "400": _ERR,
            "503": _ERR,
        },
    }
    if role:
        op["security"] = [{"bearer": []}]
        op["x-required-role"] = role
        op["responses"]["401"] = _ERR
        op["responses"]["403"] = _ERR
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    return op


def _q(name: str, desc: str, kind: str = "string", many: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind}
    if many:
        schema = {"type": "array", "items": schema}
    return {"name": name, "in": "query", "required": False, "description": desc, "schema": schema}


_ALERT_LIST = {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}}


def openapi_document() -> dict[str, Any]:
    alert_id = [_ID]
    return {
        "openapi": "3.1.0",
        "info": {"title": "NovaCron alert bridge", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"status": {"type": "string"}, "error": {"type": "string"}},
                },
                "Alert": {
                    "type": "object",
                    "required": ["id", "fingerprint", "state", "status", "labels", "annotations", "startsAt"],
                    "properties": {
                        "id": {"type": "integer"},
                        "fingerprint": {"type": "string"},
                        "state": {"enum": ["firing", "acknowledged", "suppressed", "resolved", "expired"]},
                        "status": {"enum": ["firing", "resolved"]},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                        "startsAt": {"type": "string", "format": "date-time"},
                        "endsAt": {"type": ["string", "null"], "format": "date-time"},
                        "leaseUntil": {"type": "string", "format": "date-time"},
                        "incidentId": {"type": ["integer", "null"]},
                        "acknowledgedBy": {"type": ["string", "null"]},
                        "receipts": {"type": "integer"},
                    },
                },
                "AlertmanagerWebhook": {
                    "type": "object",
                    "required": ["version", "alerts"],
                    "properties": {
                        "version": {"const": "4"},
                        "groupKey": {"type": "string"},
                        "truncatedAlerts": {"type": "integer", "minimum": 0},
                        "status": {"type": "string"},
                        "alerts": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "Reason": {"type": "object", "properties": {"reason": {"type": "string"}}},
                "Ack": {
                    "type": "object",
                    "properties": {
                        "reason": {"type": "string"},
                        "silenceMinutes": {"type": "number", "minimum": 0},
                    },
                },
                "Note": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
                "Maintenance": {
                    "type": "object",
                    "required": ["matchers", "endsAt", "comment"],
                    "properties": {
                        "matchers": {"type": "object", "additionalProperties": {"type": "string"}},
                        "startsAt": {"type": "string", "format": "date-time"},
                        "endsAt": {"type": "string", "format": "date-time"},
                        "comment": {"type": "string"},
                    },
                },
                "Preferences": {
                    "type": "object",
                    "properties": {
                        "channels": {"type": "array", "items": {"type": "string"}},
                        "min_severity": {"enum": ["none", "info", "warning", "error", "critical", "page"]},
                        "quiet_hours": {
                            "type": ["string", "null"],
                            "pattern": "^\\d{1,2}:\\d{2}-\\d{1,2}:\\d{2}$",
                        },
                        "email": {"type": "string"},
                        "phone": {"type": "string"},
                    },
                },
                "TestSend": {"type": "object", "properties": {"recipient": {"type": "string"}}},
                "Token": {
                    "type": "object",
                    "required": ["name", "role"],
                    "properties": {
                        "name": {"type": "string"},
                        "role": {"enum": ["viewer", "webhook", "operator", "admin"]},
                    },
                },
            },
        },
        "paths": {
            "/webhook/alertmanager": {
                "post": _op(
                    "Alertmanager webhook (payload v4), idempotent", "webhook", body="AlertmanagerWebhook"
                )
            },
            "/api/v1/alerts": {
                "get": _op(
                    "List and filter alert episodes",
                    "viewer",
                    [
                        _q("state", "lifecycle state (repeatable)", many=True),
                        _q("status", "firing or resolved"),
                        _q("label", "name=value exact label match (repeatable)", many=True),
                        _q("incident", "incident id", "integer"),
                        _q("alertname", "exact alert name"),
                        _q("severity", "exact severity label"),
                        _q("since", "updated at or after (RFC 3339 or epoch seconds)"),
                        _q("until", "started at or before"),
                        _q("limit", "max rows (default 500)", "integer"),
                        _q("offset", "rows to skip", "integer"),
                    ],
                    schema=_ALERT_LIST,
                )
            },
            "/api/v1/alerts/{id}": {
                "get": _op("One alert: notes, history, notifications, likely cause", "viewer", alert_id)
            },
            "/api/v1/alerts/{id}/ack": {
                "post": _op("Acknowledge (optionally silence in Alertmanager)", "operator", alert_id, "Ack")
            },
            "/api/v1/alerts/{id}/unack": {
                "post": _op("Remove the acknowledgement", "operator", alert_id, "Reason")
            },
            "/api/v1/alerts/{id}/resolve": {"post": _op("Resolve by hand", "operator", alert_id, "Reason")},
            "/api/v1/alerts/{id}/notes": {"post": _op("Add a note", "operator", alert_id, "Note", ok="201")},
            "/api/v1/incidents": {"get": _op("List incidents", "viewer", [_q("status", "open or resolved")])},
            "/api/v1/incidents/{id}": {
                "get": _op("One incident with its alerts and notes", "viewer", alert_id)
            },
            "/api/v1/incidents/{id}/notes": {
                "post": _op("Add a note to an incident", "operator", alert_id, "Note", ok="201")
            },
            "/api/v1/audit": {
                "get": _op(
                    "Audit trail (append-only, uncapped)",
                    "viewer",
                    [
                        _q("since", "from time"),
                        _q("until", "to time"),
                        _q("label", "name=value (repeatable)", many=True),
                        _q("actor", "who"),
                        _q("action", "action prefix, e.g. transition"),
                        _q("limit", "max rows", "integer"),
                    ],
                )
            },
            "/api/v1/deliveries": {
                "get": _op(
                    "Delivery log with every attempt",
                    "viewer",
                    [_q("channel", "channel"), _q("status", "pending, delivered or dead")],
                )
            },
            "/api/v1/dead-letters": {"get": _op("Dead-letter queue", "viewer", [_q("channel", "channel")])},
            "/api/v1/dead-letters/{id}/replay": {"post": _op("Replay a dead letter", "operator", alert_id)},
            "/api/v1/channels/{name}/test": {
                "post": _op(
                    "Queue a test notification",
                    "operator",
                    [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "TestSend",
                    ok="202",
                )
            },
            "/api/v1/silences": {"get": _op("Alertmanager silences", "viewer")},
            "/api/v1/silences/{id}": {
                "delete": _op(
                    "Expire a silence",
                    "operator",
                    [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                )
            },
            "/api/v1/maintenance": {
                "get": _op("Maintenance windows", "viewer"),
                "post": _op(
                    "Create a maintenance window (Alertmanager silence by matcher and time)",
                    "operator",
                    body="Maintenance",
                    ok="201",
                ),
            },
            "/api/v1/tokens": {
                "get": _op("List API tokens", "admin"),
                "post": _op("Create a token (shown once)", "admin", body="Token", ok="201"),
            },
            "/api/v1/tokens/{id}": {"delete": _op("Revoke a token", "admin", alert_id)},
            **automation_paths(_op),
            "/api/v1/users": {"get": _op("Users with their effective preferences", "viewer")},
            "/api/v1/users/{name}/preferences": {
                "put": _op(
                    "Set a user's channels, min_severity, quiet_hours, email, phone (admin or own token)",
                    "viewer",
                    [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "Preferences",
                )
            },
            "/api/v1/ui-links": {
                "post": _op("A signed web UI sign-in link, valid 120 s", "viewer", ok="201")
            },
            "/healthz": {"get": _op("Health (store reachable)", None)},
            "/metrics": {
                "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "exposition"}}}
            },
        },
    }
