"""Validate dashboards against Grafana's JSON schemas (grafana-foundation-sdk): dashboard, panels, queries."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from dashboards.lint import panels

DEFAULT_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "schemas" / "grafana"


def schema_dir() -> Path:
    return Path(os.environ.get("NOVACRON_GRAFANA_SCHEMAS", str(DEFAULT_DIR)))


@cache
def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((schema_dir() / f"{name}.jsonschema.json").read_text())
    return data


def _validator(name: str, definition: str | None) -> jsonschema.Draft7Validator:
    schema = _load(name)
    if definition:
        schema = {"$ref": f"#/definitions/{definition}", "definitions": schema["definitions"]}
    return jsonschema.Draft7Validator(schema)


def _errors(validator: jsonschema.Draft7Validator, data: Any, where: str) -> list[str]:
    return [
        f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)
    ]


def validate(model: dict[str, Any]) -> list[str]:
    """Schema errors of one dashboard: the dashboard model, each panel's options/field config, each query."""
    uid = model.get("uid", "?")
    problems = _errors(_validator("dashboard", None), model, uid)
    for panel in panels(model):
        kind = str(panel.get("type", "")).lower()
        if kind == "row":
            continue
        where = f"{uid}: panel {panel.get('id')} ({kind})"
        if not (schema_dir() / f"{kind}.jsonschema.json").is_file():
            problems.append(f"{where}: no schema for panel type {kind}")
            continue
        definitions = _load(kind)["definitions"]
        if "Options" in definitions:
            problems += _errors(_validator(kind, "Options"), panel.get("options", {}), f"{where} options")
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None and "FieldConfig" in definitions:
            problems += _errors(_validator(kind, "FieldConfig"), custom, f"{where} fieldConfig.custom")
        for target in panel.get("targets", []):
            problems += _errors(
                _validator("prometheus", None), target, f"{where} target {target.get('refId')}"
            )
    return problems
