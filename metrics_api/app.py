"""The Flask app: Prometheus-compatible read API, REST aggregation endpoints, /metrics about itself."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from werkzeug.exceptions import HTTPException

from exporters.common.config import ConfigError
from exporters.common.webconfig import WebConfig
from metrics_api import aggregate, formats
from metrics_api.audit import AuditLog
from metrics_api.auth import Authenticator, AuthError, ForbiddenError, Principal
from metrics_api.config import Config, load_config
from metrics_api.params import BadRequest, format_seconds, label_name, parse_duration, parse_int, parse_time
from metrics_api.promql import (
    Policy,
    QueryError,
    ScopeError,
    default_selector,
    quote,
    regex_escape,
    scope_query,
    scope_selector,
    tenant_matcher,
)
from metrics_api.protect import RateLimiter, ResultCache
from metrics_api.upstream import Prometheus, UpstreamError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered in Prometheus' error shape."""

    def __init__(
        self, status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message
        self.headers = dict(headers or {})


@dataclass
class Metrics:
    """The service's own metrics, in a registry of its own."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=False))

    def __post_init__(self) -> None:
        p, r = "novacron_metrics_api", self.registry
        self.requests = Counter(
            f"{p}_requests", "API requests by endpoint and HTTP status.", ["endpoint", "code"], registry=r
        )
        self.duration = Histogram(
            f"{p}_request_duration_seconds",
            "Time to answer an API request.",
            ["endpoint"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.upstream = Histogram(
            f"{p}_upstream_duration_seconds",
            "Time Prometheus took to answer.",
            ["endpoint"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.upstream_errors = Counter(
            f"{p}_upstream_errors", "Failed Prometheus requests by error type.", ["error_type"], registry=r
        )
        self.cache = Counter(
            f"{p}_cache_requests", "Result cache lookups by result (hit or miss).", ["result"], registry=r
        )
        self.cache_entries = Gauge(f"{p}_cache_entries", "Entries in the result cache.", registry=r)
        self.denied = Counter(f"{p}_denied_requests", "Refused requests by reason.", ["reason"], registry=r)


@dataclass
class Outcome:
    """What one request did, for the audit log."""

    principal: Principal | None = None
    query: Any = None
    scoped: Any = None
    cache: str | None = None
    series: int | None = None


class Service:
    """Holds config, clients and state; the routes in `create_app` call into it."""

    def __init__(
        self,
        config: Config,
        audit: AuditLog,
        metrics: Metrics | None = None,
        authenticator: Authenticator | None = None,
        config_path: str | None = None,
    ) -> None:
        self.config_path = config_path
        self._install(config, authenticator or Authenticator(config))
        self.audit = audit
        self.metrics = metrics or Metrics()

    def _install(self, config: Config, auth: Authenticator) -> None:
        prometheus = Prometheus(
            config.prometheus_url,
            config.limits.query_timeout_seconds,
            config.prometheus_bearer_token,
            config.prometheus_ca_file,
        )
        # Requests read these attributes once each; a request in flight during a reload may mix old and new
        # limits, never old and new scopes (the scope comes from the principal and policy it already holds).
        self.config, self.limits, self.auth, self.prometheus = config, config.limits, auth, prometheus
        self.cache = ResultCache(config.cache.ttl_seconds, config.cache.max_entries)
        self._vm_ids = ResultCache(config.tenancy_refresh_seconds, 4096)
        self.rate = RateLimiter(config.rate_limit.requests_per_second, config.rate_limit.burst)

    def reload_from_file(self) -> Config:
        """Re-read the config file (SIGHUP or POST /-/reload); on ConfigError nothing changes.

        Tokens, roles, tenancy, limits, cache, rate limits and the upstream change; caches start empty. The
        audit file stays as started (changing it needs a restart).
        """
        if not self.config_path:
            raise ConfigError("config.file", "the service was started without a config file")
        config = load_config(self.config_path)
        self._install(config, Authenticator(config))
        log.info("configuration reloaded from %s (%d tokens)", self.config_path, len(config.tokens))
        return config

    # -- who, and what they may see -------------------------------------------------------------------------

    def principal(self) -> Principal:
        try:
            principal = self.auth.authenticate(request.headers.get("Authorization"))
        except AuthError as exc:
            self.metrics.denied.labels("unauthenticated").inc()
            raise ApiError(
                401, "unauthorized", str(exc), {"WWW-Authenticate": 'Bearer realm="novacron"'}
            ) from None
        except ForbiddenError as exc:
            self.metrics.denied.labels("forbidden").inc()
            raise ApiError(403, "forbidden", str(exc)) from None
        except jwt.PyJWKClientConnectionError:
            raise ApiError(503, "unavailable", "cannot fetch the identity provider's keys") from None
        g.outcome.principal = principal
        own = principal.rate_limit
        wait = self.rate.acquire(
            principal.name, own.requests_per_second if own else None, own.burst if own else None
        )
        if wait > 0:
            self.metrics.denied.labels("rate_limited").inc()
            raise ApiError(
                429,
                "rate_limited",
                f"rate limit exceeded for {principal.name}",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return principal

    def policy(self, principal: Principal, tenant_scoped: bool = True) -> Policy:
        denied = tuple(rule.pattern for rule in self.config.sensitive if principal.role not in rule.roles)
        enforced: tuple[tuple[str, str, str], ...] = ()
        if tenant_scoped and not principal.all_tenants:
            if self.config.tenancy_mode == "vm_id":
                enforced = (self.vm_id_matcher(principal),)
            else:
                enforced = (tenant_matcher(self.config.tenant_label, principal.tenants),)
        return Policy(enforced=enforced, denied_names=denied, max_range_seconds=self.limits.max_range_seconds)

    def vm_id_matcher(self, principal: Principal) -> tuple[str, str, str]:
        """`vm_id=~"..."` listing the VMs novacron_vm_info gives the caller's tenants (tenancy.mode vm_id).

        The list covers every VM seen within limits.max_range (plus lookback), so history stays readable; it
        is refreshed every tenancy.refresh. Series without a vm_id never match, so host series stay hidden.
        """
        key = ("vm_ids", *sorted(principal.tenants))
        ids = self._vm_ids.get(key)
        if ids is None:
            now = time.time()
            params = [
                ("match[]", aggregate.inventory_query({}, self.tenant_scope(principal))),
                ("start", f"{now - self.limits.max_range_seconds - 300:.3f}"),
                ("end", f"{now:.3f}"),
            ]
            values = self.prometheus.call("/api/v1/label/vm_id/values", params, method="GET")
            ids = tuple(sorted(v for v in values if v))
            self._vm_ids.put(key, ids)
        if not ids:
            # An empty alternation would match series *without* vm_id: refuse instead.
            raise ScopeError(
                "no VM of this token's tenants is known to Prometheus; nothing can be scoped to it"
            )
        return ("vm_id", "=~", "|".join(regex_escape(i) for i in ids))

    def tenant_scope(self, principal: Principal) -> str | None:
        """The matcher confining novacron_vm_info to the caller's tenants (None: sees all)."""
        if principal.all_tenants:
            return None
        label, op, value = tenant_matcher(self.config.tenant_label, principal.tenants)
        return f"{label}{op}{quote(value)}"

    # -- Prometheus, through the cache ----------------------------------------------------------------------

    def upstream(
        self, endpoint: str, path: str, params: Sequence[tuple[str, str]], method: str = "POST"
    ) -> Any:
        key = (path, method, tuple(params))
        cached = self.cache.get(key)
        if cached is not None:
            self.metrics.cache.labels("hit").inc()
            g.outcome.cache = "hit"
            return cached
        self.metrics.cache.labels("miss").inc()
        g.outcome.cache = "miss"
        started = time.perf_counter()
        try:
            data = self.prometheus.call(path, params, method)
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(exc.error_type).inc()
            raise
        finally:
            self.metrics.upstream.labels(endpoint).observe(time.perf_counter() - started)
        if _cacheable(data):
            self.cache.put(key, data)
        self.metrics.cache_entries.set(len(self.cache))
        return data

    def timeout_param(self) -> str:
        wanted = request.values.get("timeout")
        limit = self.limits.query_timeout_seconds
        seconds = min(parse_duration(wanted, "timeout"), limit) if wanted else limit
        return format_seconds(seconds)

    def check_result_size(self, data: Any) -> None:
        result = data.get("result") if isinstance(data, dict) else data
        if not isinstance(result, list):
            return
        g.outcome.series = len(result)
        if len(result) > self.limits.max_series:
            self.metrics.denied.labels("limit").inc()
            raise ApiError(
                422,
                "execution",
                f"result has {len(result)} series; the limit is {self.limits.max_series}"
                " (narrow the selectors or aggregate)",
            )
        if isinstance(data, dict) and data.get("resultType") == "matrix":
            samples = sum(len(item.get("values", [])) for item in result)
            if samples > self.limits.max_samples:
                self.metrics.denied.labels("limit").inc()
                raise ApiError(
                    422,
                    "execution",
                    f"result has {samples} samples; the limit is "
                    f"{self.limits.max_samples} (use a larger step or a shorter range)",
                )

    def time_range(self, required: bool) -> tuple[str, str] | None:
        start, end = request.values.get("start"), request.values.get("end")
        if not start and not end and not required:
            return None
        if not start or not end:
            raise BadRequest("start and end: both are required")
        s, e = parse_time(start, "start"), parse_time(end, "end")
        if e < s:
            raise BadRequest("end: must not be before start")
        if e - s > self.limits.max_range_seconds:
            raise BadRequest(
                f"end - start: {e - s:.0f}s exceeds the limit of {self.limits.max_range_seconds:.0f}s"
            )
        return start, end

    def step(self, start: str, end: str, default: float | None = None) -> str:
        raw = request.values.get("step")
        if not raw and default is None:
            raise BadRequest("step: required")
        seconds = parse_duration(raw, "step") if raw else float(default or 1)
        points = (parse_time(end, "end") - parse_time(start, "start")) / seconds + 1
        if points > self.limits.max_points_per_series:
            raise BadRequest(
                f"step: {points:.0f} points per series exceed the limit of "
                f"{self.limits.max_points_per_series}; use a larger step"
            )
        return raw or format_seconds(seconds)


CACHE_MAX_SAMPLES = 200_000


def _cacheable(data: Any) -> bool:
    """Cache entries are bounded in number; bound their size too, so 2,048 entries cannot exhaust memory."""
    result = data.get("result") if isinstance(data, dict) else data
    if not isinstance(result, list):
        return True
    samples = sum(len(item.get("values", ())) or 1 if isinstance(item, dict) else 1 for item in result)
    return samples <= CACHE_MAX_SAMPLES


def _param(name: str) -> str:
    value = request.values.get(name)
    if value is None or value == "":
        raise BadRequest(f"{name}: required")
    return value


def _format() -> str:
    """The negotiated output format (400 for an unknown `format=`)."""
    try:
        return formats.negotiate(request.values.get("format"), request.headers.get("Accept"))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _respond(kind: str, data: Any, extra: Mapping[str, Any] | None = None) -> Response:
    """Render `data` in the negotiated format; `kind` says what it is (query, series, values, records)."""
    fmt = _format()
    if fmt == "json":
        body = {"status": "success", "data": data, **(extra or {})}
        return Response(json.dumps(body, separators=(",", ":")), content_type=formats.CONTENT_TYPES["json"])
    if fmt == "csv":
        if kind == "query":
            text = formats.query_csv(data)
        elif kind == "series":
            text = formats.series_csv(data)
        elif kind == "values":
            text = formats.values_csv(data, "value")
        else:
            text = formats.records_csv(data)
        return Response(text, content_type=formats.CONTENT_TYPES["csv"])
    if kind != "query":
        raise formats.NotAcceptable(
            f"the exposition format needs samples; {request.path} has none (use json or csv)"
        )
    return Response(formats.query_exposition(data), content_type=formats.CONTENT_TYPES["exposition"])


def _error_body(
    status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    body = json.dumps({"status": "error", "errorType": error_type, "error": message})
    return Response(body, status=status, content_type="application/json", headers=dict(headers or {}))


_ERRORS: list[tuple[type[BaseException], int, str]] = [
    (BadRequest, 400, "bad_data"),
    (QueryError, 400, "bad_data"),
    (ScopeError, 403, "forbidden"),
    (formats.NotAcceptable, 406, "not_acceptable"),
]


def _metadata_limit() -> int:
    """Prometheus' `limit` of /api/v1/metadata: at most this many metrics, negative (the default) for all."""
    raw = request.values.get("limit", "-1")
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"limit: not an integer: {raw[:40]!r}") from None


def _scoped_matches(service: Service, policy: Policy) -> list[tuple[str, str]]:
    """match[] parameters, each scoped; the policy's default selector when none were given."""
    raw = request.values.getlist("match[]")
    g.outcome.query = raw
    if len(raw) > 20:
        raise BadRequest("match[]: at most 20 selectors")
    scoped = []
    for selector in raw:
        if len(selector) > service.limits.max_query_length:
            raise BadRequest("match[]: selector too long")
        scoped.append(scope_selector(selector, policy))
    if not scoped:
        default = default_selector(policy)
        if default:
            scoped = [default]
    g.outcome.scoped = scoped
    return [("match[]", s) for s in scoped]


def _filters(principal: Principal, labels: Sequence[str] = aggregate.INFO_LABELS) -> dict[str, str]:
    filters = {}
    for label in labels:
        value = request.values.get(label)
        if value is None or value == "":
            continue
        if len(value) > 256:
            raise BadRequest(f"{label}: longer than 256 characters")
        filters[label] = value
    tenant = filters.get("tenant")
    if tenant is not None and not principal.can_see_tenant(tenant):
        raise ScopeError(f"tenant {tenant!r} is not one of this token's tenants")
    return filters


def _page(items: list[Any], service: Service) -> tuple[list[Any], dict[str, Any]]:
    page = parse_int(request.values.get("page"), "page", 1, 1, 1_000_000)
    size = parse_int(
        request.values.get("page_size"),
        "page_size",
        min(100, service.limits.max_page_size),
        1,
        service.limits.max_page_size,
    )
    total = len(items)
    pages = max(1, math.ceil(total / size))
    chunk = items[(page - 1) * size : page * size]
    meta = {
        "page": page,
        "page_size": size,
        "total": total,
        "pages": pages,
        "next_page": page + 1 if page < pages else None,
    }
    return chunk, meta


def create_app(
    config: Config,
    audit: AuditLog | None = None,
    web_config: WebConfig | None = None,
    authenticator: Authenticator | None = None,
    telemetry_path: str = "/metrics",
    config_path: str | None = None,
) -> Flask:
    """Build the Flask app; `web_config.users` (bcrypt basic auth) guards the telemetry path only."""
    app = Flask("novacron-metrics-api")
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    service = Service(
        config, audit or AuditLog(config.audit_file), authenticator=authenticator, config_path=config_path
    )
    app.extensions["novacron_service"] = service
    web = web_config or WebConfig()
    m = service.metrics

    def route(rule: str, endpoint: str, methods: Sequence[str] = ("GET", "POST")) -> Callable[..., Any]:
        def wrap(fn: Callable[..., Response]) -> Callable[..., Response]:
            def view(**kwargs: Any) -> Response:
                g.endpoint = endpoint
                return fn(**kwargs)

            app.add_url_rule(rule, endpoint, view, methods=list(methods))
            return fn

        return wrap

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.outcome = Outcome()
        g.endpoint = "other"

    @app.after_request
    def _finish(response: Response) -> Response:
        endpoint = getattr(g, "endpoint", "other")
        if endpoint == "metrics":
            return response
        elapsed = time.perf_counter() - getattr(g, "started", time.perf_counter())
        m.requests.labels(endpoint, str(response.status_code)).inc()
        m.duration.labels(endpoint).observe(elapsed)
        outcome: Outcome = getattr(g, "outcome", Outcome())
        p = outcome.principal
        service.audit.write(
            principal=p.name if p else None,
            role=p.role if p else None,
            tenants=list(p.tenants) if p else None,
            method=request.method,
            path=request.path,
            endpoint=endpoint,
            query=outcome.query,
            scoped=outcome.scoped,
            status=response.status_code,
            cache=outcome.cache,
            series=outcome.series,
            duration_ms=round(elapsed * 1000, 2),
            remote=request.remote_addr,
        )
        return response

    @app.errorhandler(Exception)
    def _error(exc: Exception) -> Response:
        if isinstance(exc, ApiError):
            return _error_body(exc.status, exc.error_type, exc.message, exc.headers)
        if isinstance(exc, UpstreamError):
            return _error_body(exc.status, exc.error_type, exc.message)
        for cls, status, error_type in _ERRORS:
            if isinstance(exc, cls):
                if status == 403:
                    m.denied.labels("forbidden").inc()
                return _error_body(status, error_type, str(exc))
        if isinstance(exc, HTTPException):
            return _error_body(
                exc.code or 500,
                "bad_data" if (exc.code or 500) < 500 else "internal",
                exc.description or exc.name,
            )
        log.exception("unhandled error on %s", request.path)
        return _error_body(500, "internal", "internal error (see the metrics API log)")

    @route("/api/v1/query", "query")
    def query() -> Response:
        principal = service.principal()
        text = _param("query")
        g.outcome.query = text
        if len(text) > service.limits.max_query_length:
            raise BadRequest(f"query: longer than {service.limits.max_query_length} characters")
        scoped = scope_query(text, service.policy(principal))
        g.outcome.scoped = scoped
        params = [("query", scoped), ("timeout", service.timeout_param())]
        if request.values.get("time"):
            parse_time(request.values["time"], "time")
            params.append(("time", request.values["time"]))
        data = service.upstream("query", "/api/v1/query", params)
        service.check_result_size(data)
        return _respond("query", data)

    @route("/api/v1/query_range", "query_range")
    def query_range() -> Response:
        principal = service.principal()
        text = _param("query")
        g.outcome.query = text
        if len(text) > service.limits.max_query_length:
            raise BadRequest(f"query: longer than {service.limits.max_query_length} characters")
        rng = service.time_range(required=True)
        assert rng is not None
        step = service.step(*rng)
        scoped = scope_query(text, service.policy(principal))
        g.outcome.scoped = scoped
        params = [
            ("query", scoped),
            ("start", rng[0]),
            ("end", rng[1]),
            ("step", step),
            ("timeout", service.timeout_param()),
        ]
        data = service.upstream("query_range", "/api/v1/query_range", params)
        service.check_result_size(data)
        return _respond("query", data)

    @route("/api/v1/series", "series")
    def series() -> Response:
        principal = service.principal()
        if not request.values.getlist("match[]"):
            raise BadRequest("match[]: at least one series selector is required")
        params = _scoped_matches(service, service.policy(principal))
        rng = service.time_range(required=False)
        if rng:
            params += [("start", rng[0]), ("end", rng[1])]
        data = service.upstream("series", "/api/v1/series", params)
        service.check_result_size(data)
        return _respond("series", data)

    @route("/api/v1/labels", "labels")
    def labels() -> Response:
        principal = service.principal()
        params = _scoped_matches(service, service.policy(principal))
        rng = service.time_range(required=False)
        if rng:
            params += [("start", rng[0]), ("end", rng[1])]
        return _respond("values", service.upstream("labels", "/api/v1/labels", params))

    @route("/api/v1/label/<name>/values", "label_values", methods=("GET",))
    def label_values(name: str) -> Response:
        principal = service.principal()
        label_name(name, "label name")
        params = _scoped_matches(service, service.policy(principal))
        rng = service.time_range(required=False)
        if rng:
            params += [("start", rng[0]), ("end", rng[1])]
        data = service.upstream("label_values", f"/api/v1/label/{name}/values", params, method="GET")
        return _respond("values", data)

    @route("/api/v1/status/buildinfo", "buildinfo", methods=("GET",))
    def buildinfo() -> Response:
        service.principal()
        data = service.upstream("buildinfo", "/api/v1/status/buildinfo", [], method="GET")
        return Response(json.dumps({"status": "success", "data": data}), content_type="application/json")

    @route("/api/v1/metadata", "metadata", methods=("GET",))
    def metadata() -> Response:
        # Grafana's metric browser reads this; only names the caller may query (tenant and role) are shown.
        principal = service.principal()
        params = [("metric", request.values["metric"])] if request.values.get("metric") else []
        limit = _metadata_limit()
        visible = service.upstream(
            "label_values",
            "/api/v1/label/__name__/values",
            _scoped_matches(service, service.policy(principal)),
            method="GET",
        )
        data = service.upstream("metadata", "/api/v1/metadata", params, method="GET")
        allowed = set(visible or [])
        names = [n for n in sorted(data or {}) if n in allowed]
        shown = {n: data[n] for n in (names if limit < 0 else names[:limit])}
        return Response(json.dumps({"status": "success", "data": shown}), content_type="application/json")

    _add_rest_routes(route, service)

    @app.route(telemetry_path, endpoint="metrics")
    def telemetry() -> Response:
        g.endpoint = "metrics"
        if web.users:
            auth = request.authorization
            if auth is None or not web.check_basic_auth(auth.username, auth.password):
                return Response(
                    "Unauthorized\n", 401, {"WWW-Authenticate": 'Basic realm="novacron-metrics-api"'}
                )
        m.cache_entries.set(len(service.cache))
        return Response(generate_latest(m.registry), content_type=CONTENT_TYPE_LATEST)

    @app.route("/-/reload", endpoint="reload", methods=["POST"])
    def reload() -> Response:
        g.endpoint = "reload"
        principal = service.principal()
        g.outcome.query = "reload configuration"
        if principal.role != "admin":
            raise ApiError(403, "forbidden", "reloading the configuration needs the admin role")
        try:
            config = service.reload_from_file()
        except ConfigError as err:
            raise ApiError(400, "bad_data", f"configuration not reloaded: {err}") from None
        service.audit.write(event="config_reloaded", principal=principal.name, tokens=len(config.tokens))
        return Response(json.dumps({"status": "success"}), content_type="application/json")

    @app.route("/-/healthy", endpoint="healthy")
    def healthy() -> Response:
        g.endpoint = "healthy"
        return Response("OK\n", content_type="text/plain")

    return app


def _add_rest_routes(route: Callable[..., Any], service: Service) -> None:
    """The REST endpoints that answer common questions without PromQL."""
    window = service.config.rate_interval

    def name_check(principal: Principal, text: str) -> str:
        # Tenancy comes from the info join built here; the policy only enforces restricted names and limits.
        return scope_query(text, service.policy(principal, tenant_scoped=False))

    def at_time() -> list[tuple[str, str]]:
        value = request.values.get("time")
        if not value:
            return []
        parse_time(value, "time")
        return [("time", value)]

    @route("/api/v1/vms", "vms", methods=("GET",))
    def vms() -> Response:
        principal = service.principal()
        filters = _filters(principal)
        scope = service.tenant_scope(principal)
        info_q = name_check(principal, aggregate.inventory_query(filters, scope))
        state_q = name_check(principal, aggregate.state_query(filters, scope))
        g.outcome.query, g.outcome.scoped = dict(filters), [info_q, state_q]
        timeout = [("timeout", service.timeout_param())]
        info = service.upstream("vms", "/api/v1/query", [("query", info_q), *timeout, *at_time()])
        states = service.upstream("vms", "/api/v1/query", [("query", state_q), *timeout, *at_time()])
        state_by_id = {s["metric"].get("vm_id"): int(float(s["value"][1])) for s in states["result"]}
        records: dict[str, dict[str, Any]] = {}
        for item in info["result"]:
            labels = {k: v for k, v in item["metric"].items() if k not in ("__name__", "job", "instance")}
            vm_id = labels.get("vm_id", "")
            records[vm_id] = {**labels, "state": state_by_id.get(vm_id)}
        ordered = [records[k] for k in sorted(records)]
        g.outcome.series = len(ordered)
        page, meta = _page(ordered, service)
        if _format() == "json":
            return _respond("records", {"vms": page, **meta})
        return _respond("records", page)

    @route("/api/v1/vms/summary", "vm_summary_q", methods=("GET",))
    def vm_summary_by_param() -> Response:
        # For ids with slashes (Azure resource ids), which a path segment cannot carry.
        return vm_summary(_param("vm_id"))

    @route("/api/v1/vms/<path:vm_id>/summary", "vm_summary", methods=("GET",))
    def vm_summary(vm_id: str) -> Response:
        principal = service.principal()
        if len(vm_id) > 512:
            raise BadRequest("vm_id: longer than 512 characters")
        range_s = parse_duration(request.values.get("range", "1h"), "range")
        if range_s > service.limits.max_range_seconds:
            raise BadRequest(f"range: exceeds the limit of {service.limits.max_range_seconds:.0f}s")
        step = (
            format_seconds(parse_duration(request.values["step"], "step"))
            if request.values.get("step")
            else ""
        )
        scope = service.tenant_scope(principal)
        info_q = name_check(principal, aggregate.inventory_query({"vm_id": vm_id}, scope))
        g.outcome.query = {"vm_id": vm_id, "range": format_seconds(range_s)}
        timeout = [("timeout", service.timeout_param())]
        info = service.upstream("vm_summary", "/api/v1/query", [("query", info_q), *timeout, *at_time()])
        if not info["result"]:
            # The same answer whether the VM does not exist or belongs to another tenant: no existence leak.
            raise ApiError(404, "not_found", f"no VM {vm_id!r} visible to this token")
        summary_q = name_check(
            principal, aggregate.summary_query(vm_id, window, format_seconds(range_s), step)
        )
        g.outcome.scoped = [info_q, summary_q]
        data = service.upstream("vm_summary", "/api/v1/query", [("query", summary_q), *timeout, *at_time()])
        metrics: dict[str, dict[str, float]] = {}
        for item in data["result"]:
            labels = item["metric"]
            metrics.setdefault(labels["metric"], {})[labels["stat"]] = float(item["value"][1])
        vm = {
            k: v for k, v in info["result"][0]["metric"].items() if k not in ("__name__", "job", "instance")
        }
        body = {"vm": vm, "range": format_seconds(range_s), "metrics": metrics}
        if _format() == "json":
            return _respond("records", body)
        rows = [{"vm_id": vm_id, "metric": k, **v} for k, v in sorted(metrics.items())]
        return _respond("records", rows)

    def aggregate_view(endpoint: str, hosts: bool) -> Response:
        principal = service.principal()
        metric = request.values.get("metric", "cpu_utilisation_ratio")
        if metric not in aggregate.METRICS:
            raise BadRequest(f"metric: {metric!r} is not one of {', '.join(aggregate.METRICS)}")
        agg = request.values.get("agg", "avg")
        if agg not in aggregate.AGGS:
            raise BadRequest(f"agg: {agg!r} is not one of {', '.join(aggregate.AGGS)}")
        raw_group = request.values.get("group_by", "host" if hosts else "")
        group_by = [s.strip() for s in raw_group.split(",") if s.strip()]
        for label in group_by:
            if label not in aggregate.GROUP_LABELS:
                raise BadRequest(f"group_by: {label!r} is not one of {', '.join(aggregate.GROUP_LABELS)}")
        if hosts and "host" not in group_by:
            group_by.insert(0, "host")
        filters = _filters(principal)
        extra = ['host!=""'] if hosts else []
        text = aggregate.aggregate_query(
            metric, agg, group_by, filters, service.tenant_scope(principal), window, extra
        )
        scoped = name_check(principal, text)
        g.outcome.query = {"metric": metric, "agg": agg, "group_by": group_by, **filters}
        g.outcome.scoped = scoped
        rng = service.time_range(required=False)
        params = [("query", scoped), ("timeout", service.timeout_param())]
        if rng:
            span = parse_time(rng[1], "end") - parse_time(rng[0], "start")
            step = service.step(*rng, default=max(1.0, span / 250))
            data = service.upstream(
                endpoint, "/api/v1/query_range", [*params, ("start", rng[0]), ("end", rng[1]), ("step", step)]
            )
        else:
            data = service.upstream(endpoint, "/api/v1/query", [*params, *at_time()])
        service.check_result_size(data)
        ordered = sorted(data["result"], key=lambda item: sorted(item["metric"].items()))
        page, meta = _page(ordered, service)
        return _respond(
            "query",
            {"resultType": data["resultType"], "result": page},
            extra=meta if _format() == "json" else None,
        )

    @route("/api/v1/aggregates/fleet", "fleet", methods=("GET",))
    def fleet() -> Response:
        return aggregate_view("fleet", hosts=False)

    @route("/api/v1/aggregates/hosts", "hosts", methods=("GET",))
    def hosts() -> Response:
        return aggregate_view("hosts", hosts=True)
