"""Run a template's PromQL against Prometheus and hold the results (tables, series, stats) for rendering."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from analytics_sidecar.config import PrometheusSettings
from analytics_sidecar.reports.config import Item, Template
from analytics_sidecar.source import query_retry

LEGEND_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class QueryError(RuntimeError):
    """Prometheus refused a query or could not be reached (the message is safe to show)."""


@dataclass
class Series:
    name: str
    labels: dict[str, str]
    points: list[tuple[float, float]]


@dataclass
class ItemResult:
    """A rendered item: `rows` for tables and stats (label columns + value), `series` for charts."""

    item: Item
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)


@dataclass
class SectionResult:
    title: str
    text: str
    items: list[ItemResult]


@dataclass
class ReportData:
    title: str
    description: str
    start: float
    end: float
    sections: list[SectionResult]


class PrometheusClient:
    """The two HTTP API calls a report needs: instant query and range query."""

    def __init__(self, config: PrometheusSettings) -> None:
        self.config = config
        self.session = requests.Session()
        retrying = HTTPAdapter(max_retries=query_retry(config.retries))
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, retrying)
        if config.bearer_token:
            self.session.headers["Authorization"] = f"Bearer {config.bearer_token}"
        if config.username:
            self.session.auth = (config.username, config.password or "")

    def _call(self, path: str, params: dict[str, Any]) -> Any:
        try:
            response = self.session.post(
                f"{self.config.url}{path}",
                data=params,
                timeout=self.config.timeout,
                # Per request: a session's `verify` loses to REQUESTS_CA_BUNDLE from the environment.
                verify=not self.config.tls_insecure_skip_verify,
            )
        except requests.RequestException as exc:
            raise QueryError(f"Prometheus unreachable at {self.config.url}: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            raise QueryError(f"Prometheus answered HTTP {response.status_code} without JSON") from None
        if body.get("status") != "success":
            raise QueryError(
                f"query {params.get('query')!r} failed: {body.get('error', response.status_code)}"
            )
        return body["data"]

    def instant(self, query: str, at: float) -> list[dict[str, Any]]:
        data = self._call("/api/v1/query", {"query": query, "time": at})
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def range(self, query: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "/api/v1/query_range", {"query": query, "start": start, "end": end, "step": step}
        )["result"]
        return result


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana-style `{{label}}` legends; without a template, the label set."""
    if template:
        return LEGEND_RE.sub(lambda m: labels.get(m.group(1), ""), template)
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{labels.get('__name__', '')}{{{inner}}}"


def _table(client: PrometheusClient, item: Item, at: float) -> ItemResult:
    result = client.instant(item.query, at)
    labels = list(item.columns) or sorted({k for r in result for k in r["metric"] if k != "__name__"})
    rows = [[r["metric"].get(name, "") for name in labels] + [float(r["value"][1])] for r in result]
    rows.sort(key=lambda row: -row[-1] if row[-1] == row[-1] else 0.0)  # largest first; NaN last-ish
    return ItemResult(item, [*labels, "value"], rows[: item.limit])


def _chart(client: PrometheusClient, item: Item, start: float, end: float, step: float) -> ItemResult:
    result = client.range(item.query, start, end, step)[: item.limit]
    series = [
        Series(legend(item.legend, r["metric"]), r["metric"], [(float(t), float(v)) for t, v in r["values"]])
        for r in result
    ]
    return ItemResult(item, series=series)


def collect(client: PrometheusClient, template: Template, end: float) -> ReportData:
    """Evaluate every item of the template at `end` (tables, stats) or over the template range (charts)."""
    start = end - template.range_seconds
    sections = []
    for section in template.sections:
        items = []
        for item in section.items:
            if item.kind == "chart":
                items.append(_chart(client, item, start, end, template.step_seconds))
            else:
                items.append(_table(client, item, end))
        sections.append(SectionResult(section.title, section.text, items))
    return ReportData(template.title, template.description, start, end, sections)
