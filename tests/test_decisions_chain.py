"""The whole decision chain, every part real: libvirt exporter -> Prometheus (rules/decisions.rules.yml) ->
`novacron-analytics serve` -> Prometheus alert -> Alertmanager -> two `novacron-alert-bridge` processes with
an automation hook -> a webhook receiver. The live bridge calls NovaCron exactly once, signed; a dry-run
bridge receiving the same alert calls nothing and records what it would have sent.

The fleet is one test-driver host of 12 VMs in four groups (`<novacron:group>` acme-web, globex-web,
initech-web, umbrella-web). The test driver's CPU counters stand still, so two days of CPU history are
backfilled under the VMs' real ids: acme-web runs at 95 % of its vCPUs (hot), the others at 50 % (steady).
The rule file is the shipped one with 1 s evaluation and 1 s holds, so the chain runs in seconds.
"""

from __future__ import annotations

import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from alert_bridge.testing import ADMIN_TOKEN, WEBHOOK_TOKEN, Client, Receiver, base_config, bridge_process
from exporters.libvirt.domainxml import NOVACRON_NS
from stack.fleet import fleet_xml
from stack.plan import console_script
from stack.processes import ManagedProcess, free_port, wait_until
from stack.servers import Alertmanager, Prometheus, prometheus_config
from tests.harness import libvirt_exporter
from tests.harness.backfill import History, create_blocks
from tests.test_decisions_automation import SECRET, signed

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
STEP = 300
DAYS = 2
HOT, BUSY, STEADY = "acme-web", 0.95, 0.5
HOST_CPUS = 64


def start_all(procs: list[ManagedProcess]) -> None:
    """Start processes side by side (their start-up is mostly Python imports); raise the first failure."""
    with ThreadPoolExecutor(len(procs)) as pool:
        for future in [pool.submit(p.start) for p in procs]:
            future.result()


def stop_all(procs: list[ManagedProcess]) -> None:
    """Stop the sidecars first (a stopping sidecar finishes its cycle, which needs Prometheus), then the
    rest; each wave side by side (SIGTERM, then SIGKILL after the grace). Unstarted ones are skipped."""
    sidecars = [p for p in procs if p.name.startswith("analytics")]
    for wave in (sidecars, [p for p in procs if p not in sidecars]):
        with ThreadPoolExecutor(max(1, len(wave))) as pool:
            list(pool.map(lambda p: p.stop(), wave))


def fast_rules(src: Path, dst: Path) -> Path:
    """The shipped rule file with 1 s evaluation and 1 s holds (the expressions are untouched)."""
    doc = yaml.safe_load(src.read_text())
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


def _domains(node: Path) -> list[tuple[str, str, int]]:
    """(uuid, group, vCPUs) of each domain of a test-driver node file."""
    out = []
    for d in ET.parse(node).getroot().iter("domain"):
        group = d.findtext(f"metadata/{{{NOVACRON_NS}}}instance/{{{NOVACRON_NS}}}group") or ""
        out.append((str(d.findtext("uuid")), group, int(d.findtext("vcpu") or 0)))
    return out


def _backfill(domains: list[tuple[str, str, int]], prom_data: Path, tmp: Path) -> None:
    """Two days of CPU counters: the hot group's VMs use 95 % of their vCPUs, the others 50 %.

    The newest sample is a second old, not on the 5-minute grid: the deciders' rate() over 15 minutes is
    exact only while that sample is less than 1.1 steps (330 s) old, and a grid-aligned one could be 299 s
    old already, leaving a slow start-up half a minute before the hot group's load seemed to drop."""
    end = math.floor(time.time()) - 1
    ts = np.arange(end - DAYS * 86400, end + 1, STEP, dtype=float)
    om = History()
    for vm, group, vcpus in domains:
        cores = vcpus * (BUSY if group == HOT else STEADY)
        om.add("novacron_vm_cpu_seconds_total", {"vm_id": vm}, ts, cores * (ts - ts[0]))
    history = tmp / "history.om"
    om.write(history)
    prom_data.mkdir(parents=True)
    create_blocks(history, prom_data)


