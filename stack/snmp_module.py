"""Generate snmp_exporter 0.21 modules (snmp.yml) from a small OID spec, without MIB files.

Usage: python -m stack.snmp_module deploy/snmp/oids.yml --community-file FILE -o snmp.yml
The community (a secret) comes from a file or $NOVACRON_SNMP_COMMUNITY, never from the spec.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import yaml

from exporters.common.config import ConfigError, check_keys, exit_config_error, load_yaml_mapping, read_secret

_OID = re.compile(r"^[0-9]+(\.[0-9]+)+$")
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = ("counter", "gauge", "DisplayString")
_MODULE_KEYS = {"version", "timeout", "retries", "max_repetitions", "metrics"}
_METRIC_KEYS = {"name", "oid", "type", "help", "index", "lookups"}


def _metric(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "must be a mapping")
    check_keys(raw, _METRIC_KEYS, where)
    for key in ("name", "oid", "type", "help"):
        if key not in raw:
            raise ConfigError(f"{where}.{key}", "is required")
    if not _NAME.match(str(raw["name"])):
        raise ConfigError(f"{where}.name", f"must be a metric name, got {raw['name']!r}")
    if not _OID.match(str(raw["oid"])):
        raise ConfigError(f"{where}.oid", f"must be a numeric OID like 1.3.6.1.2.1.1.3, got {raw['oid']!r}")
    if raw["type"] not in TYPES:
        raise ConfigError(f"{where}.type", f"must be one of {', '.join(TYPES)}")
    metric: dict[str, Any] = {
        "name": str(raw["name"]),
        "oid": str(raw["oid"]),
        "type": raw["type"],
        "help": str(raw["help"]),
    }
    if raw.get("index"):
        label = str(raw["index"])
        metric["indexes"] = [{"labelname": label, "type": "gauge"}]
        lookups = []
        for j, lk in enumerate(raw.get("lookups") or []):
            if not isinstance(lk, Mapping) or not _OID.match(str(lk.get("oid", ""))) or not lk.get("label"):
                raise ConfigError(f"{where}.lookups[{j}]", "needs label and a numeric oid")
            lookups.append(
                {
                    "labels": [label],
                    "labelname": str(lk["label"]),
                    "oid": str(lk["oid"]),
                    "type": "DisplayString",
                }
            )
        if lookups:
            metric["lookups"] = lookups
    elif raw.get("lookups"):
        raise ConfigError(f"{where}.lookups", "needs an index")
    return metric


def _walks(metrics: list[dict[str, Any]]) -> list[str]:
    """Every OID to walk: the metric columns and their lookup columns, without subtrees already covered."""
    oids = {m["oid"] for m in metrics} | {lk["oid"] for m in metrics for lk in m.get("lookups", [])}
    ordered = sorted(oids, key=lambda o: [int(p) for p in o.split(".")])
    return [o for o in ordered if not any(o.startswith(p + ".") for p in ordered if p != o)]


def build_module(name: str, raw: Any, community: str) -> dict[str, Any]:
    """One snmp.yml module (snmp_exporter 0.21 layout: auth inside the module)."""
    where = f"modules.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "must be a mapping")
    check_keys(raw, _MODULE_KEYS, where)
    metrics_raw = raw.get("metrics")
    if not isinstance(metrics_raw, list) or not metrics_raw:
        raise ConfigError(f"{where}.metrics", "must be a non-empty list")
    metrics = [_metric(m, f"{where}.metrics[{i}]") for i, m in enumerate(metrics_raw)]
    names = [m["name"] for m in metrics]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}.metrics", f"duplicate names: {', '.join(dupes)}")
    version = raw.get("version", 2)
    if version not in (1, 2):
        raise ConfigError(f"{where}.version", "must be 1 or 2 (v3 needs the exporter's auth settings)")
    return {
        "walk": _walks(metrics),
        "metrics": metrics,
        "version": version,
        "max_repetitions": int(raw.get("max_repetitions", 25)),
        "retries": int(raw.get("retries", 3)),
        "timeout": str(raw.get("timeout", "5s")),
        "auth": {"community": community},
    }


def generate(spec: Mapping[str, Any], community: str) -> dict[str, Any]:
    check_keys(spec, {"modules"}, "")
    modules = spec.get("modules")
    if not isinstance(modules, Mapping) or not modules:
        raise ConfigError("modules", "must map module names to module specs")
    return {str(name): build_module(str(name), raw, community) for name, raw in modules.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.snmp_module", description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="OID spec (see deploy/snmp/oids.yml)")
    parser.add_argument("-o", "--output", default="-", help="snmp.yml to write (default stdout)")
    parser.add_argument("--community-file", default=None, help="file holding the SNMP v2c community")
    args = parser.parse_args(argv)
    try:
        community = read_secret("NOVACRON_SNMP_COMMUNITY", args.community_file, "community-file")
        if not community:
            raise ConfigError("community-file", "give --community-file or set NOVACRON_SNMP_COMMUNITY")
        text = yaml.safe_dump(generate(load_yaml_mapping(args.spec, "spec"), community), sort_keys=False)
    except ConfigError as err:
        exit_config_error("snmp_module", err)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)  # holds the community
        with os.fdopen(fd, "w") as out:
            out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
