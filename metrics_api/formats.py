"""Output formats: Prometheus JSON, CSV and the text exposition format, chosen by `format=` or `Accept`.

CSV columns are `__name__`, then every label name in sorted order, then `timestamp` (unix seconds) and
`value`; a range result has one row per sample. The exposition format writes
`name{labels} value timestamp_ms` with `# TYPE name untyped`; a series without a metric name (an
aggregation result) is written as `novacron_query_result`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FORMATS = ("json", "csv", "exposition")
CONTENT_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "exposition": "text/plain; version=0.0.4; charset=utf-8",
}
UNNAMED = "novacron_query_result"
_ALIASES = {
    "json": "json",
    "csv": "csv",
    "exposition": "exposition",
    "text": "exposition",
    "prometheus": "exposition",
}


class NotAcceptable(ValueError):
    """The requested format cannot represent this result (HTTP 406)."""


def negotiate(format_param: str | None, accept: str | None) -> str:
    """`format=` wins, else the first Accept type we can serve, else JSON; ValueError if unknown."""
    if format_param:
        chosen = _ALIASES.get(format_param.lower())
        if chosen is None:
            raise ValueError(f"format: {format_param!r} is not one of json, csv, exposition")
        return chosen
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        if media == "text/csv":
            return "csv"
        if media in ("text/plain", "application/openmetrics-text"):
            return "exposition"
        if media in ("application/json", "*/*"):
            return "json"
    return "json"


def _series_rows(
    result: Sequence[Mapping[str, Any]], result_type: str
) -> Iterable[tuple[dict[str, str], Any]]:
    for item in result:
        metric = item.get("metric", {})
        if result_type == "vector":
            yield metric, item["value"]
        else:
            for sample in item.get("values", []):
                yield metric, sample


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _label_columns(metrics: Iterable[Mapping[str, str]]) -> list[str]:
    return sorted({name for metric in metrics for name in metric if name != "__name__"})


def query_csv(data: Mapping[str, Any]) -> str:
    result_type, result = data["resultType"], data["result"]
    if result_type in ("scalar", "string"):
        return _csv_text(["timestamp", "value"], [result])
    columns = _label_columns(item.get("metric", {}) for item in result)
    rows = (
        [metric.get("__name__", ""), *(metric.get(c, "") for c in columns), ts, value]
        for metric, (ts, value) in _series_rows(result, result_type)
    )
    return _csv_text(["__name__", *columns, "timestamp", "value"], rows)


def series_csv(series: Sequence[Mapping[str, str]]) -> str:
    columns = _label_columns(series)
    return _csv_text(
        ["__name__", *columns], ([s.get("__name__", ""), *(s.get(c, "") for c in columns)] for s in series)
    )


def values_csv(values: Sequence[str], column: str) -> str:
    return _csv_text([column], ([v] for v in values))


def records_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """Flat records (REST endpoints): the union of keys as columns, nested values as JSON."""
    columns: list[str] = []
    for record in records:
        columns.extend(k for k in record if k not in columns)
    return _csv_text(columns, ([_cell(r.get(c)) for c in columns] for r in records))


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else value


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample_line(name: str, metric: Mapping[str, str], ts: float, value: str) -> str:
    labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(metric.items()) if k != "__name__")
    body = f"{name}{{{labels}}}" if labels else name
    return f"{body} {value} {round(float(ts) * 1000)}"


def query_exposition(data: Mapping[str, Any]) -> str:
    """Vector and matrix results as exposition text, grouped by metric name."""
    result_type, result = data["resultType"], data["result"]
    if result_type == "scalar":
        ts, value = result
        return f"# TYPE {UNNAMED} untyped\n{UNNAMED} {value} {round(float(ts) * 1000)}\n"
    if result_type not in ("vector", "matrix"):
        raise NotAcceptable(f"a {result_type} result has no exposition form; use format=json or csv")
    families: dict[str, list[str]] = {}
    for metric, (ts, value) in _series_rows(result, result_type):
        name = metric.get("__name__") or UNNAMED
        families.setdefault(name, []).append(_sample_line(name, metric, ts, value))
    lines: list[str] = []
    for name in sorted(families):
        lines.append(f"# TYPE {name} untyped")
        lines.extend(families[name])
    return "\n".join(lines) + ("\n" if lines else "")
