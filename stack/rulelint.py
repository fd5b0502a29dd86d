"""Prometheus rule linter after pint: labels, annotations, `for:` bounds, runbooks, counters, naming."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import promql_parser as pq
import yaml

SEVERITIES = ("critical", "warning", "info")
PRIORITIES = ("P1", "P2", "P3", "P4")
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook_url")
# level:metric:operations, as in the Prometheus recording-rule naming guide.
RECORD_NAME = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z0-9_]+$")
MAX_FOR = timedelta(hours=1)
MAX_FOR_CRITICAL = timedelta(minutes=15)  # a page that waits longer than this is not a page
MIN_RATE_RANGE = timedelta(minutes=1)  # shorter windows hold too few samples at common scrape intervals
COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
RATE_FUNCS = {"rate", "irate", "increase"}
# Functions that are meaningful on a raw counter; anything else on a counter should go through rate() first.
COUNTER_SAFE_FUNCS = RATE_FUNCS | {
    "resets",
    "absent",
    "absent_over_time",
    "present_over_time",
    "timestamp",
    "count_over_time",
    "last_over_time",
}
COUNTER_SAFE_AGGS = {"count", "group", "count_values"}
FORBIDDEN_FUNCS = {
    "holt_winters": "holt_winters is deprecated (and renamed in Prometheus 3); use a seasonal z-score",
    "double_exponential_smoothing": "experimental in Prometheus 3; use a seasonal z-score",
}


@dataclass(frozen=True)
class Problem:
    """One finding: where, which check, what is wrong."""

    path: str
    rule: str
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}: [{self.check}] {self.message}"


def _register_forbidden() -> None:
    """Teach the parser the forbidden functions so they are reported by name instead of failing to parse."""
    known = {"double_exponential_smoothing"}  # may already be built in
    for name in FORBIDDEN_FUNCS:
        if name in known:
            continue
        fn = pq.Function(
            name, [pq.ValueType.Matrix, pq.ValueType.Scalar, pq.ValueType.Scalar], pq.ValueType.Vector
        )
        # ValueError: already registered (by an earlier call) or built in.
        with contextlib.suppress(ValueError):
            pq.register_extra_functions([fn])


_register_forbidden()


def parse_duration(text: str) -> timedelta:
    """A Prometheus duration ("5m", "1h30m") as a timedelta; ValueError if malformed."""
    return pq.parse_duration(str(text))


def _children(node: Any) -> Iterator[Any]:
    """Direct sub-expressions of a parsed PromQL node."""
    if isinstance(node, pq.BinaryExpr):
        yield node.lhs
        yield node.rhs
    elif isinstance(node, pq.AggregateExpr):
        yield node.expr
        if node.param is not None:
            yield node.param
    elif isinstance(node, pq.Call):
        yield from node.args
    elif isinstance(node, pq.ParenExpr | pq.UnaryExpr | pq.SubqueryExpr):
        yield node.expr
    elif isinstance(node, pq.MatrixSelector):
        yield node.vector_selector


def _walk(node: Any, parents: tuple[Any, ...] = ()) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """Every node with its chain of ancestors (nearest last)."""
    yield node, parents
    for child in _children(node):
        yield from _walk(child, (*parents, node))


def _is_counter(name: str | None) -> bool:
    return bool(name) and str(name).endswith(COUNTER_SUFFIXES)


def _selector_name(node: Any) -> str | None:
    if isinstance(node, pq.MatrixSelector):
        node = node.vector_selector
    return node.name if isinstance(node, pq.VectorSelector) else None


def check_expr(expr: str) -> list[tuple[str, str]]:
    """PromQL checks on one expression: (check, message) pairs."""
    try:
        tree = pq.parse(expr)
    except (ValueError, TypeError) as exc:
        return [("promql/syntax", f"does not parse: {exc}")]
    problems: list[tuple[str, str]] = []
    for node, parents in _walk(tree):
        if isinstance(node, pq.Call):
            problems.extend(_check_call(node))
        if isinstance(node, pq.VectorSelector) and node.name and _is_counter(node.name):
            problem = _check_counter_use(str(node.name), parents)
            if problem:
                problems.append(problem)
    return problems


def _check_call(call: Any) -> list[tuple[str, str]]:
    name = call.func.name
    if name in FORBIDDEN_FUNCS:
        return [("promql/forbidden", FORBIDDEN_FUNCS[name])]
    if name not in RATE_FUNCS or not call.args:
        return []
    arg = call.args[0]
    if isinstance(arg, pq.SubqueryExpr):
        inner = _selector_name(arg.expr)
        if inner and not _is_counter(inner):
            return [
                ("promql/counter", f"{name}() over {inner}, which is not a counter (name ends in _total)")
            ]
        return []
    metric = _selector_name(arg)
    out: list[tuple[str, str]] = []
    if metric and not _is_counter(metric):
        out.append(
            ("promql/counter", f"{name}() over {metric}, which is not a counter (name ends in _total)")
        )
    if isinstance(arg, pq.MatrixSelector) and arg.range is not None and arg.range < MIN_RATE_RANGE:
        out.append(("promql/range", f"{name}() window {pq.display_duration(arg.range)} is shorter than 1m"))
    return out


def _check_counter_use(metric: str, parents: tuple[Any, ...]) -> tuple[str, str] | None:
    """A counter's raw value is meaningless (it resets); it must sit under rate()/increase() or similar."""
    for parent in reversed(parents):
        if isinstance(parent, pq.Call):
            if parent.func.name in COUNTER_SAFE_FUNCS:
                return None
            break
        if (
            isinstance(parent, pq.AggregateExpr)
            and str(parent.op).lower().split(".")[-1] in COUNTER_SAFE_AGGS
        ):
            return None
    return ("promql/counter", f"counter {metric} is used without rate()/increase()")


