"""The `novacron-metrics-api` command: exit 2 on bad config, token tools, and serving over TLS."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import shutil
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import ManagedProcess, free_port, start_prometheus, wait_until

COMMAND = shutil.which("novacron-metrics-api") or str(Path(sys.executable).parent / "novacron-metrics-api")
TOKEN = "cli-test-token-0123456789"


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([COMMAND, *args], input=stdin, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"prometheus": {"url": "ftp://x"}, "tokens": []}, "prometheus.url"),
        (
            {
                "prometheus": {"url": "http://x:9090"},
                "tokens": [
                    {"name": "a", "role": "viewer", "tenants": ["t"], "token_env": "NOVACRON_UNSET_TEST_VAR"}
                ],
            },
            "tokens[0].token_env",
        ),
        (
            {
                "prometheus": {"url": "http://x:9090"},
                "limits": {"max_rnage": "1d"},
                "tokens": [{"name": "a", "role": "admin", "sha256": "0" * 64}],
            },
            "limits.max_rnage",
        ),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, config: dict[str, object], key: str) -> None:
    path = tmp_path / "api.yml"
    path.write_text(yaml.safe_dump(config))
    result = _run("--config.file", str(path))
    assert result.returncode == 2
    assert key in result.stderr and "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = _run("--config.file", str(tmp_path / "nope.yml"))
    assert result.returncode == 2 and "config.file" in result.stderr


def test_token_tools() -> None:
    hashed = _run("hash-token", stdin=TOKEN + "\n")
    assert hashed.returncode == 0 and hashed.stdout.strip() == hashlib.sha256(TOKEN.encode()).hexdigest()
    generated = _run("gen-token").stdout.split()
    token, digest = generated[1], generated[3]
    assert len(token) >= 40 and hashlib.sha256(token.encode()).hexdigest() == digest
    assert _run("hash-token", stdin="short\n").returncode == 2


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "tls.crt", tmp / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_serves_over_tls_with_token_env_and_basic_auth_on_metrics(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
                "basic_auth_users": {"prometheus": bcrypt.hashpw(b"scrape-pass", bcrypt.gensalt(4)).decode()},
            }
        )
    )
    with start_prometheus(tmp_path, []) as prom:
        config = tmp_path / "api.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "prometheus": {"url": prom.url},
                    "tokens": [{"name": "ops", "role": "admin", "token_env": "NOVACRON_METRICS_API_TOKEN"}],
                    "audit": {"file": str(tmp_path / "audit.jsonl")},
                }
            )
        )
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        proc = ManagedProcess(
            "metrics-api",
            [
                COMMAND,
                "--config.file",
                str(config),
                "--web.config.file",
                str(web),
                "--web.listen-address",
                f"127.0.0.1:{port}",
            ],
            tmp_path / "api.log",
            env={"NOVACRON_METRICS_API_TOKEN": TOKEN},
        )
        with proc.start():
            assert wait_until(
                lambda: requests.get(f"{url}/-/healthy", verify=str(cert), timeout=5).ok, 60
            ), proc.log_tail()
            resp = requests.get(
                f"{url}/api/v1/query",
                params={"query": "vector(7)"},
                verify=str(cert),
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=10,
            )
            assert resp.status_code == 200 and resp.json()["data"]["result"][0]["value"][1] == "7"
            assert (
                requests.get(
                    f"{url}/api/v1/query", params={"query": "up"}, verify=str(cert), timeout=10
                ).status_code
                == 401
            )
            assert requests.get(f"{url}/metrics", verify=str(cert), timeout=10).status_code == 401
            metrics = requests.get(
                f"{url}/metrics", verify=str(cert), auth=("prometheus", "scrape-pass"), timeout=10
            )
            assert metrics.ok and "novacron_metrics_api_requests_total" in metrics.text
        assert TOKEN not in proc.log_tail(200)
        assert TOKEN not in (tmp_path / "audit.jsonl").read_text()


def test_wsgi_entry_point(tmp_path: Path) -> None:
    config = tmp_path / "api.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "prometheus": {"url": "http://127.0.0.1:9"},
                "tokens": [
                    {"name": "a", "role": "admin", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}
                ],
            }
        )
    )
    code = (
        "from metrics_api.wsgi import app\n"
        "c = app.test_client()\n"
        f"h = {{'Authorization': 'Bearer {TOKEN}'}}\n"
        "r = c.get('/api/v1/query', query_string={'query': 'up'}, headers=h)\n"
        "print(r.status_code, c.get('/-/healthy').status_code)\n"
    )
    env = {"NOVACRON_METRICS_API_CONFIG": str(config), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert ok.stdout.split() == ["503", "200"], ok.stderr  # nothing listens on port 9: 503, not a crash
    bad = subprocess.run(
        [sys.executable, "-c", "import metrics_api.wsgi"],
        capture_output=True,
        text=True,
        env={**env, "NOVACRON_METRICS_API_CONFIG": str(tmp_path / "none.yml")},
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert bad.returncode == 2 and "config.file" in bad.stderr


def test_reload_by_api_and_sighup(tmp_path: Path) -> None:
    """Token rotation: POST /-/reload (admin, audited) and SIGHUP; a bad file changes nothing."""
    import json
    import signal

    new_token = "rotated-token-0123456789"

    def write(tokens: list[dict[str, object]], extra: dict[str, object] | None = None) -> None:
        base = [{"name": "ops", "role": "admin", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]
        config.write_text(
            yaml.safe_dump(
                {
                    "prometheus": {"url": prom.url},
                    "tokens": base + tokens,
                    "audit": {"file": str(tmp_path / "audit.jsonl")},
                    **(extra or {}),
                }
            )
        )

    with start_prometheus(tmp_path, []) as prom:
        config = tmp_path / "api.yml"
        write([])
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = ManagedProcess(
            "metrics-api",
            [COMMAND, "--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}"],
            tmp_path / "api.log",
            ready_url=f"{url}/-/healthy",
        )

        def status(token: str) -> int:
            return requests.get(
                f"{url}/api/v1/query",
                params={"query": "vector(1)"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            ).status_code

        def reload(token: str) -> requests.Response:
            return requests.post(f"{url}/-/reload", headers={"Authorization": f"Bearer {token}"}, timeout=10)

        with proc.start():
            assert status(new_token) == 401
            write(
                [
                    {
                        "name": "new",
                        "role": "viewer",
                        "tenants": ["acme"],
                        "sha256": hashlib.sha256(new_token.encode()).hexdigest(),
                    }
                ]
            )
            assert reload(TOKEN).status_code == 200
            assert status(new_token) == 200
            assert reload(new_token).status_code == 403  # viewers cannot reload
            write([], {"limits": {"max_series": -1}})
            bad = reload(TOKEN)
            assert bad.status_code == 400 and "limits.max_series" in bad.json()["error"]
            assert status(new_token) == 200  # the running config is kept
            write([])
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGHUP)
            assert wait_until(lambda: status(new_token) == 401, 30)
        records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert any(r.get("event") == "config_reloaded" and r["principal"] == "ops" for r in records)
