"""Every shipped Prometheus scrape snippet in deploy/ is a config the real `promtool check config` accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
# The scale profile's shard configs are checked with their rule files in tests/test_scale_deploy.py.
SNIPPETS = sorted(p for p in DEPLOY.glob("*/prometheus-*.yml"))


def test_every_component_ships_a_scrape_snippet() -> None:
    components = {p.parent.name for p in SNIPPETS}
    assert {"alert-bridge", "cloud-exporter", "libvirt-exporter", "metrics-api", "snmp"} <= components


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_scrape_snippet_passes_promtool(snippet: Path) -> None:
    result = subprocess.run(
        ["promtool", "check", "config", str(snippet)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