def _check_alert(rule: dict[str, Any], runbooks: Path | None) -> list[tuple[str, str]]:
    """Label, annotation and `for:` checks of one alerting rule."""
    name = str(rule.get("alert", ""))
    labels = rule.get("labels") or {}
    annotations = rule.get("annotations") or {}
    out: list[tuple[str, str]] = []
    if labels.get("severity") not in SEVERITIES:
        out.append(("alerts/labels", f"label severity must be one of {', '.join(SEVERITIES)}"))
    if labels.get("priority") not in PRIORITIES:
        out.append(("alerts/labels", f"label priority must be one of {', '.join(PRIORITIES)}"))
    if not (labels.get("type") or labels.get("team")):
        out.append(("alerts/labels", "label type (or team) is required for routing"))
    for key, value in labels.items():
        if key in ("severity", "priority", "type", "team") and "{{" in str(value):
            out.append(("alerts/labels", f"routing label {key} must be static, not templated"))
    for key in REQUIRED_ANNOTATIONS:
        if not str(annotations.get(key, "")).strip():
            out.append(("alerts/annotations", f"annotation {key} is required"))
    if annotations.get("description") and "{{" not in str(annotations["description"]):
        out.append(
            ("alerts/annotations", "description should show the values ({{ $value }} or {{ $labels.x }})")
        )
    out.extend(_check_runbook(name, str(annotations.get("runbook_url", "")), runbooks))
    out.extend(_check_for(rule, labels.get("severity")))
    return out


def _check_runbook(name: str, url: str, runbooks: Path | None) -> list[tuple[str, str]]:
    if not url:
        return []
    if not re.match(r"^https?://", url):
        return [("alerts/runbook", f"runbook_url {url!r} is not an absolute http(s) URL")]
    if not url.endswith(f"/{name}.md"):
        return [("alerts/runbook", f"runbook_url must point to docs/runbooks/{name}.md")]
    if runbooks is not None and not (runbooks / f"{name}.md").is_file():
        return [("alerts/runbook", f"runbook {runbooks / (name + '.md')} does not exist")]
    return []


