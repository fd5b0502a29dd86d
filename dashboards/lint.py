"""Dashboard linter: data source variable used, stable unique uids, complete panels, no overlap."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

UID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}\b")
VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}|([A-Za-z_][A-Za-z0-9_]*))")
GRAFANA_BUILTINS = {
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__data",
    "__url_time_range",
    "__all",
    "__field",
    "__series",
    "__value",
    "__name",
    "__dashboard",
    "__org",
    "__user",
    "timeFilter",
    "__auto",
}
DS_VAR = "${datasource}"


def panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def lint(model: dict[str, Any]) -> list[str]:
    """Problems in one dashboard, each as `uid: where: what`; an empty list means clean."""
    uid = str(model.get("uid", ""))
    problems = [f"{uid}: {p}" for p in _lint(model)]
    return problems


def _lint(model: dict[str, Any]) -> Iterator[str]:
    uid = model.get("uid", "")
    if not UID_RE.match(str(uid)):
        yield f"uid {uid!r} must be 1-40 lower-case letters, digits and dashes"
    for key in ("title", "description"):
        if not model.get(key):
            yield f"dashboard has no {key}"
    variables = {v.get("name") for v in model.get("templating", {}).get("list", [])}
    if "datasource" not in variables:
        yield "no `datasource` variable"
    if "10s" not in model.get("timepicker", {}).get("refresh_intervals", []):
        yield "refresh choices do not go down to 10s"
    yield from _lint_panels(model, variables)
    yield from _lint_overlap(list(panels(model)))
    for match in HEX_COLOUR.finditer(_colour_text(model)):
        yield f"fixed colour {match.group(0)} does not adapt to light and dark themes; use a named colour"


def _lint_panels(model: dict[str, Any], variables: set[Any]) -> Iterator[str]:
    seen_ids: set[Any] = set()
    for panel in panels(model):
        where = f"panel {panel.get('id')} {panel.get('title', '')!r}"
        if panel.get("id") in seen_ids:
            yield f"{where}: duplicate panel id"
        seen_ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        for key in ("title", "description"):
            if not panel.get(key):
                yield f"{where}: no {key}"
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            yield f"{where}: no unit"
        if panel.get("datasource", {}).get("uid") != DS_VAR:
            yield f"{where}: panel data source must be {DS_VAR}"
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("uid", DS_VAR) != DS_VAR:
                yield f"{where}: target {target.get('refId')} does not use {DS_VAR}"
            for name in used_variables(target.get("expr", "")):
                if name not in variables and name not in GRAFANA_BUILTINS:
                    yield f"{where}: target {target.get('refId')} uses undefined variable ${name}"
        if not panel.get("targets"):
            yield f"{where}: no queries"


def used_variables(text: str) -> set[str]:
    return {a or b for a, b in VAR_RE.findall(text)}


def _lint_overlap(items: list[dict[str, Any]]) -> Iterator[str]:
    boxes = [(p.get("id"), p.get("gridPos", {})) for p in items]
    for pid, g in boxes:
        if not g:
            yield f"panel {pid}: no gridPos"
        elif g.get("x", 0) + g.get("w", 0) > 24:
            yield f"panel {pid}: wider than the 24-column grid"
    for i, (a_id, a) in enumerate(boxes):
        for b_id, b in boxes[i + 1 :]:
            if a and b and _intersects(a, b):
                yield f"panels {a_id} and {b_id} overlap"


def _intersects(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def _colour_text(model: dict[str, Any]) -> str:
    """Colour-bearing parts only (queries may legitimately contain `#` in regexes)."""
    import json

    parts = [p.get("fieldConfig", {}) for p in panels(model)] + [p.get("options", {}) for p in panels(model)]
    parts.append(model.get("annotations", {}))
    return json.dumps(parts)


def lint_all(models: Iterable[dict[str, Any]]) -> list[str]:
    """Per-dashboard problems plus uids shared by several dashboards."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for model in models:
        problems.extend(lint(model))
        seen[model.get("uid", "")] = seen.get(model.get("uid", ""), 0) + 1
    problems.extend(f"{uid}: uid used by {n} dashboards" for uid, n in seen.items() if n > 1)
    return problems
