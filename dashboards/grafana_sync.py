"""Push dashboards to a running Grafana and diff what it holds (`push`, `pull`), through grafana-client."""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from dashboards.catalog import Built

# Fields Grafana adds or bumps on save; they are not part of what we manage.
VOLATILE = ("id", "version", "iteration")
MESSAGE = "novacron-dashboards push"


def folder_uid(title: str) -> str:
    """A stable folder uid from its title (Grafana folder uids are at most 40 characters)."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40]


def connect(url: str, timeout: float = 10.0) -> GrafanaApi:
    """Credentials only from the environment: GRAFANA_TOKEN, or GRAFANA_USER and GRAFANA_PASSWORD."""
    credential: str | tuple[str, str] | None = os.environ.get("GRAFANA_TOKEN") or None
    if credential is None and os.environ.get("GRAFANA_USER"):
        credential = (os.environ["GRAFANA_USER"], os.environ.get("GRAFANA_PASSWORD", ""))
    return GrafanaApi.from_url(url, credential=credential, timeout=timeout)


def ensure_folders(api: GrafanaApi, titles: set[str]) -> dict[str, str]:
    """Create missing folders (by stable uid); returns title -> uid."""
    existing = {f["uid"] for f in api.folder.get_all_folders()}
    mapping = {}
    for title in sorted(titles):
        uid = folder_uid(title)
        if uid not in existing:
            api.folder.create_folder(title, uid=uid)
        mapping[title] = uid
    return mapping


def push(api: GrafanaApi, built: list[Built]) -> list[str]:
    """Create or overwrite every dashboard in its folder; returns the uids pushed."""
    folders = ensure_folders(api, {b.folder for b in built})
    pushed = []
    for item in built:
        model = {k: v for k, v in item.model.items() if k not in VOLATILE}
        api.dashboard.update_dashboard(
            {"dashboard": model, "folderUid": folders[item.folder], "overwrite": True, "message": MESSAGE}
        )
        pushed.append(item.model["uid"])
    return pushed


@dataclass(frozen=True)
class Drift:
    """One dashboard's difference between the built model and Grafana: missing, or a unified diff."""

    uid: str
    missing: bool
    diff: str


def normalise(model: dict[str, Any]) -> str:
    """Comparable text, without what Grafana bumps on save or stamps on panels (pluginVersion)."""
    clean = {k: v for k, v in model.items() if k not in VOLATILE}
    clean["panels"] = [{k: v for k, v in p.items() if k != "pluginVersion"} for p in clean.get("panels", [])]
    return json.dumps(clean, indent=2, sort_keys=True)


def fetch(api: GrafanaApi, uid: str) -> dict[str, Any] | None:
    """Grafana's copy of a dashboard, or None when it has none."""
    try:
        data: dict[str, Any] = api.dashboard.get_dashboard(uid)["dashboard"]
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise
    return data


def pull(api: GrafanaApi, built: list[Built]) -> tuple[list[Drift], dict[str, dict[str, Any]]]:
    """Compare Grafana's dashboards with the built ones; returns the drifts and Grafana's models by uid."""
    drifts, remote = [], {}
    for item in built:
        uid = item.model["uid"]
        current = fetch(api, uid)
        if current is None:
            drifts.append(Drift(uid, True, ""))
            continue
        remote[uid] = current
        ours, theirs = normalise(item.model), normalise(current)
        if ours != theirs:
            diff = "".join(
                difflib.unified_diff(
                    ours.splitlines(keepends=True),
                    theirs.splitlines(keepends=True),
                    fromfile=f"built/{uid}",
                    tofile=f"grafana/{uid}",
                )
            )
            drifts.append(Drift(uid, False, diff))
    return drifts, remote