def _check_for(rule: dict[str, Any], severity: Any) -> list[tuple[str, str]]:
    raw = rule.get("for")
    if raw is None:
        # Only an always-firing heartbeat needs no pending period.
        if str(rule.get("expr", "")).strip() == "vector(1)":
            return []
        return [("alerts/for", "for: is required (a bounded pending period avoids flapping pages)")]
    try:
        hold = parse_duration(str(raw))
    except ValueError:
        return [("alerts/for", f"for: {raw!r} is not a duration")]
    if hold > MAX_FOR:
        return [("alerts/for", f"for: {raw} is longer than {pq.display_duration(MAX_FOR)}")]
    if severity == "critical" and hold > MAX_FOR_CRITICAL:
        return [
            ("alerts/for", f"critical alert waits {raw}, more than {pq.display_duration(MAX_FOR_CRITICAL)}")
        ]
    return []


def lint_rules_data(data: Any, path: str, runbooks: Path | None) -> list[Problem]:
    """Lint a parsed rule file (the mapping with `groups`)."""
    problems: list[Problem] = []
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        return [Problem(path, "-", "file/structure", "a rule file is a mapping with a list under `groups`")]
    seen_alerts: set[tuple[str, str]] = set()  # (alert, its static labels)
    for group in data["groups"]:
        if not isinstance(group, dict) or not isinstance(group.get("rules"), list):
            problems.append(
                Problem(path, "-", "file/structure", "every group is a mapping with a list of rules")
            )
            continue
        gname = str(group.get("name", "?"))
        for rule in group["rules"]:
            if not isinstance(rule, dict):
                problems.append(Problem(path, gname, "rule/structure", "a rule is a mapping"))
                continue
            label = f"{gname}/{rule.get('alert') or rule.get('record') or '?'}"
            found = _lint_rule(rule, runbooks, seen_alerts)
            problems.extend(Problem(path, label, check, msg) for check, msg in found)
    return problems


def _lint_rule(
    rule: dict[str, Any], runbooks: Path | None, seen: set[tuple[str, str]]
) -> list[tuple[str, str]]:
    found = check_expr(str(rule.get("expr", "")))
    if "alert" in rule:
        labels = sorted((str(k), str(v)) for k, v in (rule.get("labels") or {}).items())
        key = (str(rule["alert"]), repr(labels))
        if key in seen:
            found.append(("alerts/duplicate", f"alert {key[0]} is defined twice with the same labels"))
        seen.add(key)
        found.extend(_check_alert(rule, runbooks))
    elif "record" in rule:
        if not RECORD_NAME.match(str(rule["record"])):
            found.append(("record/name", f"{rule['record']} does not follow level:metric:operations"))
    else:
        found.append(("rule/structure", "a rule needs `alert` or `record`"))
    return found


def lint_files(paths: Iterable[Path], runbooks: Path | None = None) -> list[Problem]:
    """Lint rule files; also reports recording rules defined in more than one file."""
    problems: list[Problem] = []
    records: dict[str, str] = {}
    for path in paths:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            problems.append(Problem(str(path), "-", "file/read", str(exc).splitlines()[0]))
            continue
        problems.extend(lint_rules_data(data, str(path), runbooks))
        for rule in rules_in(data):
            name = rule.get("record")
            if name and name in records and records[name] != str(path):
                problems.append(
                    Problem(str(path), name, "record/duplicate", f"also recorded in {records[name]}")
                )
            elif name:
                records[name] = str(path)
    return problems


def rules_in(data: Any) -> Iterator[dict[str, Any]]:
    """Every well-formed rule mapping of a parsed rule file (malformed parts are reported elsewhere)."""
    groups = data.get("groups") if isinstance(data, dict) else None
    for group in groups if isinstance(groups, list) else []:
        rules = group.get("rules") if isinstance(group, dict) else None
        yield from (r for r in (rules if isinstance(rules, list) else []) if isinstance(r, dict))
