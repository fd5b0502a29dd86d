"""promtool check rules and promtool unit tests pass; every alert has a firing and a must-not-fire case."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from stack.rules_cmd import RULES_DIR, default_rule_files

pytestmark = pytest.mark.slow

TEST_DIR = RULES_DIR / "tests"
TEST_FILES = sorted(TEST_DIR.glob("*.yml"))


def _alerts() -> dict[str, set[str]]:
    """alert name -> its severities, over every shipped rule file."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in default_rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found[rule["alert"]].add(rule["labels"]["severity"])
    return found


def _cases() -> list[dict]:
    cases = []
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            cases.extend(test.get("alert_rule_test") or [])
    return cases


def test_promtool_check_rules_accepts_every_file() -> None:
    files = default_rule_files()
    assert len(files) >= 8
    result = subprocess.run(["promtool", "check", "rules", *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files)


@pytest.mark.parametrize("test_file", TEST_FILES, ids=[p.name for p in TEST_FILES])
def test_promtool_unit_tests_pass(test_file: Path) -> None:
    result = subprocess.run(
        ["promtool", "test", "rules", test_file.name],
        cwd=TEST_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_rule_file_is_loaded_by_a_test() -> None:
    loaded = set()
    for path in TEST_FILES:
        loaded.update((TEST_DIR / f).resolve() for f in yaml.safe_load(path.read_text())["rule_files"])
    missing = [p.name for p in default_rule_files() if p.resolve() not in loaded]
    assert not missing, f"rule files without promtool tests: {missing}"


def test_every_alert_has_a_firing_case_per_severity_and_a_must_not_fire_case() -> None:
    fired: dict[str, set[str]] = defaultdict(set)
    quiet: set[str] = set()
    for case in _cases():
        name = case["alertname"]
        expected = case.get("exp_alerts") or []
        if not expected:
            quiet.add(name)
        for alert in expected:
            fired[name].add(alert["exp_labels"]["severity"])
    problems = []
    for name, severities in sorted(_alerts().items()):
        if severities - fired[name]:
            problems.append(f"{name}: no firing case for severity {sorted(severities - fired[name])}")
        # The watchdog always fires by design: its must-not case is meaningless.
        if name not in quiet and name != "NovaCronWatchdog":
            problems.append(f"{name}: no must-not-fire case (exp_alerts: [])")
    assert not problems, "\n".join(problems)
    assert len(_alerts()) >= 40


def test_firing_cases_check_annotations_too() -> None:
    """Expected alerts list their rendered annotations, so the templates (values, runbook link) are tested."""
    missing = [
        f"{case['alertname']}@{case['eval_time']}"
        for case in _cases()
        for alert in case.get("exp_alerts") or []
        if not {"summary", "description", "runbook_url"} <= set(alert.get("exp_annotations") or {})
    ]
    assert not missing, missing
