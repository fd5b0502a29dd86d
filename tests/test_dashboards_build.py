"""Dashboards: schema validity, linter, committed JSON up to date, tenant copies and provisioning files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from dashboards.catalog import build_all, tenant_copy, tenant_uid
from dashboards.cli import REPO_GENERATED, REPO_PROVISIONING, main
from dashboards.lint import lint, lint_all, panels, used_variables
from dashboards.provisioning import static_files, write_provisioning
from dashboards.schema import validate
from dashboards.sdk import PROMETHEUS_UID, dump

BUILT = build_all()
EXPECTED_UIDS = {
    "novacron-fleet-overview",
    "novacron-host-detail",
    "novacron-vm-detail",
    "novacron-topology",
    "novacron-cloud",
    "novacron-alerts",
    "novacron-analytics",
    "novacron-capacity",
    "novacron-slo",
    "novacron-self",
}


def test_every_dashboard_is_built_with_stable_uids() -> None:
    assert {b.model["uid"] for b in BUILT} == EXPECTED_UIDS
    assert [b.model["uid"] for b in build_all()] == [b.model["uid"] for b in BUILT]  # deterministic


@pytest.mark.parametrize("item", BUILT, ids=lambda b: b.model["uid"])
def test_schema_valid(item) -> None:  # type: ignore[no-untyped-def]
    assert validate(item.model) == []


@pytest.mark.parametrize("item", BUILT, ids=lambda b: b.model["uid"])
def test_lint_clean(item) -> None:  # type: ignore[no-untyped-def]
    assert lint(item.model) == []
    assert sum(1 for p in panels(item.model) if p["type"] != "row") >= 2


def test_generated_json_is_committed_and_up_to_date() -> None:
    for item in BUILT:
        path = REPO_GENERATED / item.folder / item.filename
        assert path.read_text() == dump(item.model), f"{path} is stale: run novacron-dashboards build"
    assert main(["build", "--check"]) == 0


def test_static_provisioning_is_up_to_date() -> None:
    for name, text in static_files().items():
        assert (REPO_PROVISIONING / name).read_text() == text


def test_build_check_detects_stale_file(tmp_path: Path) -> None:
    assert main(["build", "--out", str(tmp_path)]) == 0
    victim = tmp_path / "NovaCron" / "novacron-slo.json"
    victim.write_text(victim.read_text().replace("SLO", "SL0"))
    assert main(["build", "--out", str(tmp_path), "--check"]) == 1


def test_variables_refresh_and_drilldowns() -> None:
    fleet = next(b.model for b in BUILT if b.model["uid"] == "novacron-fleet-overview")
    names = [v["name"] for v in fleet["templating"]["list"]]
    assert names == ["datasource", "provider", "region", "host", "tenant", "filters"]
    assert fleet["templating"]["list"][-1]["type"] == "adhoc"
    assert "10s" in fleet["timepicker"]["refresh_intervals"]
    links = [
        link for p in panels(fleet) for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])
    ]
    urls = {link["url"] for link in links}
    assert any(
        u.startswith("/d/novacron-vm-detail/") and "${__url_time_range}" in u and "var-vm=" in u for u in urls
    )
    assert any(u.startswith("/d/novacron-host-detail/") and "${datasource:queryparam}" in u for u in urls)
    vm = next(b.model for b in BUILT if b.model["uid"] == "novacron-vm-detail")
    assert "vm" in [v["name"] for v in vm["templating"]["list"]]
    for model in (b.model for b in BUILT):
        assert model["links"][0]["keepTime"] and model["links"][0]["includeVars"]


def test_alert_annotations_on_every_dashboard() -> None:
    for item in BUILT:
        exprs = [a.get("expr") for a in item.model["annotations"]["list"]]
        assert 'ALERTS{alertstate="firing"}' in exprs


def test_tenant_copy_pins_tenant() -> None:
    copies = build_all("acme-corp")
    assert {c.model["uid"] for c in copies} == {
        "novacron-fleet-overview-acme-corp",
        "novacron-vm-detail-acme-corp",
        "novacron-cloud-acme-corp",
        "novacron-analytics-acme-corp",
    }
    for item in copies:
        var = next(v for v in item.model["templating"]["list"] if v["name"] == "tenant")
        assert var["type"] == "constant" and var["query"] == "acme\\-corp" and var["hide"] == 2
        assert var["skipUrlSync"] is True
        assert lint(item.model) == [] and validate(item.model) == []
        assert item.folder == "NovaCron tenant acme-corp"


def test_tenant_uid_is_bounded_and_stable() -> None:
    long = tenant_uid("novacron-fleet-overview", "a-very-long-tenant-name-indeed")
    assert len(long) <= 40 and long == tenant_uid("novacron-fleet-overview", "a-very-long-tenant-name-indeed")
    with pytest.raises(ValueError):
        tenant_copy(BUILT[0].model, 'x"}) or vector(1')
    assert main(["build", "--tenant", "bad name!", "--out", "/nonexistent"]) == 2


def test_linter_finds_problems() -> None:
    model = copy.deepcopy(BUILT[0].model)
    model["uid"] = "Not A Valid UID"
    body = [p for p in model["panels"] if p["type"] != "row"]
    body[0]["description"] = ""
    body[1]["fieldConfig"]["defaults"].pop("unit")
    body[2]["gridPos"] = dict(body[3]["gridPos"])
    body[4]["datasource"] = {"type": "prometheus", "uid": "hard-coded"}
    body[5]["targets"][0]["expr"] = 'up{job=~"$nosuchvar"}'
    body[5]["fieldConfig"]["defaults"]["color"] = {"mode": "fixed", "fixedColor": "#ff0000"}
    model["templating"]["list"] = model["templating"]["list"][1:]
    problems = "\n".join(lint_all([model, model]))
    for needle in (
        "uid 'Not A Valid UID'",
        "no description",
        "no unit",
        "overlap",
        "must be ${datasource}",
        "undefined variable $nosuchvar",
        "#ff0000",
        "no `datasource` variable",
        "used by 2 dashboards",
    ):
        assert needle in problems, needle
    assert used_variables("rate(x[$__rate_interval]) ${datasource:queryparam} $host") == {
        "__rate_interval",
        "datasource",
        "host",
    }


def test_schema_validation_catches_bad_panel() -> None:
    model = copy.deepcopy(BUILT[0].model)
    ts = next(p for p in model["panels"] if p["type"] == "timeseries")
    ts["options"]["legend"]["displayMode"] = "sideways"
    ts["targets"][0]["format"] = "csv"
    errors = "\n".join(validate(model))
    assert "sideways" in errors and "csv" in errors


def test_write_provisioning(tmp_path: Path) -> None:
    root = write_provisioning(tmp_path / "prov", "http://127.0.0.1:9090", "http://127.0.0.1:9093")
    ds = yaml.safe_load((root / "datasources" / "novacron.yaml").read_text())
    prom = next(d for d in ds["datasources"] if d["type"] == "prometheus")
    assert prom["uid"] == PROMETHEUS_UID and prom["url"] == "http://127.0.0.1:9090"
    assert next(d for d in ds["datasources"] if d["type"] == "alertmanager")["url"] == "http://127.0.0.1:9093"
    provider = yaml.safe_load((root / "dashboards" / "novacron.yaml").read_text())["providers"][0]
    assert provider["options"]["foldersFromFilesStructure"] is True
    files = sorted(Path(provider["options"]["path"]).glob("*/*.json"))
    assert {json.loads(f.read_text())["uid"] for f in files} == EXPECTED_UIDS


def test_query_step_follows_grafana() -> None:
    """Step = max(min interval, range / max data points); $__rate_interval counts the min interval."""
    from dashboards.evaluate import builtins, panel_step

    six_hours = 6 * 3600.0
    assert panel_step({}, {}, six_hours, 15.0) == (27, 15.0)  # 800 points by default
    assert panel_step({"maxDataPoints": 200}, {}, six_hours, 15.0) == (108, 15.0)
    assert panel_step({"interval": "5m"}, {}, 86400.0, 15.0) == (300, 300)
    assert panel_step({"interval": "5m"}, {"interval": "1m"}, 86400.0, 15.0) == (108, 60)  # the query's wins
    assert panel_step({"interval": "$__auto"}, {}, 3600.0, 15.0) == (15.0, 15.0)  # not a duration: ignored
    assert builtins(86400.0, 300, 300)["__rate_interval"] == "1200s"  # max(300 + 300, 4 x 300)
    analytics = next(b.model for b in build_all() if b.model["uid"] == "novacron-analytics")
    forecast = next(p for p in panels(analytics) if p["title"] == "Fleet CPU forecast (1 day)")
    fleet = next(b.model for b in build_all() if b.model["uid"] == "novacron-fleet-overview")
    heatmap = next(p for p in panels(fleet) if p["title"] == "CPU utilisation heatmap")
    assert forecast["interval"] == "5m" and heatmap["maxDataPoints"] == 200


def test_fleet_stats_read_group_sums_not_per_vm_joins() -> None:
    """Stats of the fleet-wide views read the per-(provider, region, host, tenant) rules: no join per load."""
    for uid in ("novacron-fleet-overview", "novacron-analytics", "novacron-cloud"):
        model = next(b.model for b in build_all() if b.model["uid"] == uid)
        for panel in panels(model):
            if panel["type"] == "stat":
                for target in panel["targets"]:
                    assert "group_left" not in target["expr"], (uid, panel["title"])


def test_novacron_up_plan_writes_grafana_provisioning(tmp_path: Path) -> None:
    """`novacron up` (stack.plan) writes the provisioning tree pointing at the stack's own Prometheus."""
    from stack.config import load_stack_config
    from stack.plan import plan_stack

    plan = plan_stack(load_stack_config(None, str(tmp_path)))
    root = tmp_path / "grafana"
    assert any(str(root) in note for note in plan.notes)
    ds = yaml.safe_load((root / "datasources" / "novacron.yaml").read_text())["datasources"]
    urls = {d["type"]: (d["uid"], d["url"]) for d in ds}
    assert urls["prometheus"] == (PROMETHEUS_UID, plan.urls["prometheus"])
    assert urls["alertmanager"][1] == plan.urls["alertmanager"]
    provider = yaml.safe_load((root / "dashboards" / "novacron.yaml").read_text())["providers"][0]
    files = sorted(Path(provider["options"]["path"]).glob("*/*.json"))
    assert {json.loads(f.read_text())["uid"] for f in files} == EXPECTED_UIDS
