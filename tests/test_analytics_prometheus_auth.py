"""The sidecar and its reports reach a Prometheus behind basic auth, the password from a secret file."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest
import requests
import yaml

from stack.processes import wait_until
from stack.servers import Prometheus, prometheus_config
from tests.test_reports_run import cli, write_config


@pytest.fixture(scope="module")
def guarded_prometheus(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real Prometheus whose web config demands basic auth (user `reports`); yields it and the password."""
    tmp = tmp_path_factory.mktemp("guarded")
    password = "s3cret-report-reader"
    web = tmp / "web.yml"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web.write_text(yaml.safe_dump({"basic_auth_users": {"reports": hashed}}))
    prom = Prometheus(tmp / "prometheus", prometheus_config([]), extra_args=[f"--web.config.file={web}"])
    prom.ready_url = None  # its readiness endpoint needs the credentials too: waited for below
    with prom.start():
        ready = f"{prom.url}/-/ready"
        assert wait_until(lambda: _ok(ready, ("reports", password)), timeout=60), prom.log_tail()
        assert requests.get(ready, timeout=5).status_code == 401
        yield prom, password


def _ok(url: str, auth: tuple[str, str]) -> bool:
    try:
        return requests.get(url, auth=auth, timeout=5).ok
    except requests.RequestException:
        return False


def _with_prometheus(path: Path, section: dict[str, object]) -> None:
    config = yaml.safe_load(path.read_text())
    config["prometheus"].update(section)
    path.write_text(yaml.safe_dump(config))


def test_report_runs_with_basic_auth_from_a_password_file(guarded_prometheus, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    prom, password = guarded_prometheus
    secret = tmp_path / "prometheus-password"
    secret.write_text(password + "\n")
    path = write_config(tmp_path, prom.url, None)
    _with_prometheus(path, {"basic_auth": {"username": "reports", "password_file": str(secret)}})
    assert cli(["report", "run", "--config.file", str(path), "--no-email"]) == 0, capsys.readouterr().err
    run_dir = next((tmp_path / "archive" / "acme-daily").iterdir())
    assert (run_dir / "report.pdf").stat().st_size > 0
    assert password not in capsys.readouterr().out


def test_report_without_credentials_fails_cleanly(guarded_prometheus, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    prom, _ = guarded_prometheus
    path = write_config(tmp_path, prom.url, None)
    assert cli(["report", "run", "--config.file", str(path), "--no-email"]) == 1
    err = capsys.readouterr().err
    assert "acme-daily: Prometheus answered HTTP 401" in err and "Traceback" not in err
    assert not (tmp_path / "archive" / "acme-daily").exists()


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"url": "http://reports:pw@127.0.0.1:9090"}, "prometheus.url"),
        ({"basic_auth": {"username": "reports", "password_file": "/nonexistent"}}, "prometheus.basic_auth"),
        ({"basic_auth": {"user": "reports"}}, "prometheus.basic_auth.user"),
        ({"retries": 99}, "prometheus.retries"),
    ],
)
def test_bad_prometheus_section_exits_2_naming_the_key(tmp_path: Path, capsys, section, key) -> None:  # type: ignore[no-untyped-def]
    path = write_config(tmp_path, "http://127.0.0.1:9", None)
    _with_prometheus(path, section)
    assert cli(["report", "check", "--config.file", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"invalid configuration: {key}" in err
    assert "pw@" not in err  # a URL with credentials is never echoed


def test_sidecar_reads_with_basic_auth(guarded_prometheus, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from analytics_sidecar.main import main

    prom, password = guarded_prometheus
    secret = tmp_path / "prometheus-password"
    secret.write_text(password + "\n")
    section = {"url": prom.url, "basic_auth": {"username": "reports", "password_file": str(secret)}}
    config = tmp_path / "analytics.yml"
    config.write_text(yaml.safe_dump({"prometheus": section}))
    assert main(["recommendations", f"--config.file={config}"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.split()[:3] == ["VM_ID", "VM_NAME", "TENANT"]
    config.write_text(yaml.safe_dump({"prometheus": {"url": prom.url}}))
    assert main(["recommendations", f"--config.file={config}"]) == 1
    err = capsys.readouterr().err
    assert "Prometheus query failed" in err and "Traceback" not in err