def _bridge_config(url: str, secret_file: Path, dry_run: bool) -> dict[str, Any]:
    """The hooks of docs/decisions.md: scaling, disruptive migration, tenant freeze."""
    return base_config(
        channels={"novacron": {"type": "webhook", "url": url, "secret_file": str(secret_file)}},
        routing={"default_channels": []},
        automation={
            "dry_run": dry_run,
            "hooks": [
                {
                    "name": "scale",
                    "channel": "novacron",
                    "action": "scale_group",
                    "match_re": {"alertname": "NovaCronGroupScale(Out|In)Recommended"},
                },
                {
                    "name": "migrate",
                    "channel": "novacron",
                    "action": "migrate_vm",
                    "disruptive": True,
                    "match_re": {"alertname": "NovaCron(Migration|VMEvacuation)Recommended"},
                },
                {
                    "name": "freeze",
                    "channel": "novacron",
                    "action": "freeze_changes",
                    "match": {"alertname": "NovaCronTenantErrorBudgetExhausted"},
                },
            ],
        },
    )


def _am_config(bridges: dict[str, int], token_file: Path) -> dict[str, Any]:
    """Every alert to both bridges (the live one and the dry-run one)."""

    def receiver(name: str, port: int) -> dict[str, Any]:
        hook = {
            "url": f"http://127.0.0.1:{port}/webhook/alertmanager",
            "send_resolved": True,
            "http_config": {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}},
        }
        return {"name": name, "webhook_configs": [hook]}

    return {
        "route": {
            "receiver": "live",
            "group_by": ["alertname", "group"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
            "routes": [{"receiver": "live", "continue": True}, {"receiver": "dry"}],
        },
        "receivers": [receiver(name, port) for name, port in bridges.items()],
    }


@pytest.fixture
def chain(tmp_path: Path, httpserver: Any) -> Iterator[dict[str, Any]]:
    node = tmp_path / "node.xml"
    node.write_text(fleet_xml(12, seed=11, host="kvm-chain", cpus=HOST_CPUS))
    domains = _domains(node)
    assert {g for _, g, _ in domains} == {"acme-web", "globex-web", "initech-web", "umbrella-web"}
    demand = sum(v * (BUSY if g == HOT else STEADY) for _, g, v in domains)
    assert demand < 0.75 * HOST_CPUS  # the host itself is not hot: the only decision is the group's
    _backfill(domains, tmp_path / "prometheus" / "data", tmp_path)

    receivers = {"live": Receiver(), "dry": Receiver()}
    for name, rec in receivers.items():
        httpserver.expect_request(f"/{name}", method="POST").respond_with_handler(rec)
    secret = tmp_path / "automation.secret"
    secret.write_text(SECRET)
    token = tmp_path / "analytics.token"
    token.write_text("chain-token")
    (tmp_path / "analytics.yml").write_text(
        yaml.safe_dump(
            {
                "analysis": {"lookback": f"{DAYS}d", "rate_window": "15m", "horizons": ["1h"]},
                "api": {"token_file": str(token)},
                # The test driver reports no free host memory: count what its VMs were given as used.
                "queries": {"host_memory_used_bytes": "max by (host) (novacron_host_memory_allocated_bytes)"},
                "decisions": {"scaling": {"scale_out_window": "2s", "cooldown": "1h"}},
            }
        )
    )
    webhook_token = tmp_path / "webhook.token"
    webhook_token.write_text(WEBHOOK_TOKEN)
    ports = {name: free_port() for name in ("exporter", "sidecar", "live", "dry")}
    exporter = libvirt_exporter(
        tmp_path, f"test://{node}", "--libvirt.hostname=kvm-chain", port=ports["exporter"]
    )
    bridges = {
        name: bridge_process(
            tmp_path / name,
            _bridge_config(httpserver.url_for(f"/{name}"), secret, dry_run=name == "dry"),
            f"sqlite:///{tmp_path / name / 'bridge.db'}",
            port=ports[name],
        )
        for name in ("live", "dry")
    }
    am = Alertmanager(tmp_path / "alertmanager", _am_config({n: ports[n] for n in bridges}, webhook_token))
    procs: list[ManagedProcess] = [exporter, *bridges.values(), am]
    try:
        start_all(procs)
        rules = fast_rules(REPO / "rules" / "decisions.rules.yml", tmp_path / "decisions.rules.yml")
        jobs = [
            {"job_name": "libvirt", "static_configs": [{"targets": [f"127.0.0.1:{ports['exporter']}"]}]},
            {"job_name": "analytics", "static_configs": [{"targets": [f"127.0.0.1:{ports['sidecar']}"]}]},
        ]
        config = prometheus_config(
            jobs, [rules], [f"127.0.0.1:{am.port}"], scrape_interval="1s", evaluation_interval="1s"
        )
        prom = Prometheus(tmp_path / "prometheus", config)
        procs.append(prom.start())
        prom.wait_for('count(novacron_vm_info{novacron_group!=""}) == 12', timeout=30)
        procs.append(
            ManagedProcess(
                "analytics",
                [
                    console_script("novacron-analytics"),
                    "serve",
                    f"--config.file={tmp_path / 'analytics.yml'}",
                    f"--prometheus.url={prom.url}",
                    "--interval=1s",
                    f"--state.dir={tmp_path / 'analytics-state'}",
                    f"--web.listen-address=127.0.0.1:{ports['sidecar']}",
                ],
                tmp_path / "analytics.log",
                ready_url=f"http://127.0.0.1:{ports['sidecar']}/metrics",
            ).start()
        )
        yield {
            "prom": prom,
            "receivers": receivers,
            "bridges": {n: Client(b.url, ADMIN_TOKEN) for n, b in bridges.items()},
            "sidecar_audit": tmp_path / "analytics-state" / "audit.log",
        }
    finally:
        stop_all(procs)


def _automation_audit(client: Client) -> list[dict[str, Any]]:
    return [a for a in client.get("/api/v1/audit").json() if a["action"].startswith("automation:")]


def test_a_hot_group_reaches_novacron_automation_once_signed_and_never_in_dry_run(
    chain: dict[str, Any],
) -> None:
    prom, live, dry = chain["prom"], chain["receivers"]["live"], chain["receivers"]["dry"]
    # The sidecar decides: the hot group scales out; Prometheus turns the decision into an alert.
    firing = prom.wait_for('ALERTS{alertname="NovaCronGroupScaleOutRecommended", alertstate="firing"}', 90)
    assert [r["metric"]["group"] for r in firing] == [HOT]
    assert wait_until(lambda: bool(live.requests), timeout=60, interval=0.1)
    dry_audit = wait_until(
        lambda: any(a["action"] == "automation:dry_run" for a in _automation_audit(chain["bridges"]["dry"])),
        timeout=60,
        interval=0.2,
    )
    assert dry_audit
    # Absence of a second call cannot be waited for: let more cycles, evaluations and Alertmanager flushes
    # pass (sidecar and rules every 1 s, group_interval 1 s).
    time.sleep(2)

    assert len(live.requests) == 1
    headers, body = live.requests[0]
    assert signed(headers, body)
    sent = live.bodies()[0]
    assert sent["type"] == "automation" and sent["action"] == "scale_group" and sent["dry_run"] is False
    [desired] = prom.query(f'novacron_group_desired_vms{{group="{HOT}"}}')
    assert int(float(desired["value"][1])) >= 4  # ceil(3 VMs x 0.95 / 0.6), at least one more than now
    assert sent["decision"] == {"group": HOT, "direction": "out", "desired_vms": desired["value"][1]}
    assert sent["alert"]["alertname"] == "NovaCronGroupScaleOutRecommended"
    assert dry.requests == []  # dry run: nothing is called ...
    recorded = [a for a in _automation_audit(chain["bridges"]["dry"]) if a["action"] == "automation:dry_run"]
    assert len(recorded) == 1  # ... and what would have been sent is in the audit trail, once
    assert HOT in str(recorded[0])
    assert [a["action"] for a in _automation_audit(chain["bridges"]["live"])] == ["automation:requested"]
    # Only the hot group decided (the steady ones did not), and the sidecar counted the policy event once.
    signals = prom.query('novacron_group_scaling_signal{direction!="none"} == 1')
    assert [(r["metric"]["group"], r["metric"]["direction"]) for r in signals] == [(HOT, "out")]
    events = prom.query('novacron_decision_events_total{kind="scale_out"}')
    assert [float(r["value"][1]) for r in events] == [1.0]
    assert f"kind=scale_out subject={HOT}" in chain["sidecar_audit"].read_text()
