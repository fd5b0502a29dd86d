"""Likely-cause context in the bridge's notifications: the real sidecar app and API (token-guarded, on a
real port) holding a known incident, the real `novacron-alert-bridge` process, real SMTP, a webhook receiver.

Host kvm-1's CPU breaks first, then its VMs vm-a and vm-b: the sidecar ranks the host as the likely cause. An
anomaly alert on vm-a must reach email (text and HTML), webhook JSON and the alert detail API/UI with that
cause; with the sidecar stopped or hanging, the email still arrives, without it, within the timeout, and the
bridge counts the failure.
"""

from __future__ import annotations

import math
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from alert_bridge.config import parse_config
from alert_bridge.enrichment import Enricher, EnrichmentConfig, parse_enrichment, pick_incident
from alert_bridge.testing import (
    ADMIN_TOKEN,
    WEBHOOK_TOKEN,
    Client,
    Receiver,
    alert,
    bridge_process,
    payload,
    ui_sign_in,
    wait,
)
from analytics_sidecar.config import load_config
from analytics_sidecar.series import Series
from analytics_sidecar.serve import build
from exporters.common.config import ConfigError
from exporters.common.web import serve_in_thread
from stack.processes import ManagedProcess, free_port
from tests.harness import start_smtp
from tests.harness.smtp import SmtpSink

pytestmark = pytest.mark.slow

SIDECAR_TOKEN = "sidecar-token-0123456789abcdef"
STEP = 60.0
N = 800


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _broken(seed: int, at: int) -> np.ndarray:
    rng = random.Random(seed)
    xs = np.array([0.4 + 0.1 * math.sin(i / 60) + rng.gauss(0, 0.01) for i in range(N)])
    xs[at:] += 0.4  # pinned 40 points higher from `at` on
    return xs


