"""SNMP: the project's generated module (stack/snmp_module.py) in the Debian prometheus-snmp-exporter 0.21,
against a real net-snmp `snmpd` on a free UDP port of 127.0.0.1 with a test community; bad specs exit 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stack.processes import ManagedProcess, free_port, wait_until
from stack.snmp_module import generate
from tests.harness.tls import self_signed_cert

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "deploy" / "snmp" / "oids.yml"
COMMUNITY = "novacron-test-ro"
AUTH = ("prometheus", "change-me")  # the shipped web config's user (its hash is of "change-me")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(url: str, ca: Path) -> dict[str, list]:
    # verify per request: a Session's verify loses to REQUESTS_CA_BUNDLE when that is set.
    text = requests.get(url, timeout=20, auth=AUTH, verify=str(ca)).text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _web_config(tmp_path: Path) -> Path:
    """The shipped web config (TLS, bcrypt user `prometheus` / "change-me"), its credential paths pointed at a
    throw-away certificate."""
    cert, key = self_signed_cert(tmp_path)
    shipped = (REPO / "deploy" / "scale" / "web-config" / "snmp-exporter.yml").read_text()
    creds = "/run/credentials/prometheus-snmp-exporter.service"
    path = tmp_path / "web-config.yml"
    path.write_text(shipped.replace(f"{creds}/tls.crt", str(cert)).replace(f"{creds}/tls.key", str(key)))
    return path


def test_generated_module_scrapes_a_real_snmpd(tmp_path: Path) -> None:
    udp = _free_udp_port()
    conf = tmp_path / "snmpd.conf"
    conf.write_text(f"agentAddress udp:127.0.0.1:{udp}\nrocommunity {COMMUNITY} 127.0.0.1\n")
    snmp_yml = tmp_path / "snmp.yml"
    modules = generate(yaml.safe_load(SPEC.read_text()), COMMUNITY)
    # The same module with a community the agent does not know, failing fast (one 1 s try).
    stranger = generate(yaml.safe_load(SPEC.read_text()), "not-" + COMMUNITY)["novacron_host"]
    modules["wrong_community"] = {**stranger, "retries": 0, "timeout": "1s"}
    snmp_yml.write_text(yaml.safe_dump(modules, sort_keys=False))
    port = free_port()
    snmpd = ManagedProcess(
        "snmpd",
        ["/usr/sbin/snmpd", "-f", "-C", "-c", str(conf), "-Lo", "-p", str(tmp_path / "snmpd.pid")],
        tmp_path / "snmpd.log",
        env={"SNMP_PERSISTENT_DIR": str(tmp_path / "snmp-state"), "MIBS": ""},
    )
    exporter = ManagedProcess(
        "snmp-exporter",
        [
            "/usr/bin/prometheus-snmp-exporter",
            f"--config.file={snmp_yml}",
            f"--web.config.file={_web_config(tmp_path)}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp_path / "snmp-exporter.log",
    )
    # As deployed: TLS and basic auth (deploy/snmp/prometheus-scrape.yml scrapes it so).
    ca = tmp_path / "tls.crt"
    url = f"https://127.0.0.1:{port}/snmp?module=novacron_host&target=127.0.0.1:{udp}"
    scrapes: list[dict[str, list]] = []

    def answered() -> bool:
        scrapes[:] = [_scrape(url, ca)]
        return "memTotalReal" in scrapes[0]

    with snmpd.start(), exporter.start():
        # Neither process has a readiness probe (snmpd is UDP, the exporter has no ready path): the first
        # complete walk says both are up. The checks below read that same scrape.
        assert wait_until(answered, timeout=60, interval=0.5), snmpd.log_tail() + exporter.log_tail()
        got = scrapes[0]
        anonymous = requests.get(url, timeout=20, verify=str(ca))
        assert anonymous.status_code == 401 and "memTotalReal" not in anonymous.text
        lo = [s for s in got["ifHCInOctets"] if s.labels.get("ifDescr") == "lo"]
        assert lo and lo[0].labels["ifName"] == "lo" and lo[0].value >= 0
        assert got["memTotalReal"][0].value > 0
        assert {s.labels["laNames"] for s in got["laLoadInt"]} == {"Load-1", "Load-5", "Load-15"}
        assert got["hrStorageSize"] and all("hrStorageDescr" in s.labels for s in got["hrStorageSize"])
        assert got["sysUpTime"][0].value > 0
        assert got["snmp_scrape_pdus_returned"][0].value > 20
        # A wrong community gets nothing: the agent stays silent and the exporter reports the failed walk.
        wrong = requests.get(
            url.replace("novacron_host", "wrong_community"), timeout=20, auth=AUTH, verify=str(ca)
        )
        assert "memTotalReal" not in wrong.text
        assert wrong.status_code == 500 and "timeout" in wrong.text.lower(), (wrong.status_code, wrong.text)


def test_bad_spec_exits_2_naming_the_key(tmp_path: Path) -> None:
    spec = yaml.safe_load(SPEC.read_text())
    spec["modules"]["novacron_host"]["metrics"][0]["oid"] = "iso.3.6"
    bad = tmp_path / "oids.yml"
    bad.write_text(yaml.safe_dump(spec))
    (tmp_path / "community").write_text(COMMUNITY)
    result = subprocess.run(
        [sys.executable, "-m", "stack.snmp_module", str(bad), f"--community-file={tmp_path / 'community'}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 2
    assert "modules.novacron_host.metrics[0].oid" in result.stderr
    assert COMMUNITY not in result.stderr


@pytest.mark.parametrize("metric", ["ifHCInOctets", "hrStorageUsed", "laLoadInt"])
def test_shipped_snmp_yml_matches_the_spec(metric: str) -> None:
    shipped = yaml.safe_load((REPO / "deploy" / "snmp" / "snmp.yml").read_text())
    regenerated = generate(yaml.safe_load(SPEC.read_text()), shipped["novacron_host"]["auth"]["community"])
    assert shipped == regenerated
    assert metric in {m["name"] for m in shipped["novacron_host"]["metrics"]}
