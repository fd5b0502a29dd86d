"""Grafana provisioning: data sources with fixed uids, and a dashboard provider (a folder per directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dashboards.catalog import Built, build_all
from dashboards.sdk import ALERTMANAGER_UID, PROMETHEUS_UID, dump

PROVIDER_NAME = "novacron"


def datasources(prometheus_url: str, alertmanager_url: str, scrape_interval: str = "15s") -> dict[str, Any]:
    """Prometheus (default) and Alertmanager, with the uids the dashboards reference."""
    return {
        "apiVersion": 1,
        "deleteDatasources": [],
        "datasources": [
            {
                "name": "Prometheus",
                "uid": PROMETHEUS_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": prometheus_url,
                "isDefault": True,
                "editable": False,
                # timeInterval makes $__rate_interval at least four scrapes wide, as Grafana documents.
                "jsonData": {
                    "httpMethod": "POST",
                    "timeInterval": scrape_interval,
                    "prometheusType": "Prometheus",
                },
            },
            {
                "name": "Alertmanager",
                "uid": ALERTMANAGER_UID,
                "type": "alertmanager",
                "access": "proxy",
                "url": alertmanager_url,
                "editable": False,
                "jsonData": {"implementation": "prometheus", "handleGrafanaManagedAlerts": False},
            },
        ],
    }


def dashboard_provider(dashboards_path: str) -> dict[str, Any]:
    """One file provider; each sub-directory becomes a Grafana folder of the same name."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": PROVIDER_NAME,
                "orgId": 1,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": dashboards_path, "foldersFromFilesStructure": True},
            }
        ],
    }


def write_dashboards(out_dir: str | Path, built: list[Built]) -> list[Path]:
    """Write each dashboard under a directory named after its folder; returns the files written."""
    written = []
    for item in built:
        path = Path(out_dir) / item.folder / item.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(item.model))
        written.append(path)
    return written


def write_provisioning(out_dir: str | Path, prometheus_url: str, alertmanager_url: str) -> Path:
    """Write a complete provisioning tree for `novacron up`; point Grafana's `paths.provisioning` at it.

    Layout: `datasources/novacron.yaml`, `dashboards/novacron.yaml` and `json/<folder>/<uid>.json`.
    """
    root = Path(out_dir)
    (root / "datasources").mkdir(parents=True, exist_ok=True)
    (root / "dashboards").mkdir(parents=True, exist_ok=True)
    (root / "datasources" / "novacron.yaml").write_text(
        yaml.safe_dump(datasources(prometheus_url, alertmanager_url), sort_keys=False)
    )
    json_dir = root / "json"
    (root / "dashboards" / "novacron.yaml").write_text(
        yaml.safe_dump(dashboard_provider(str(json_dir.resolve())), sort_keys=False)
    )
    write_dashboards(json_dir, build_all())
    return root


# For packaged installs: Grafana expands ${VAR} in provisioning files from its own environment.
STATIC_DASHBOARDS_PATH = "/var/lib/grafana/dashboards/novacron"


def static_files() -> dict[str, str]:
    """The committed `dashboards/provisioning/` files (URLs from Grafana's environment)."""
    return {
        "datasources/novacron.yaml": yaml.safe_dump(
            datasources("${NOVACRON_PROMETHEUS_URL}", "${NOVACRON_ALERTMANAGER_URL}"), sort_keys=False
        ),
        "dashboards/novacron.yaml": yaml.safe_dump(
            dashboard_provider(STATIC_DASHBOARDS_PATH), sort_keys=False
        ),
    }


def write_static(out_dir: str | Path) -> list[Path]:
    written = []
    for name, text in static_files().items():
        path = Path(out_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
