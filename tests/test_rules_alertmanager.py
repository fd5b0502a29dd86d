"""Alertmanager config: amtool check-config, route tests covering every route, and a real Alertmanager
routing, inhibiting and delivering to a webhook with the bearer token from `bridge_token`."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import yaml
from pytest_httpserver import HTTPServer

from stack.processes import wait_until
from stack.rules_cmd import RULES_DIR
from stack.servers import Alertmanager

AM_DIR = RULES_DIR / "alertmanager"
CONFIG = AM_DIR / "alertmanager.yml"
CASES = yaml.safe_load((AM_DIR / "routes.tests.yml").read_text())["cases"]
BRIDGE_URL = "http://127.0.0.1:9095"
TOKEN = "test-token-abc"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=30)


def route_paths(tree: str) -> set[str]:
    """Routes of an `amtool config routes` tree as paths of matchers ("default-route/{a}/{b}")."""
    paths, stack = set(), []
    for line in tree.splitlines():
        match = re.match(r"^([\s│├└─]*)(default-route|\{.*?\})(?:\s|$)", line)
        if not match:
            continue
        depth = len(match.group(1)) // 4 - 1  # the root's prefix is one level of tree drawing
        stack[depth:] = [match.group(2)]
        paths.add("/".join(stack))
    return paths


def test_amtool_check_config_accepts_the_shipped_config() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_route_case(case: dict[str, Any]) -> None:
    labels = [f"{k}={v}" for k, v in case["labels"].items()]
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={','.join(case['receivers'])}",
        *labels,
    )
    assert result.returncode == 0, f"got {result.stdout.strip()!r}, expected {case['receivers']}"


def test_route_cases_reach_every_route() -> None:
    all_routes = route_paths(amtool("config", "routes", f"--config.file={CONFIG}").stdout)
    assert len(all_routes) >= 8  # the two warning routes (record, then digest) share one path
    reached: set[str] = set()
    for case in CASES:
        labels = [f"{k}={v}" for k, v in case["labels"].items()]
        tree = amtool("config", "routes", "test", f"--config.file={CONFIG}", "--tree", *labels).stdout
        reached |= route_paths(tree)
    assert all_routes - reached == set(), f"routes no case reaches: {sorted(all_routes - reached)}"


def test_every_severity_and_type_used_by_the_rules_has_a_route_case() -> None:
    from stack.rules_cmd import default_rule_files

    used = set()
    for path in default_rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    used.add((rule["labels"]["severity"], rule["labels"]["type"]))
    covered = {(c["labels"].get("severity"), c["labels"].get("type")) for c in CASES}
    severities = {s for s, _ in covered}
    # Every severity has a case; every critical type (the paging routes differ by type) has its own case.
    assert {s for s, _ in used} <= severities
    assert {t for s, t in used if s == "critical"} <= {t for s, t in covered if s == "critical"}


# --- a real Alertmanager -----------------------------------------------------------------------------------


def shipped_config_for(receiver_url: str) -> dict[str, Any]:
    """The shipped config with the bridge URL pointed at `receiver_url`, as `novacron up` does."""
    config = yaml.safe_load(CONFIG.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert hook["url"].startswith(BRIDGE_URL)
            hook["url"] = receiver_url + hook["url"][len(BRIDGE_URL) :]
    return config


@pytest.fixture(scope="module")
def alertmanager(webhook: HTTPServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    workdir = tmp_path_factory.mktemp("am")
    # Relative credentials_file: resolved next to the config file, where `novacron up` writes it too.
    (workdir / "bridge_token").write_text(TOKEN + "\n")
    am = Alertmanager(workdir, shipped_config_for(webhook.url_for("").rstrip("/"))).start()
    try:
        yield am
    finally:
        am.stop()


def post_alerts(am: Alertmanager, *label_sets: dict[str, str]) -> None:
    now = datetime.now(UTC).isoformat()
    body = [{"labels": labels, "annotations": {"summary": "test"}, "startsAt": now} for labels in label_sets]
    requests.post(f"{am.url}/api/v2/alerts", json=body, timeout=10).raise_for_status()


def delivered(webhook: HTTPServer) -> list[tuple[dict[str, Any], dict[str, str]]]:
    return [(json.loads(req.data), dict(req.headers)) for req, _ in webhook.log]


def wait_delivery(
    webhook: HTTPServer, alertname: str, timeout: float = 30.0
) -> tuple[dict[str, Any], dict[str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for body, headers in delivered(webhook):
            if any(a["labels"].get("alertname") == alertname for a in body["alerts"]):
                return body, headers
        time.sleep(0.1)
    raise AssertionError(f"{alertname} was not delivered in {timeout}s: {delivered(webhook)}")


def status(am: Alertmanager, alertname: str) -> list[dict[str, Any]]:
    resp = requests.get(f"{am.url}/api/v2/alerts", params={"filter": f'alertname="{alertname}"'}, timeout=10)
    resp.raise_for_status()
    return [a["status"] for a in resp.json()]


def test_critical_alert_reaches_the_paging_receiver_fast_with_the_bearer_token(
    alertmanager: Alertmanager, webhook: HTTPServer
) -> None:
    started = time.monotonic()
    post_alerts(
        alertmanager,
        {
            "alertname": "NovaCronVMNotRunning",
            "severity": "critical",
            "priority": "P1",
            "type": "vm",
            "vm_id": "u-1",
            "vm_name": "web-1",
            "host": "h9",
        },
    )
    body, headers = wait_delivery(webhook, "NovaCronVMNotRunning")
    assert time.monotonic() - started < 5  # group_wait 1s for pages
    assert body["receiver"] == "bridge-page"
    assert body["groupLabels"] == {"alertname": "NovaCronVMNotRunning", "host": "h9"}
    assert headers["Authorization"] == f"Bearer {TOKEN}"


def test_heartbeat_goes_to_its_own_receiver(alertmanager: Alertmanager, webhook: HTTPServer) -> None:
    post_alerts(
        alertmanager, {"alertname": "NovaCronWatchdog", "severity": "info", "priority": "P4", "type": "meta"}
    )
    body, _ = wait_delivery(webhook, "NovaCronWatchdog")
    assert body["receiver"] == "bridge-heartbeat"


def test_host_down_inhibits_its_vms_but_not_other_hosts(alertmanager: Alertmanager) -> None:
    vm = {"severity": "critical", "priority": "P1", "type": "vm"}
    post_alerts(
        alertmanager,
        {
            "alertname": "NovaCronHostDown",
            "severity": "critical",
            "priority": "P1",
            "type": "host",
            "host": "h1",
            "instance": "h1:9177",
        },
        {"alertname": "NovaCronVMCrashed", **vm, "vm_id": "a", "host": "h1"},
        {"alertname": "NovaCronVMCrashed", **vm, "vm_id": "b", "host": "h2"},
        {
            "alertname": "NovaCronTargetDown",
            "severity": "warning",
            "priority": "P2",
            "type": "platform",
            "instance": "h1:9177",
            "job": "libvirt",
        },
    )

    # The inhibitor learns of the posted alerts asynchronously: wait for the whole expected answer at once.
    def states() -> dict[str, Any]:
        return {
            "crashed": sorted(
                (s["state"], bool(s["inhibitedBy"])) for s in status(alertmanager, "NovaCronVMCrashed")
            ),
            "target_down": [s["state"] for s in status(alertmanager, "NovaCronTargetDown")],
            "host_down": [s["state"] for s in status(alertmanager, "NovaCronHostDown")],
        }

    expected = {
        "crashed": [("active", False), ("suppressed", True)],
        "target_down": ["suppressed"],
        "host_down": ["active"],
    }
    assert wait_until(lambda: states() == expected, timeout=30, interval=0.2), states()


def test_critical_inhibits_warning_of_the_same_alert_and_fast_burn_inhibits_slow(
    alertmanager: Alertmanager,
) -> None:
    host = {"alertname": "NovaCronHostMemoryPressure", "type": "host", "host": "h5"}
    slo = {"type": "slo", "slo": "vm-availability"}
    post_alerts(
        alertmanager,
        {**host, "severity": "critical", "priority": "P1"},
        {**host, "severity": "warning", "priority": "P2"},
        {"alertname": "NovaCronSLOBurnRateFast", "severity": "critical", "priority": "P1", **slo},
        {"alertname": "NovaCronSLOBurnRateSlow", "severity": "warning", "priority": "P3", **slo},
    )

    # The inhibitor learns of the posted alerts asynchronously: wait for the whole expected answer at once.
    def states() -> dict[str, Any]:
        return {
            "memory": {s["state"] for s in status(alertmanager, "NovaCronHostMemoryPressure")},
            "slow": [s["state"] for s in status(alertmanager, "NovaCronSLOBurnRateSlow")],
            "fast": [s["state"] for s in status(alertmanager, "NovaCronSLOBurnRateFast")],
        }

    expected = {"memory": {"active", "suppressed"}, "slow": ["suppressed"], "fast": ["active"]}
    assert wait_until(lambda: states() == expected, timeout=30, interval=0.2), states()
