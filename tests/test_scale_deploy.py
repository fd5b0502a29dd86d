"""The shipped scale deployment files: Prometheus shard configs pass promtool and shard like stack/scale.py,
systemd units pass systemd-analyze and carry the hardening options, web configs hold bcrypt users and TLS."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import bcrypt
import pytest
import yaml

from stack.scale import shard_relabel
from tests.harness.tls import self_signed_cert

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "scale"
SHARDS = sorted((DEPLOY / "prometheus").glob("prometheus-shard-*.yml"))
# The scale profile's units and each component's own unit (deploy/<component>/*.service): all hardened alike.
UNITS = sorted((DEPLOY / "systemd").glob("*.service")) + sorted(DEPLOY.parent.glob("*/*.service"))
HARDENING = [
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=",
    "SystemCallFilter=@system-service",
    "RestrictSUIDSGID=yes",
]


def test_shard_configs_pass_promtool() -> None:
    assert len(SHARDS) == 2
    result = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", *map(str, SHARDS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("index", [0, 1])
def test_shard_configs_split_like_the_profile(index: int) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / f"prometheus-shard-{index}.yml").read_text())
    assert config["global"]["external_labels"] == {"prometheus_shard": str(index)}
    sharded = [j for j in config["scrape_configs"] if j["job_name"] in ("libvirt", "cloud")]
    assert len(sharded) == 2
    for job in sharded:
        assert job["relabel_configs"][:2] == shard_relabel(index, 2)
        assert job["sample_limit"] > 0
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    assert ("services" in jobs) == (index == 0)  # shared services are scraped once, by shard 0
    names = [rw["name"] for rw in config["remote_write"]]
    assert names == ["global-raw", "global-longterm"]
    longterm = config["remote_write"][1]["write_relabel_configs"][0]
    assert longterm["action"] == "keep" and longterm["regex"] == "[a-z_]+:.+"
    for rw in config["remote_write"]:
        assert "password_file" in rw["basic_auth"] and "password" not in rw["basic_auth"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_verify_and_are_hardened(unit: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        # The project's console scripts are installed on the target host, not on this machine.
        if line.strip() and "/usr/local/bin/novacron-" not in line
    ]
    assert not problems, problems
    text = unit.read_text()
    for option in HARDENING:
        assert f"\n{option}\n" in text, f"{unit.name} lacks {option}"
    assert "DynamicUser=yes" in text or "User=prometheus" in text
    # Secrets come from credential/environment files: no literal password or token on a command line.
    assert not re.search(r"(password|token)=[^\s$\"']", text, re.IGNORECASE)


def test_web_configs_have_tls_and_bcrypt_users() -> None:
    files = sorted((DEPLOY / "web-config").glob("*.yml"))
    assert len(files) >= 5
    for path in files:
        config = yaml.safe_load(path.read_text())
        assert set(config) == {"tls_server_config", "basic_auth_users"}
        assert config["tls_server_config"]["min_version"] == "TLS12"
        for hashed in config["basic_auth_users"].values():
            assert bcrypt.checkpw(b"change-me", hashed.encode())


def test_scale_profile_bridges_ask_both_sidecar_shards_for_context(tmp_path: Path) -> None:
    from alert_bridge.config import parse_config
    from stack.config import load_stack_config
    from stack.scale import plan_scale, scale_ports

    cfg = load_stack_config(None, str(tmp_path / "state"))
    plan_scale(cfg)
    ports = scale_ports(cfg)
    for replica in (0, 1):
        bridge = yaml.safe_load((tmp_path / "state" / f"alert-bridge-{replica}" / "bridge.yml").read_text())
        urls = parse_config(bridge).enrichment.sidecar_urls
        assert [u.rsplit(":", 1)[1] for u in urls] == [str(ports["analytics-0"]), str(ports["analytics-1"])]


@pytest.mark.parametrize(
    ("ports", "key", "reason"),
    [
        (
            {"analytics": 9176},
            "ports.analytics",
            "analytics-1 would be port 9177, taken by libvirt_exporter+0",
        ),
        ({"prometheus": 9092}, "ports.alertmanager", "port 9093, taken by prometheus-1 (ports.prometheus)"),
        ({"alertmanager": 65530}, "ports.alertmanager", "out of range"),
    ],
)
def test_scale_profile_ports_that_clash_exit_2_naming_the_key(
    ports: dict[str, int], key: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stack.cli import main

    config = tmp_path / "stack.yml"
    config.write_text(yaml.safe_dump({"ports": ports}))
    with pytest.raises(SystemExit) as stop:
        main([f"--config.file={config}", f"--state-dir={tmp_path / 'state'}", "up", "--profile", "scale"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"invalid configuration: {key}" in err and reason in err
    assert not (tmp_path / "state" / "prometheus-0").exists()  # refused before anything was written


def test_vmalert_unit_flags_and_the_global_rules_pass_vmalert_dry_run(tmp_path: Path) -> None:
    """The unit's flags are vmalert's (an unknown flag fails), and the fleet-wide groups the scale profile
    splits off load in vmalert, while the shards keep every per-VM and per-host group."""
    from stack.plan import rule_files
    from stack.scale import split_rules

    text = (DEPLOY / "systemd" / "vmalert.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)\n", text, re.MULTILINE | re.DOTALL)
    assert exec_start
    argv = exec_start.group(1).replace("\\\n", " ").split()
    assert argv[0] == "/usr/bin/vmalert"
    shard, fleet = split_rules(rule_files(), tmp_path)
    assert {p.name for p in fleet} == {"slo.rules.yml", "decisions.rules.yml"}
    assert "vm.rules.yml" in {p.name for p in shard} and "decisions.rules.yml" in {p.name for p in shard}
    flags = [a for a in argv[1:] if not a.startswith("-rule=")] + [f"-rule={p}" for p in fleet]
    result = subprocess.run([argv[0], *flags, "-dryRun"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_longterm_federation_file_is_valid_and_lists_every_fleet_wide_series(tmp_path: Path) -> None:
    """The long-term store's scrape config parses in VictoriaMetrics, and its match[] names exactly the series
    that the fleet-wide rule groups record (else a new SLO rule would never reach the long-term store)."""
    from stack.plan import rule_files
    from stack.scale import VICTORIA_BIN, recorded_names, split_rules

    path = DEPLOY / "victoria-metrics" / "longterm-scrape.yml"
    unit = (DEPLOY / "systemd" / "victoria-metrics-longterm.service").read_text()
    assert "-promscrape.config=/etc/novacron/victoria-metrics/longterm-scrape.yml" in unit
    # The dry run reads the CA and password files: point a copy at stand-ins.
    cert, _key = self_signed_cert(tmp_path)
    (tmp_path / "password").write_text("secret\n")
    copy = tmp_path / "longterm-scrape.yml"
    copy.write_text(
        path.read_text()
        .replace("/etc/novacron/tls/ca.pem", str(cert))
        .replace(
            "/run/credentials/victoria-metrics-longterm.service/victoria.password", str(tmp_path / "password")
        )
    )
    result = subprocess.run(
        [VICTORIA_BIN, f"-promscrape.config={copy}", "-promscrape.config.dryRun"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (job,) = yaml.safe_load(path.read_text())["scrape_configs"]
    (match,) = job["params"]["match[]"]
    _, fleet = split_rules(rule_files(), tmp_path)
    assert match == '{__name__=~"' + "|".join(recorded_names(fleet)) + '"}'
    assert job["honor_labels"] is True and "password" not in job["basic_auth"]
