"""Alert latency with the shipped defaults: a real QEMU guest is shut off -> the alert bridge has the page.

Real components on loopback: libvirtd + a QEMU guest (TCG), the libvirt exporter, Prometheus with the
shipped rules, Alertmanager with the shipped routing, and the real alert bridge (SQLite). Each trial measures,
from the moment `virDomainDestroy` returns:

    scrape      first Prometheus sample showing the guest not running (scrape interval, exporter collection)
    evaluation  the rule first sees it: the alert becomes pending (`activeAt`; rule-group interval)
    for         pending -> firing (`for:` rounded up to the group interval)
    send        Prometheus -> Alertmanager (Alertmanager's `updatedAt`)
    route       Alertmanager group_wait, webhook POST, bridge intake (the bridge's `lastSeenAt`)

Alertmanager is restarted between trials, so every trial is the first alert of its group (a new incident);
a further alert joining a group already notified waits for `group_interval` instead (docs/rules.md).

    .venv/bin/python bench/alert_latency.py --trials 20

Prints p50/p95 per component and in total, and the 15 s requirement.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import libvirt
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stack.plan import console_script  # noqa: E402
from stack.processes import ManagedProcess, free_port  # noqa: E402
from stack.rulelint import parse_duration  # noqa: E402
from stack.rules_cmd import RULES_DIR, default_rule_files  # noqa: E402
from stack.servers import Alertmanager, Prometheus, prometheus_config  # noqa: E402
from tests.harness import QemuGuest, remove_stale_guests  # noqa: E402

ADMIN = "bench-admin-token-0123456789abcdef"
WEBHOOK_TOKEN = "bench-webhook-token-0123456789abcdef"
REQUIREMENT_S = 15.0


@dataclass
class Trial:
    scrape: float
    evaluation: float
    hold: float
    send: float
    route: float

    @property
    def total(self) -> float:
        return self.scrape + self.evaluation + self.hold + self.send + self.route


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def wait(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class Bench:
    """The pipeline; Alertmanager is started fresh per trial on a fixed port."""

    def __init__(self, work: Path, guest: QemuGuest, scrape_interval: str, knobs: argparse.Namespace) -> None:
        self.knobs = knobs
        self.work, self.guest = work, guest
        self.scrape_seconds = float(parse_duration(scrape_interval).total_seconds())
        self.procs: list[ManagedProcess] = []
        self.am: Alertmanager | None = None
        self.am_port = free_port()
        exp_port, bridge_port, prom_port = free_port(), free_port(), free_port()
        self.bridge_url = f"http://127.0.0.1:{bridge_port}"
        self.start(
            ManagedProcess(
                "libvirt-exporter",
                [
                    console_script("novacron-libvirt-exporter"),
                    f"--libvirt.uri={guest.uri}",
                    f"--web.listen-address=127.0.0.1:{exp_port}",
                ],
                work / "exporter.log",
                ready_url=f"http://127.0.0.1:{exp_port}/metrics",
            )
        )
        token_file = work / "webhook_token"
        token_file.write_text(WEBHOOK_TOKEN)
        bridge_cfg = {
            "auth": {"tokens": [{"name": "alertmanager", "role": "webhook", "token_file": str(token_file)}]},
            "alertmanager": {"urls": [f"http://127.0.0.1:{self.am_port}"]},
        }
        (work / "bridge.yml").write_text(yaml.safe_dump(bridge_cfg))
        self.start(
            ManagedProcess(
                "alert-bridge",
                [
                    console_script("novacron-alert-bridge"),
                    f"--web.listen-address=127.0.0.1:{bridge_port}",
                    f"--config.file={work / 'bridge.yml'}",
                    f"--storage.url=sqlite:///{work / 'bridge.db'}",
                ],
                work / "bridge.log",
                ready_url=f"{self.bridge_url}/healthz",
                env={"NOVACRON_BRIDGE_ADMIN_TOKEN": ADMIN},
            )
        )
        # Shipped defaults: the stack's scrape and global evaluation interval (stack/defaults.yml); the rule
        # files set their own group intervals.
        scrape = [{"job_name": "libvirt", "static_configs": [{"targets": [f"127.0.0.1:{exp_port}"]}]}]
        config = prometheus_config(
            scrape, self.rule_files(), [f"127.0.0.1:{self.am_port}"], scrape_interval, scrape_interval
        )
        self.prom = Prometheus(work / "prometheus", config, port=prom_port)
        self.start(self.prom)

    def start(self, proc: ManagedProcess) -> None:
        proc.start(ready_timeout=60)
        self.procs.append(proc)

    def rule_files(self) -> list[Path]:
        """The shipped rule files; with --for or --group-interval, vm.rules.yml is copied and changed."""
        files = default_rule_files()
        if not (self.knobs.hold or self.knobs.group_interval):
            return files
        vm_rules = yaml.safe_load((RULES_DIR / "vm.rules.yml").read_text())
        for group in vm_rules["groups"]:
            if group["name"] == "novacron-vm-availability":
                group["interval"] = self.knobs.group_interval or group["interval"]
                for rule in group["rules"]:
                    if rule.get("alert") == "NovaCronVMNotRunning":
                        rule["for"] = self.knobs.hold or rule["for"]
        changed = self.work / "vm.rules.yml"
        changed.write_text(yaml.safe_dump(vm_rules, sort_keys=False))
        return [changed if f.name == "vm.rules.yml" else f for f in files]

    def am_config(self) -> dict[str, Any]:
        config = yaml.safe_load((RULES_DIR / "alertmanager" / "alertmanager.yml").read_text())
        for route in config["route"]["routes"]:
            if self.knobs.group_wait and route.get("matchers") == ['severity="critical"']:
                route["group_wait"] = self.knobs.group_wait
        for receiver in config["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = f"{self.bridge_url}/webhook/alertmanager"
        return config

    def fresh_alertmanager(self, n: int) -> None:
        if self.am is not None:
            self.am.stop()
        workdir = self.work / f"am-{n}"
        workdir.mkdir()
        (workdir / "bridge_token").write_text(WEBHOOK_TOKEN)
        self.am = Alertmanager(workdir, self.am_config(), port=self.am_port)
        self.am.start(ready_timeout=30)

    def bridge_episodes(self) -> list[dict[str, Any]]:
        resp = requests.get(
            f"{self.bridge_url}/api/v1/alerts",
            headers={"Authorization": f"Bearer {ADMIN}"},
            params={"label": f"vm_id={self.guest.uuid}", "status": "firing"},
            timeout=5,
        )
        resp.raise_for_status()
        body = resp.json()
        items = body["alerts"] if isinstance(body, dict) else body
        return [a for a in items if a["alertname"] == "NovaCronVMNotRunning" and a["status"] == "firing"]

    def resolve_in_bridge(self) -> None:
        """Close the previous trial's episode (its resolve notification died with that Alertmanager)."""
        for episode in self.bridge_episodes():
            requests.post(
                f"{self.bridge_url}/api/v1/alerts/{episode['id']}/resolve",
                headers={"Authorization": f"Bearer {ADMIN}"},
                json={"reason": "benchmark trial over"},
                timeout=5,
            ).raise_for_status()

    def trial(self, n: int) -> Trial:
        vm = self.guest.uuid
        self.guest.start()
        self.prom.wait_for(f'novacron_vm_state{{vm_id="{vm}"}} == 1', timeout=60, interval=0.2)
        self.prom.wait_for(f'ALERTS{{vm_id="{vm}"}}', timeout=60, predicate=lambda r: not r, interval=0.2)
        self.resolve_in_bridge()
        self.fresh_alertmanager(n)
        # The waits above end just after a scrape; a random pause makes the failure moment uniform in the
        # scrape cycle, as a real failure is.
        time.sleep(random.uniform(0, self.scrape_seconds))
        t0 = time.time()
        self.guest.shutoff()
        episode = wait(
            lambda: [e for e in self.bridge_episodes() if ts(e["lastSeenAt"]) >= t0],
            120,
            "the page at the bridge",
        )[0]
        received = ts(episode["lastSeenAt"])
        fired_at = ts(episode["startsAt"])  # Prometheus sends the firing time as startsAt
        # The rules API gives activeAt to the nanosecond (ALERTS_FOR_STATE holds whole seconds).
        active_at = next(
            ts(a["activeAt"])
            for a in self.prom.api("alerts")["alerts"]
            if a["labels"].get("alertname") == "NovaCronVMNotRunning" and a["labels"].get("vm_id") == vm
        )
        assert self.am is not None
        am_alerts = requests.get(
            f"{self.am.url}/api/v2/alerts", params={"filter": f'vm_id="{vm}"'}, timeout=5
        )
        am_received = min(ts(a["updatedAt"]) for a in am_alerts.json())
        samples = self.prom.api("query", query=f'novacron_vm_state{{vm_id="{vm}"}}[2m]')["result"][0][
            "values"
        ]
        first_off = min(float(t) for t, v in samples if float(t) >= t0 - 0.001 and float(v) != 1)
        return Trial(
            scrape=first_off - t0,
            evaluation=active_at - first_off,
            hold=fired_at - active_at,
            send=am_received - fired_at,
            route=received - am_received,
        )

    def scrape_duration(self) -> float:
        """Mean time Prometheus spent scraping the exporter during the run: part of the evaluation share."""
        result = self.prom.query('avg_over_time(scrape_duration_seconds{job="libvirt"}[30m])')
        return float(result[0]["value"][1]) if result else float("nan")

    def close(self) -> None:
        if self.am is not None:
            self.am.stop()
        for proc in reversed(self.procs):
            proc.stop()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def report(trials: list[Trial], knobs: str) -> dict[str, Any]:
    rows = {}
    for name in ("scrape", "evaluation", "hold", "send", "route", "total"):
        values = [getattr(t, name) for t in trials]
        rows[name] = {"p50": statistics.median(values), "p95": pct(values, 0.95), "max": max(values)}
    total = rows["total"]
    print(f"\nalert latency, QEMU guest off -> alert bridge, {len(trials)} trials; {knobs}")
    print(f"{'component':<12}{'p50 s':>8}{'p95 s':>8}{'max s':>8}{'share of p50':>14}")
    for name, row in rows.items():
        share = row["p50"] / total["p50"] * 100
        print(f"{name:<12}{row['p50']:>8.2f}{row['p95']:>8.2f}{row['max']:>8.2f}{share:>13.0f}%")
    verdict = "meets" if total["p95"] < REQUIREMENT_S else "MISSES"
    print(
        f"requirement: page at the bridge in < {REQUIREMENT_S:.0f} s; p95 {total['p95']:.2f} s {verdict} it"
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--scrape-interval", default="5s", help="shipped default of `novacron up`: 5s")
    parser.add_argument("--for", dest="hold", help="override `for:` of NovaCronVMNotRunning (shipped 5s)")
    parser.add_argument(
        "--group-interval", help="override the availability rule group's interval (shipped 2s)"
    )
    parser.add_argument("--group-wait", help="override group_wait of the critical route (shipped 1s)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    work = Path(f"/tmp/novacron-alert-latency-{int(time.time())}")
    work.mkdir(parents=True)
    remove_stale_guests()
    trials: list[Trial] = []
    with QemuGuest() as guest:
        bench = Bench(work, guest, args.scrape_interval, args)
        try:
            n = 0
            while len(trials) < args.trials:
                n += 1
                try:
                    trial = bench.trial(n)
                except libvirt.libvirtError as exc:
                    # The machine is shared: someone may restart libvirtd. Reconnect and run the trial again.
                    print(f"trial {n}: libvirt error ({exc}); reconnecting and repeating", flush=True)
                    guest._conn = None
                    time.sleep(2)
                    continue
                trials.append(trial)
                print(
                    f"trial {len(trials):>2}: total {trial.total:5.2f} s (scrape {trial.scrape:.2f}, "
                    f"evaluation {trial.evaluation:.2f}, for {trial.hold:.2f}, send {trial.send:.2f}, "
                    f"route {trial.route:.2f})",
                    flush=True,
                )
            scrape_s = bench.scrape_duration()
        finally:
            bench.close()
    knobs = (
        f"scrape {args.scrape_interval}, group interval {args.group_interval or '2s'}, "
        f"for {args.hold or '5s'}, group_wait {args.group_wait or '1s'}"
    )
    rows = report(trials, knobs)
    print(f"mean libvirt scrape duration {scrape_s:.2f} s (the sample is visible to rules only after it)")
    if args.json:
        summary = {
            "knobs": knobs,
            "trials": [t.__dict__ for t in trials],
            "summary": rows,
            "scrape_duration_s": scrape_s,
        }
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
