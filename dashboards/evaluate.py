"""Run every query of a dashboard against a Prometheus, with its variables substituted as Grafana would.

Used by `novacron-dashboards check` (does each panel return data here?), by the tests, and by the benchmark
(how long does a dashboard's default view take to query?).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from dashboards.lint import panels

RELATIVE_RE = re.compile(r"^now-(\d+)([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
QUERY_RESULT_RE = re.compile(r"^query_result\((.*)\)$", re.S)
LABEL_VALUES_RE = re.compile(r"^label_values\((?:(.*),\s*)?([A-Za-z_][A-Za-z0-9_]*)\)$", re.S)
MAX_DATA_POINTS = 800  # roughly a half-screen panel's width in pixels, as Grafana sizes the step


class PrometheusError(RuntimeError):
    """A query failed (bad PromQL, timeout, unreachable); the message is safe to print."""


@dataclass(frozen=True)
class TargetResult:
    panel: str
    ref_id: str
    expr: str
    instant: bool
    series: int
    points: int
    seconds: float
    error: str = ""

    @property
    def has_data(self) -> bool:
        return not self.error and self.series > 0 and self.points > 0


class Prometheus:
    """Minimal HTTP API client (POST, like Grafana's provisioned data source)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def call(self, path: str, params: Mapping[str, Any]) -> Any:
        try:
            if path.startswith("label/"):  # label values is GET-only in the HTTP API
                response = self.session.get(
                    f"{self.url}/api/v1/{path}", params=dict(params), timeout=self.timeout
                )
            else:
                response = self.session.post(
                    f"{self.url}/api/v1/{path}", data=dict(params), timeout=self.timeout
                )
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise PrometheusError(f"{path}: {type(exc).__name__}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body.get('error', response.status_code)}")
        return body["data"]


def time_range(model: Mapping[str, Any], end: float) -> tuple[float, float]:
    """The dashboard's default time range (`now-6h` to `now`) as Unix seconds."""
    match = RELATIVE_RE.match(str(model.get("time", {}).get("from", "now-6h")))
    span = int(match.group(1)) * UNITS[match.group(2)] if match else 6 * 3600
    return end - span, end


def builtins(span: float, step: float, scrape_interval: float) -> dict[str, str]:
    """$__interval, $__rate_interval (max(interval + scrape, 4 x scrape)) and $__range, as in Grafana."""
    rate = max(step + scrape_interval, 4 * scrape_interval)
    return {
        "__interval": f"{int(step)}s",
        "__rate_interval": f"{int(rate)}s",
        "__range": f"{int(span)}s",
        "__range_s": str(int(span)),
    }


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace `${name}`, `${name:format}` and `$name` (longest names first, so $vm does not eat $vm_id)."""
    for name in sorted(values, key=len, reverse=True):
        # A plain string replacement would treat backslashes in values as escapes; a function does not.
        value = values[name]

        def repl(_match: re.Match[str], value: str = value) -> str:
            return value

        expr = re.sub(r"\$\{" + re.escape(name) + r"(?::[a-z]+)?\}", repl, expr)
        expr = re.sub(r"\$" + re.escape(name) + r"(?![A-Za-z0-9_])", repl, expr)
    return expr


def variable_values(
    prom: Prometheus, model: Mapping[str, Any], overrides: Mapping[str, str], start: float, end: float
) -> dict[str, str]:
    """Each variable's value: an override, 'All' (allValue) for multi-value ones, else the first option."""
    values: dict[str, str] = {}
    for var in model.get("templating", {}).get("list", []):
        name, kind = var.get("name"), var.get("type")
        if name in overrides:
            values[name] = overrides[name]
        elif kind == "constant":
            values[name] = str(var.get("query", ""))
        elif kind == "query" and var.get("includeAll"):
            values[name] = str(var.get("allValue") or ".*")
        elif kind == "query":
            options = variable_options(
                prom, substitute(str(var.get("query", "")), values), var.get("regex", ""), start, end
            )
            if not options:
                raise PrometheusError(f"variable ${name} has no options")
            values[name] = options[0]
    return values


def variable_options(prom: Prometheus, query: str, regex: str, start: float, end: float) -> list[str]:
    """Evaluate a Prometheus variable query (label_values / query_result) like Grafana's data source does."""
    match = LABEL_VALUES_RE.match(query.strip())
    if match:
        params: dict[str, Any] = {"start": start, "end": end}
        if match.group(1):
            params["match[]"] = match.group(1)
        return sorted(v for v in prom.call(f"label/{match.group(2)}/values", params) if v)
    match = QUERY_RESULT_RE.match(query.strip())
    if not match:
        raise PrometheusError(f"unsupported variable query {query!r}")
    rendered = []
    for sample in prom.call("query", {"query": match.group(1), "time": end})["result"]:
        metric = dict(sample["metric"])
        name = metric.pop("__name__", "")
        labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
        rendered.append(f"{name}{{{labels}}} {sample['value'][1]} {sample['value'][0]}")
    if not regex:
        return rendered
    pattern = re.compile(_js_regex(regex))
    return [
        m.group("value") if "value" in pattern.groupindex else m.group(0)
        for m in map(pattern.search, rendered)
        if m
    ]


def _js_regex(regex: str) -> str:
    """Grafana's `/pattern/flags` to Python (named groups `(?<name>` become `(?P<name>`)."""
    body = regex[1 : regex.rindex("/")] if regex.startswith("/") else regex
    return body.replace("(?<", "(?P<")


def queries(model: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(panel, target) for every panel target, and the dashboard's annotation queries (as pseudo-panels)."""
    for panel in panels(dict(model)):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel, target
    for annotation in model.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            pseudo = {"title": f"annotation {annotation.get('name')}"}
            yield pseudo, {"expr": annotation["expr"], "refId": "annotation"}


def parse_interval(text: str) -> float:
    """Grafana's min interval (`30s`, `5m`, `1h`); empty or `$__...` means none (0)."""
    match = re.match(r"^>?(\d+)([smhdw])$", str(text or "").strip())
    return int(match.group(1)) * UNITS[match.group(2)] if match else 0.0


def panel_step(
    panel: Mapping[str, Any], target: Mapping[str, Any], span: float, scrape_interval: float
) -> tuple[float, float]:
    """(step, the interval $__rate_interval counts as the scrape) as Grafana derives them for one query.

    The lower bound is the query's min step, else the panel's min interval, else the data source's scrape
    interval; the points are the panel's maxDataPoints (else ~ a half-screen panel's width).
    """
    floor = parse_interval(target.get("interval", "")) or parse_interval(panel.get("interval", ""))
    points = panel.get("maxDataPoints") or MAX_DATA_POINTS
    lower = floor or scrape_interval
    return max(lower, math.ceil(span / points)), lower


def run_target(
    prom: Prometheus,
    panel: str,
    target: Mapping[str, Any],
    values: Mapping[str, str],
    start: float,
    end: float,
    step: float,
) -> TargetResult:
    expr = substitute(str(target["expr"]), values)
    instant = bool(target.get("instant")) and not target.get("range")
    began = time.perf_counter()
    try:
        if instant:
            data = prom.call("query", {"query": expr, "time": end})
        else:
            data = prom.call("query_range", {"query": expr, "start": start, "end": end, "step": step})
    except PrometheusError as exc:
        return TargetResult(
            panel, str(target.get("refId")), expr, instant, 0, 0, time.perf_counter() - began, str(exc)
        )
    seconds = time.perf_counter() - began
    result = data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]
    points = sum(len(r.get("values", [])) or 1 for r in result) if data["resultType"] != "scalar" else 1
    return TargetResult(panel, str(target.get("refId")), expr, instant, len(result), points, seconds)


def run_dashboard(
    prom: Prometheus,
    model: Mapping[str, Any],
    overrides: Mapping[str, str] | None = None,
    end: float | None = None,
    scrape_interval: float = 15.0,
) -> list[TargetResult]:
    """Every query of the dashboard's default view, run one after another (as a cold browser tab would)."""
    end = time.time() if end is None else end
    start, end = time_range(model, end)
    span = end - start
    values = variable_values(prom, model, overrides or {}, start, end)
    values.setdefault("datasource", "prometheus")
    results = []
    for panel, target in queries(model):
        step, lower = panel_step(panel, target, span, scrape_interval)
        # Keep "now" an evaluation point, so the newest data always shows (as after a dashboard refresh).
        first = end - step * math.floor(span / step)
        scoped = {**values, **builtins(span, step, lower)}
        results.append(run_target(prom, str(panel.get("title", "")), target, scoped, first, end, step))
    return results
