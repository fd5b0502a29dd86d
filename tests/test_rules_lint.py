"""The rule linter (stack/rulelint.py): each check catches its problem; shipped rules are clean; CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stack import rulelint
from stack.cli import main as novacron
from stack.rules_cmd import RUNBOOKS_DIR, default_rule_files

RUNBOOK = "https://github.com/novacron/novacron-monitoring/blob/main/docs/runbooks"


def good_alert(**overrides: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "alert": "NovaCronVMNotRunning",
        "expr": "novacron_vm_state != 1",
        "for": "5s",
        "labels": {"severity": "critical", "priority": "P1", "type": "vm"},
        "annotations": {
            "summary": "VM {{ $labels.vm_id }} is down",
            "description": "state {{ $value }}",
            "runbook_url": f"{RUNBOOK}/NovaCronVMNotRunning.md",
        },
    }
    rule.update(overrides)
    return rule


def checks(*rules: dict[str, Any]) -> list[str]:
    problems = rulelint.lint_rules_data(
        {"groups": [{"name": "g", "rules": list(rules)}]}, "f.yml", RUNBOOKS_DIR
    )
    return [p.check for p in problems]


def test_shipped_rules_are_clean() -> None:
    problems = rulelint.lint_files(default_rule_files(), RUNBOOKS_DIR)
    assert problems == [], "\n".join(map(str, problems))


def test_a_good_alert_passes() -> None:
    assert checks(good_alert()) == []


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"priority": "P1", "type": "vm"}, "alerts/labels"),  # no severity
        ({"severity": "page", "priority": "P1", "type": "vm"}, "alerts/labels"),
        ({"severity": "critical", "priority": "P9", "type": "vm"}, "alerts/labels"),
        ({"severity": "critical", "priority": "P1"}, "alerts/labels"),  # neither type nor team
        ({"severity": "{{ $labels.sev }}", "priority": "P1", "type": "vm"}, "alerts/labels"),
    ],
)
def test_routing_labels_are_required_and_static(labels: dict[str, str], expected: str) -> None:
    assert expected in checks(good_alert(labels=labels))


def test_team_is_accepted_instead_of_type() -> None:
    assert checks(good_alert(labels={"severity": "warning", "priority": "P3", "team": "compute"})) == []


def test_annotations_are_required_and_description_shows_values() -> None:
    rule = good_alert()
    del rule["annotations"]["summary"]
    assert "alerts/annotations" in checks(rule)
    rule = good_alert()
    rule["annotations"]["description"] = "something is wrong"
    assert "alerts/annotations" in checks(rule)


def test_runbook_must_be_an_url_to_the_alerts_own_existing_runbook() -> None:
    rule = good_alert()
    rule["annotations"]["runbook_url"] = "docs/runbooks/NovaCronVMNotRunning.md"
    assert "alerts/runbook" in checks(rule)
    rule["annotations"]["runbook_url"] = f"{RUNBOOK}/NovaCronVMCrashed.md"
    assert "alerts/runbook" in checks(rule)
    rule = good_alert(alert="NovaCronNoSuchAlert")
    rule["annotations"]["runbook_url"] = f"{RUNBOOK}/NovaCronNoSuchAlert.md"
    assert "alerts/runbook" in checks(rule)


@pytest.mark.parametrize(
    ("hold", "severity", "bad"),
    [
        (None, "critical", True),
        ("2h", "warning", True),
        ("30m", "critical", True),
        ("30m", "warning", False),
        ("15m", "critical", False),
        ("soon", "warning", True),
    ],
)
def test_for_is_required_and_bounded(hold: str | None, severity: str, bad: bool) -> None:
    rule = good_alert(labels={"severity": severity, "priority": "P2", "type": "vm"})
    if hold is None:
        del rule["for"]
    else:
        rule["for"] = hold
    assert ("alerts/for" in checks(rule)) is bad


def test_heartbeat_needs_no_for() -> None:
    rule = good_alert(alert="NovaCronWatchdog", expr="vector(1)")
    rule["annotations"]["runbook_url"] = f"{RUNBOOK}/NovaCronWatchdog.md"
    del rule["for"]
    assert checks(rule) == []


@pytest.mark.parametrize(
    ("expr", "check"),
    [
        ("rate(novacron_vm_state[5m]) > 0", "promql/counter"),  # rate over a gauge
        ("increase(novacron_vm_memory_bytes[1h]) > 0", "promql/counter"),
        ("novacron_vm_cpu_seconds_total > 100", "promql/counter"),  # raw counter value
        ("max(novacron_bridge_notifications_failed_total) > 3", "promql/counter"),
        ("rate(novacron_vm_cpu_seconds_total[30s]) > 1", "promql/range"),
        ("holt_winters(novacron_vm_memory_bytes[1h], 0.5, 0.5) > 0", "promql/forbidden"),
        ("sum(rate(novacron_vm_cpu_seconds_total[5m])", "promql/syntax"),
    ],
)
def test_promql_checks(expr: str, check: str) -> None:
    assert check in checks(good_alert(expr=expr))


@pytest.mark.parametrize(
    "expr",
    [
        "sum by (vm_id) (rate(novacron_vm_cpu_seconds_total[1m])) > 1",
        "increase(novacron_bridge_notifications_failed_total[10m]) > 3",
        "count(novacron_vm_cpu_seconds_total) > 0",
        "absent(novacron_vm_cpu_seconds_total)",
        "histogram_quantile(0.9, sum by (le) (rate(novacron_bridge_delivery_latency_seconds_bucket[5m])))",
    ],
)
def test_correct_counter_use_passes(expr: str) -> None:
    assert checks(good_alert(expr=expr)) == []


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("vm:novacron_vm_cpu_utilisation:ratio", True),
        ("host_pool:novacron_storage_pool_used:ratio", True),
        ("novacron_vm_cpu_utilisation", False),
        ("vm:novacron_vm_cpu_utilisation", False),
        ("VM:cpu:ratio", False),
    ],
)
def test_recording_rule_names_follow_level_metric_operations(name: str, ok: bool) -> None:
    assert (checks({"record": name, "expr": "novacron_vm_vcpus"}) == []) is ok


def test_duplicate_alert_with_the_same_labels_is_reported() -> None:
    assert "alerts/duplicate" in checks(good_alert(), good_alert())
    other = good_alert(labels={"severity": "warning", "priority": "P2", "type": "vm"})
    assert "alerts/duplicate" not in checks(good_alert(), other)


def test_recording_rule_defined_in_two_files_is_reported(tmp_path: Path) -> None:
    body = {"groups": [{"name": "g", "rules": [{"record": "vm:x:ratio", "expr": "novacron_vm_vcpus"}]}]}
    for name in ("a.yml", "b.yml"):
        (tmp_path / name).write_text(yaml.safe_dump(body))
    problems = rulelint.lint_files([tmp_path / "a.yml", tmp_path / "b.yml"], RUNBOOKS_DIR)
    assert [p.check for p in problems] == ["record/duplicate"]


def test_unreadable_or_malformed_files_are_problems_not_crashes(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("groups: [\n")
    (tmp_path / "list.yml").write_text("- a\n")
    problems = rulelint.lint_files(
        [tmp_path / "bad.yml", tmp_path / "list.yml", tmp_path / "missing.yml"], None
    )
    assert [p.check for p in problems] == ["file/read", "file/structure", "file/read"]


def test_cli_lint_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert novacron(["rules", "lint", "--promtool"]) == 0
    assert "no problems" in capsys.readouterr().out
    bad = tmp_path / "bad.rules.yml"
    rule = good_alert(expr="rate(novacron_vm_state[5m]) > 0")
    del rule["labels"]["priority"]
    bad.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [rule]}]}))
    assert novacron(["rules", "lint", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "[promql/counter]" in out
    assert "[alerts/labels] label priority" in out


def test_every_alert_is_documented_and_every_runbook_belongs_to_an_alert() -> None:
    alerts = {
        rule["alert"]
        for path in default_rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    runbooks = {p.stem for p in RUNBOOKS_DIR.glob("*.md")}
    assert runbooks == alerts, f"orphan runbooks {runbooks - alerts}, missing {alerts - runbooks}"
    doc = (RUNBOOKS_DIR.parent / "rules.md").read_text()
    assert not [a for a in alerts if f"[`{a}`](runbooks/{a}.md)" not in doc]