class Sidecar:
    """The sidecar's own app (`serve.build`: API guard, anomaly blueprint) fed through its cycle observer."""

    def __init__(self, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        token = tmp / "sidecar.token"
        token.write_text(SIDECAR_TOKEN + "\n")
        cfg_path = tmp / "analytics.yml"
        cfg_path.write_text(yaml.safe_dump({"api": {"token_file": str(token)}}))
        cfg = load_config(str(cfg_path))
        cfg = replace(cfg, prometheus=replace(cfg.prometheus, url=f"http://127.0.0.1:{free_port()}"))
        app, loop = build(cfg, None, "/metrics")
        observe = loop.engine.observer
        assert observe is not None
        now = time.time()
        ts = now - (N - 1 - np.arange(N)) * STEP
        observe("host", "cpu", {"host": "kvm-1"}, Series(ts, _broken(1, 700)))
        self.onset = float(ts[706])
        for vm, seed, at in (("vm-a", 2, 706), ("vm-b", 3, 709)):
            observe(
                "vm", "cpu", {"vm_id": vm, "host": "kvm-1", "tenant": "acme"}, Series(ts, _broken(seed, at))
            )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = serve_in_thread(app, f"127.0.0.1:{self.port}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    car = Sidecar(tmp_path_factory.mktemp("sidecar"))
    try:
        yield car
    finally:
        car.stop()


def start_bridge(
    tmp: Path, smtp: SmtpSink, sidecar_url: str, hook_url: str | None = None, timeout: float = 1.0
) -> ManagedProcess:
    token = tmp / "sidecar.token"
    token.write_text(SIDECAR_TOKEN + "\n")
    channels: dict[str, Any] = {
        "email": {
            "smtp": {"host": smtp.host, "port": smtp.port},
            "from": "bridge@example.org",
            "to": ["ops@x.org"],
        }
    }
    if hook_url:
        channels["hook"] = {"type": "webhook", "url": hook_url}
    config = {
        "channels": channels,
        "delivery": {
            "worker_interval_seconds": 0.05,
            "backoff_base_seconds": 0.1,
            "backoff_max_seconds": 0.5,
        },
        "enrichment": {
            "sidecar_url": sidecar_url,
            "token_file": str(token),
            "timeout_seconds": timeout,
            "cache_seconds": 5,
            "backoff_seconds": 30,
        },
    }
    proc = bridge_process(tmp, config, f"sqlite:///{tmp / 'bridge.db'}")
    return proc.start(ready_timeout=60)


def anomaly_alert(vm: str, starts: float) -> dict[str, Any]:
    return alert(
        "NovaCronVMAnomalyScoreHigh",
        starts=_iso(starts),
        vm_id=vm,
        vm_name=vm,
        resource="cpu",
        host="kvm-1",
        tenant="acme",
        type="anomaly",
        severity="info",
    )


def anomaly_mails(smtp: SmtpSink, count: int) -> list[Any] | None:
    found = [m for m in smtp.messages if "NovaCronVMAnomalyScoreHigh" in m["Subject"]]
    return found if len(found) >= count else None


def failures(bridge: ManagedProcess) -> dict[str, float]:
    text = requests.get(f"{bridge.url}/metrics", timeout=10).text
    return {
        s.labels["reason"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "novacron_bridge_enrichment_failures_total"
    }


def test_email_webhook_and_alert_detail_carry_the_likely_cause(
    sidecar: Sidecar, tmp_path: Path, httpserver: Any
) -> None:
    hook = Receiver()
    httpserver.expect_request("/hook", method="POST").respond_with_handler(hook)
    with start_smtp() as smtp:
        # A sidecar answer held up past the timeout on a loaded machine would drop the context this test is
        # about: a generous timeout here (the timeout itself is the next test's subject).
        bridge = start_bridge(tmp_path, smtp, sidecar.url, httpserver.url_for("/hook"), timeout=10.0)
        try:
            hooks = Client(bridge.url, WEBHOOK_TOKEN)
            resp = hooks.post("/webhook/alertmanager", payload([anomaly_alert("vm-a", sidecar.onset + 120)]))
            assert resp.status_code == 200, resp.text
            mail = smtp.wait_for(lambda m: "NovaCronVMAnomalyScoreHigh" in m["Subject"])
            text = mail.get_body(("plain",)).get_content()
            html = mail.get_body(("html",)).get_content()
            assert "Likely cause: host kvm-1 cpu, anomalous since" in text
            assert "VM vm-a (on kvm-1) cpu" in text and "VM vm-b (on kvm-1) cpu" in text
            assert "Likely cause: host kvm-1 cpu" in html

            wait(lambda: hook.requests)
            context = hook.bodies()[0]["context"]
            assert context["likelyCause"]["kind"] == "host" and context["likelyCause"]["vm_id"] == "kvm-1"
            assert {m["vm_id"] for m in context["correlated"]} == {"vm-a", "vm-b"}
            assert context["summary"].startswith("host kvm-1 cpu")

            admin = Client(bridge.url, ADMIN_TOKEN)
            (row,) = admin.alerts(alertname="NovaCronVMAnomalyScoreHigh")
            detail = wait(lambda: admin.get(f"/api/v1/alerts/{row['id']}").json().get("context"))
            assert detail["likelyCause"]["vm_id"] == "kvm-1" and detail["incident"] == context["incident"]
            browser = requests.Session()
            assert ui_sign_in(browser, bridge.url, ADMIN_TOKEN).ok
            page = browser.get(f"{bridge.url}/ui/alerts/{row['id']}", timeout=10).text
            assert "Likely cause" in page and "host kvm-1 cpu" in page and "vm-b" in page

            # an alert that is not an anomaly alert is sent as before, without asking the sidecar
            hooks.post(
                "/webhook/alertmanager", payload([alert("HostDown", host="kvm-1", severity="critical")])
            )
            plain = smtp.wait_for(lambda m: "HostDown" in m["Subject"])
            assert "Likely cause" not in plain.get_body(("plain",)).get_content()
            assert failures(bridge) == {}
        finally:
            bridge.stop()


def test_sidecar_stopped_or_hanging_email_goes_out_without_context(tmp_path: Path) -> None:
    stopped = Sidecar(tmp_path / "stopped")  # a real sidecar, stopped before the alert arrives
    stopped.stop()
    hanging = socket.socket()  # accepts connections (kernel backlog) but never answers
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(16)
    try:
        with start_smtp() as smtp:
            for name, url, reason in (
                ("down", stopped.url, "unreachable"),
                ("slow", f"http://127.0.0.1:{hanging.getsockname()[1]}", "timeout"),
            ):
                (tmp_path / name).mkdir(exist_ok=True)
                bridge = start_bridge(tmp_path / name, smtp, url)
                try:
                    hooks = Client(bridge.url, WEBHOOK_TOKEN)
                    sent = time.monotonic()
                    alerts = [
                        anomaly_alert("vm-a", time.time() - 60),
                        anomaly_alert("vm-b", time.time() - 60),
                    ]
                    assert hooks.post("/webhook/alertmanager", payload(alerts)).status_code == 200
                    mails = wait(lambda: anomaly_mails(smtp, 2), timeout=15)
                    took = time.monotonic() - sent
                    # one 1 s timeout at most (then the bridge backs off the sidecar), plus delivery
                    assert took < 1.0 + 4.0, took
                    for mail in mails:
                        assert "Likely cause" not in mail.get_body(("plain",)).get_content()
                    counted = wait(lambda b=bridge, r=reason: _counted(failures(b), r))
                    assert counted.get(reason) == 1.0 and counted.get("backoff") == 1.0, counted
                finally:
                    bridge.stop()
                smtp.messages.clear()
    finally:
        hanging.close()


def _counted(found: dict[str, float], reason: str) -> dict[str, float] | None:
    """Both failures counted (the sidecar's, then the skip while backing off), else None to wait on."""
    return found if reason in found and "backoff" in found else None


def test_enrichment_config_errors_name_the_key() -> None:
    assert not parse_enrichment({}).enabled
    with pytest.raises(ConfigError) as err:
        parse_enrichment({"sidecar_url": "ftp://x"})
    assert err.value.key == "enrichment.sidecar_url"
    with pytest.raises(ConfigError) as err:
        parse_enrichment({"sidecar_url": "http://x", "timeout_seconds": 0})
    assert err.value.key == "enrichment.timeout_seconds"
    with pytest.raises(ConfigError) as err:
        parse_enrichment({"sidecar_url": "http://x", "matches": {}})
    assert "matches" in str(err.value)


def test_pick_incident_prefers_the_alerts_series_nearest_in_time() -> None:
    def inc(ident: str, start: float, *members: tuple[str, str]) -> dict[str, Any]:
        return {"id": ident, "start": start, "members": [{"vm_id": v, "resource": r} for v, r in members]}

    incidents = [
        inc("late", 5000.0, ("vm-a", "cpu")),
        inc("early", 1000.0, ("kvm-1", "cpu"), ("vm-a", "cpu")),
        inc("memory", 1000.0, ("vm-a", "memory")),
    ]
    assert pick_incident(incidents, "vm-a", "cpu", 1100.0)["id"] == "early"
    assert pick_incident(incidents, "vm-a", "cpu", 4900.0)["id"] == "late"
    assert pick_incident(incidents, "vm-a", "disk_read", 1000.0) is not None  # same VM, other resource
    assert pick_incident(incidents, "vm-z", "cpu", 1000.0) is None
    enricher = Enricher(EnrichmentConfig(sidecar_urls=("http://127.0.0.1:9",)))
    assert enricher.enrich({"alert": {"labels": {"vm_id": "vm-a"}}}) == {
        "alert": {"labels": {"vm_id": "vm-a"}}
    }


def test_novacron_up_points_the_bridge_at_its_sidecar_with_the_sidecars_token(tmp_path: Path) -> None:
    from stack.config import load_stack_config
    from stack.plan import plan_stack

    plan = plan_stack(load_stack_config(None, str(tmp_path / "state")))
    analytics = next(s for s in plan.services if s.name == "analytics")
    bridge_yml = yaml.safe_load((tmp_path / "state" / "alert-bridge" / "bridge.yml").read_text())
    enrichment = parse_config(bridge_yml).enrichment
    assert len(enrichment.sidecar_urls) == 1 and enrichment.sidecar_urls[0].endswith(f":{analytics.port}")
    assert enrichment.token == analytics.env["NOVACRON_ANALYTICS_TOKEN"]


def test_enricher_caches_per_vm_and_counts_bad_answers(httpserver: Any) -> None:
    incident = {
        "id": "1-host-kvm-1-cpu",
        "start": 1000.0,
        "ongoing": True,
        "members": [
            {"kind": "host", "vm_id": "kvm-1", "resource": "cpu", "onset": 1000.0, "cause_score": 0.9},
            {"kind": "vm", "vm_id": "vm-a", "resource": "cpu", "host": "kvm-1", "onset": 1060.0},
        ],
    }
    httpserver.expect_request(
        "/api/v1/anomalies/incidents",
        query_string={"vm_id": "vm-a", "since": "21600"},
        headers={"Authorization": "Bearer t0ken"},
    ).respond_with_json({"status": "success", "data": {"incidents": [incident]}})
    httpserver.expect_request(
        "/api/v1/anomalies/incidents", query_string={"vm_id": "vm-b", "since": "21600"}
    ).respond_with_data("<html>proxy error</html>")
    httpserver.expect_request(
        "/api/v1/anomalies/incidents", query_string={"vm_id": "vm-c", "since": "21600"}
    ).respond_with_json({"status": "error"}, status=401)
    reasons: list[str] = []
    cfg = EnrichmentConfig(
        sidecar_urls=(httpserver.url_for("").rstrip("/"),), token="t0ken", cache_seconds=60
    )
    enricher = Enricher(cfg, reasons.append)

    def note(vm: str) -> dict[str, Any]:
        labels = {"vm_id": vm, "resource": "cpu", "type": "anomaly"}
        return {"kind": "firing", "alert": {"labels": labels, "startsAt": "1970-01-01T00:18:00.000Z"}}

    first = enricher.enrich(note("vm-a"))
    assert first["context"]["likelyCause"]["vm_id"] == "kvm-1"
    assert [m["vm_id"] for m in first["context"]["correlated"]] == ["vm-a"]
    assert enricher.enrich(note("vm-a")) == first  # from the cache
    assert len(httpserver.log) == 1
    assert "context" not in enricher.enrich(note("vm-b")) and "context" not in enricher.enrich(note("vm-c"))
    assert reasons == ["invalid", "http"]
    other = note("vm-a")
    other["alert"]["labels"]["type"] = "capacity"
    assert enricher.enrich(other) == other  # not an anomaly alert: the sidecar is not asked
    assert len(httpserver.log) == 3


def test_sharded_sidecars_are_each_asked_and_a_down_shard_is_counted(httpserver: Any) -> None:
    """With `--shard i/n` sidecars a VM's incident lives on its own shard: the bridge asks each one."""
    incident = {
        "id": "7-host-kvm-2-cpu",
        "start": 1000.0,
        "ongoing": True,
        "members": [
            {"kind": "host", "vm_id": "kvm-2", "resource": "cpu", "onset": 1000.0, "cause_score": 0.8},
            {"kind": "vm", "vm_id": "vm-s", "resource": "cpu", "host": "kvm-2", "onset": 1030.0},
        ],
    }
    httpserver.expect_request("/shard1/api/v1/anomalies/incidents").respond_with_json(
        {"status": "success", "data": {"incidents": [incident]}}
    )
    cfg = parse_config({"enrichment": {"sidecar_url": ["http://127.0.0.1:9", httpserver.url_for("/shard1")]}})
    reasons: list[str] = []
    enricher = Enricher(cfg.enrichment, reasons.append)
    labels = {"vm_id": "vm-s", "resource": "cpu", "type": "anomaly"}
    payload = enricher.enrich({"alert": {"labels": labels, "startsAt": "1970-01-01T00:17:00.000Z"}})
    assert payload["context"]["likelyCause"]["vm_id"] == "kvm-2"
    assert reasons == ["unreachable"]  # the dead shard is counted, the answer still comes from the live one
    with pytest.raises(ConfigError, match="enrichment.sidecar_url"):
        parse_config({"enrichment": {"sidecar_url": ["http://ok:1", "ftp://no"]}})
