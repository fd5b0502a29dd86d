"""Server-rendered web UI (no front-end build): alerts and incidents with filters, ack, notes, history.

Sign-in: paste an API token on /ui/login, or open a short-lived sign-in link made by
`POST /api/v1/ui-links` (signed with the session secret, so it works on every replica that shares it).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, Response, abort, redirect, render_template, request, session, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from alert_bridge import lifecycle as lc
from alert_bridge import queries
from alert_bridge.auth import Principal
from alert_bridge.lifecycle import InvalidTransition
from alert_bridge.service import NotFound

LINK_SECONDS = 120


def _ui_path(path: str) -> str:
    """`path` when it is one of our own UI paths, else "": sign-in links and forms must not redirect away."""
    return path if path.startswith("/ui") and "//" not in path and "\\" not in path else ""


def register_ui(app: Flask, ctx: Any) -> None:
    from alert_bridge.api import requires

    bridge = ctx.bridge
    signer = URLSafeTimedSerializer(app.secret_key, salt="novacron-ui-link")  # type: ignore[arg-type]

    def current() -> Principal | None:
        token_id = session.get("tid")
        return ctx.tokens.by_id(token_id) if isinstance(token_id, int) else None

    def form_token_ok(key: str) -> bool:
        """The form carries the token this session was given (so another site cannot post it for the user)."""
        expected = session.get(key, "")
        return bool(expected) and hmac.compare_digest(request.form.get("csrf", ""), expected)

    def login_required(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            @wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                who = current()
                if who is None:
                    return redirect(url_for("ui_login"))
                if not who.can(role):
                    abort(403)
                if request.method == "POST" and not form_token_ok("csrf"):
                    abort(400, "stale form, reload the page")
                return fn(who, *args, **kwargs)

            return wrapper

        return decorate

    def sign_in(who: Principal, next_path: str = "") -> Response:
        session.clear()
        session["tid"] = who.token_id
        session["csrf"] = secrets.token_urlsafe(24)
        return redirect(_ui_path(next_path) or url_for("ui_alerts"))  # type: ignore[return-value]

    @app.route("/ui/login", methods=["GET", "POST"])
    def ui_login() -> Any:
        # A login form token too: without it another site could sign the user in under its own token.
        session.setdefault("login_csrf", secrets.token_urlsafe(24))
        error = ""
        if request.method == "POST":
            if not form_token_ok("login_csrf"):
                abort(400, "stale form, reload the page")
            who = ctx.tokens.authenticate(request.form.get("token", "").strip())
            if who is not None and who.can("viewer"):
                return sign_in(who)
            error = "That token is not valid for the UI."
        return render_template("login.html", error=error), 401 if error else 200

    @app.get("/ui/link/<code>")
    def ui_link(code: str) -> Any:
        try:
            token_id = signer.loads(code, max_age=LINK_SECONDS)
        except BadSignature:
            return render_template("login.html", error="The sign-in link has expired."), 401
        who = ctx.tokens.by_id(token_id)
        if who is None:
            return render_template("login.html", error="The token behind this link was revoked."), 401
        return sign_in(who, request.args.get("next", ""))

    @app.post("/api/v1/ui-links")
    @requires("viewer")
    def ui_link_create() -> Any:
        from alert_bridge.api import principal

        code = signer.dumps(principal().token_id)
        return {"url": url_for("ui_link", code=code), "expiresInSeconds": LINK_SECONDS}, 201

    @app.post("/ui/logout")
    def ui_logout() -> Any:
        if current() is not None and not form_token_ok("csrf"):
            abort(400, "stale form, reload the page")
        session.clear()
        return redirect(url_for("ui_login"))

    @app.get("/")
    def ui_root() -> Any:
        return redirect(url_for("ui_alerts"))

    @app.get("/ui")
    @login_required("viewer")
    def ui_alerts(who: Principal) -> Any:
        states = [s for s in request.args.getlist("state") if s in lc.STATES] or list(lc.OPEN_STATES)
        label = request.args.get("label", "").strip()
        try:
            labels = queries.label_filters([label]) if label else {}
        except queries.QueryError as exc:
            abort(400, str(exc))
        rows = queries.list_alerts(bridge.db, states=states, labels=labels, limit=500)
        incidents = queries.list_incidents(bridge.db, "open", limit=50)
        return render_template(
            "alerts.html",
            who=who,
            alerts=rows,
            incidents=incidents,
            states=states,
            all_states=lc.STATES,
            label=label,
        )

    @app.get("/ui/alerts/<int:alert_id>")
    @login_required("viewer")
    def ui_alert(who: Principal, alert_id: int) -> Any:
        try:
            alert = queries.get_alert(bridge.db, alert_id)
        except NotFound:
            abort(404)
        return render_template("alert.html", who=who, a=alert)

    @app.get("/ui/incidents/<int:incident_id>")
    @login_required("viewer")
    def ui_incident(who: Principal, incident_id: int) -> Any:
        try:
            incident = queries.get_incident(bridge.db, incident_id)
        except NotFound:
            abort(404)
        return render_template("incident.html", who=who, i=incident)

    @app.post("/ui/alerts/<int:alert_id>/<action>")
    @login_required("operator")
    def ui_alert_action(who: Principal, alert_id: int, action: str) -> Any:
        text = request.form.get("text", "")[:4000]
        try:
            if action == "ack":
                bridge.acknowledge(alert_id, who.name, text)
            elif action == "unack":
                bridge.unacknowledge(alert_id, who.name, text)
            elif action == "resolve":
                bridge.resolve(alert_id, who.name, text)
                ctx.poke()
            elif action == "note" and text.strip():
                bridge.add_note(who.name, text, alert_id=alert_id)
            else:
                abort(400, "unknown action or empty note")
        except InvalidTransition as exc:
            abort(409, str(exc))
        except NotFound:
            abort(404)
        return redirect(_ui_path(request.form.get("back", "")) or url_for("ui_alert", alert_id=alert_id))

    @app.post("/ui/incidents/<int:incident_id>/note")
    @login_required("operator")
    def ui_incident_note(who: Principal, incident_id: int) -> Any:
        text = request.form.get("text", "")[:4000]
        if not text.strip():
            abort(400, "empty note")
        try:
            bridge.add_note(who.name, text, incident_id=incident_id)
        except NotFound:
            abort(404)
        return redirect(url_for("ui_incident", incident_id=incident_id))
