"""Every NovaCron dashboard, built to JSON, plus per-tenant copies derived from the same templates."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dashboards.boards.alerts import alerts
from dashboards.boards.analytics import analytics, capacity
from dashboards.boards.cloud import cloud
from dashboards.boards.fleet import fleet_overview, host_detail, vm_detail
from dashboards.boards.ops import self_monitoring, slo
from dashboards.boards.topology import topology
from dashboards.sdk import Board

FACTORIES: tuple[Callable[[], Board], ...] = (
    fleet_overview,
    host_detail,
    vm_detail,
    topology,
    cloud,
    alerts,
    analytics,
    capacity,
    slo,
    self_monitoring,
)
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAX_UID = 40  # Grafana refuses longer dashboard uids


@dataclass(frozen=True)
class Built:
    """A built dashboard: file name, Grafana folder, and the dashboard JSON model."""

    filename: str
    folder: str
    model: dict[str, Any]


def build_all(tenant: str | None = None) -> list[Built]:
    """All dashboards; with `tenant`, only the tenant-facing ones, pinned to that tenant."""
    out = []
    for factory in FACTORIES:
        board = factory()
        model = board.build()
        if tenant is not None:
            if not board.tenant_scoped:
                continue
            model = tenant_copy(model, tenant)
            out.append(Built(f"{model['uid']}.json", f"NovaCron tenant {tenant}", model))
        else:
            out.append(Built(f"{board.uid}.json", board.folder, model))
    return out


def tenant_uid(uid: str, tenant: str) -> str:
    """A stable uid per (dashboard, tenant), kept within Grafana's 40 characters."""
    import hashlib

    slug = re.sub(r"[^a-z0-9]+", "-", tenant.lower()).strip("-")
    candidate = f"{uid}-{slug}"
    if len(candidate) <= MAX_UID:
        return candidate
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:8]
    return f"{uid[: MAX_UID - 9]}-{digest}"


def tenant_copy(model: dict[str, Any], tenant: str) -> dict[str, Any]:
    """Replace the tenant variable with a hidden constant, so every query is pinned to the tenant."""
    if not TENANT_RE.match(tenant):
        raise ValueError(f"tenant {tenant!r} must match {TENANT_RE.pattern}")
    out = copy.deepcopy(model)
    out["uid"] = tenant_uid(model["uid"], tenant)
    out["title"] = f"{model['title']} ({tenant})"
    out["tags"] = [*model.get("tags", []), f"tenant:{tenant}"]
    variables = out["templating"]["list"]
    for index, var in enumerate(variables):
        if var.get("name") == "tenant":
            # Escaped for a regex match, since queries use tenant=~"$tenant".
            value = re.escape(tenant)
            variables[index] = {
                "name": "tenant",
                "type": "constant",
                "hide": 2,
                "query": value,
                "current": {"selected": True, "text": value, "value": value},
                "skipUrlSync": True,
            }
    return out
