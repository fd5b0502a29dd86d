"""Walking skeleton end to end, real components: QEMU guest off, rule, Alertmanager, bridge, email."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from stack.plan import console_script, rule_files, secret_file
from stack.processes import ManagedProcess, free_port
from stack.rules_cmd import RULES_DIR
from tests.harness import QemuGuest, SmtpSink, libvirt_exporter, start_alertmanager, start_prometheus

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"


def _bridge(tmp: Path, smtp: SmtpSink, token_file: Path, am_url: str) -> ManagedProcess:
    config = {
        "channels": {
            "email": {
                "type": "email",
                "from": "novacron@example.test",
                "to": ["oncall@example.test"],
                "smtp": {"host": smtp.host, "port": smtp.port},
            }
        },
        "routing": {"default_channels": ["email"]},
        "auth": {"tokens": [{"name": "alertmanager", "role": "webhook", "token_file": str(token_file)}]},
        "alertmanager": {"urls": [am_url]},
    }
    (tmp / "bridge.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = ManagedProcess(
        "alert-bridge",
        [
            console_script("novacron-alert-bridge"),
            f"--web.listen-address=127.0.0.1:{port}",
            f"--config.file={tmp / 'bridge.yml'}",
            f"--storage.url=sqlite:///{tmp / 'bridge.db'}",
        ],
        tmp / "bridge.log",
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env={"NOVACRON_BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN},
        url=f"http://127.0.0.1:{port}",
    )
    return proc.start()


def _routing_config(bridge_url: str, token_file: Path) -> dict[str, object]:
    # The shipped routing config, with its bridge receivers pointed at this test's bridge.
    config = yaml.safe_load((RULES_DIR / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{bridge_url}/webhook/alertmanager"
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return config


@pytest.fixture
def pipeline(tmp_path: Path, smtp_server: SmtpSink, qemu_guest: QemuGuest) -> Iterator[dict[str, Any]]:
    token_file = secret_file(tmp_path, "bridge_token")
    null_route = {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}
    with (
        libvirt_exporter(tmp_path, qemu_guest.uri).start() as exporter,
        start_alertmanager(tmp_path, null_route) as am,
        _bridge(tmp_path, smtp_server, token_file, am.url) as bridge,
    ):
        # Alertmanager needs the bridge's URL, the bridge needs Alertmanager's: configure, then reload.
        am.config_path.write_text(yaml.safe_dump(_routing_config(bridge.url, token_file)))
        requests.post(f"{am.url}/-/reload", timeout=10).raise_for_status()
        scrape = [
            {"job_name": "libvirt", "static_configs": [{"targets": [exporter.url.removeprefix("http://")]}]}
        ]
        with start_prometheus(
            tmp_path, scrape, rule_files=rule_files(), alertmanagers=[am.url.removeprefix("http://")]
        ) as prom:
            yield {"prom": prom, "am": am, "bridge": bridge, "guest": qemu_guest, "smtp": smtp_server}


def _bridge_alerts(bridge_url: str, vm_name: str) -> list[dict[str, Any]]:
    resp = requests.get(
        f"{bridge_url}/api/v1/alerts",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        params={"alertname": "NovaCronVMNotRunning"},
        timeout=10,
    )
    resp.raise_for_status()
    body = resp.json()
    items = body["alerts"] if isinstance(body, dict) else body
    return [
        a
        for a in items
        if a["labels"].get("alertname") == "NovaCronVMNotRunning" and a["labels"].get("vm_name") == vm_name
    ]


def _wait(check: Callable[[], list[dict[str, Any]]], timeout: float, what: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_guest_shut_off_pages_by_email_and_resolves_when_started(pipeline: dict[str, Any]) -> None:
    prom, bridge, guest, smtp = pipeline["prom"], pipeline["bridge"], pipeline["guest"], pipeline["smtp"]
    # The exporter sees the real guest running, with its CPU time, before anything happens.
    prom.wait_for(f'novacron_vm_state{{vm_id="{guest.uuid}"}} == 1', timeout=60)
    info = prom.query(f'novacron_vm_info{{vm_id="{guest.uuid}"}}')
    assert info[0]["metric"]["vm_name"] == guest.name
    prom.wait_for(f'novacron_vm_cpu_seconds_total{{vm_id="{guest.uuid}"}} > 0', timeout=60)

    guest.shutoff()

    firing = _wait(
        lambda: [
            a
            for a in _bridge_alerts(bridge.url, guest.name)
            if a.get("status", a.get("state")) in ("firing", "acknowledged")
        ],
        90,
        "the bridge to list the alert firing",
    )
    assert firing[0]["labels"]["severity"] == "critical"
    # The page for this alert, not whichever mail naming the guest comes first (another rule may mail too).
    mail = smtp.wait_for(
        lambda m: guest.name in (body := m.get_body(("plain",)).get_content())
        and "NovaCronVMNotRunning" in body + str(m["Subject"]),
        timeout=60,
    )
    text = mail.get_body(("plain",)).get_content()
    assert guest.uuid in text
    assert "severity" in text and "critical" in text

    guest.start()

    resolved = _wait(
        lambda: [
            a for a in _bridge_alerts(bridge.url, guest.name) if a.get("status", a.get("state")) == "resolved"
        ],
        120,
        "the bridge to show the alert resolved",
    )
    assert resolved[0]["labels"]["vm_id"] == guest.uuid
