"""`novacron up`: every Prometheus target up within 60 s, `down` stops it, errors are clear."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from stack.processes import ManagedProcess, ProcessError, wait_until
from tests.harness import free_port_block

pytestmark = pytest.mark.slow

NOVACRON = [sys.executable, "-m", "stack.cli"]


def _ports() -> dict[str, int]:
    """The stack's ports from one block (the demo hosts take 3 consecutive exporter ports at the end)."""
    names = ("prometheus", "alertmanager", "alert_bridge", "analytics", "metrics_api", "cloud_exporter")
    start = free_port_block(len(names) + 3)
    return {**{n: start + i for i, n in enumerate(names)}, "libvirt_exporter": start + len(names)}


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _config(tmp: Path, ports: dict[str, int]) -> Path:
    path = tmp / "stack.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "ports": ports,
                "scrape_interval": "2s",
                "evaluation_interval": "2s",
                "libvirt": {"demo_hosts": 2, "demo_vms_per_host": 10},
            }
        )
    )
    return path


def test_up_brings_every_target_up_then_down_stops_everything(tmp_path: Path) -> None:
    ports = _ports()
    cfg = _config(tmp_path, ports)
    base = [*NOVACRON, f"--config.file={cfg}", f"--state-dir={tmp_path / 'state'}"]
    up = subprocess.Popen([*base, "up"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        prom = f"http://127.0.0.1:{ports['prometheus']}"
        deadline = time.monotonic() + 60  # the issue: every target up within 60 s of `novacron up`
        targets: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            try:
                targets = requests.get(f"{prom}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            except requests.RequestException:
                targets = []
            if targets and all(t["health"] == "up" for t in targets):
                break
            time.sleep(1)
        if not targets and up.poll() is not None:
            pytest.fail(f"novacron up exited {up.returncode}:\n{up.communicate()[0]}")
        jobs = {t["labels"]["job"] for t in targets}  # type: ignore[index]
        assert {
            "prometheus",
            "libvirt",
            "alert-bridge",
            "alertmanager",
            "analytics",
            "metrics-api",
        } <= jobs, targets
        assert all(t["health"] == "up" for t in targets), [(t["scrapeUrl"], t["lastError"]) for t in targets]
        status = subprocess.run([*base, "status"], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout
        assert "prometheus" in status.stdout and "DOWN" not in status.stdout

        def vms_and_hosts() -> tuple[float, set[str]]:
            def query(expr: str) -> list[dict]:
                resp = requests.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5)
                return list(resp.json()["data"]["result"])

            vms = query("count(novacron_vm_info)")
            hosts = {h["metric"]["host"] for h in query("count by (host) (novacron_vm_info)")}
            return (float(vms[0]["value"][1]) if vms else 0.0), hosts

        def fleet_in() -> bool:
            vms, hosts = vms_and_hosts()
            return vms >= 20 and {"kvm00", "kvm01"} <= hosts  # each demo host named itself

        # The targets API may say `up` a moment before that scrape's samples are committed: wait for them.
        assert wait_until(fleet_in, timeout=30), vms_and_hosts()
        down = subprocess.run([*base, "down"], capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stdout + down.stderr
        out, _ = up.communicate(timeout=60)
        assert "NovaCron monitoring stack is up" in out
        assert f"http://127.0.0.1:{ports['prometheus']}/" in out
        assert "demo fleet" in out
        assert not _any_port_held(ports), "a port is still held after novacron down"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def _any_port_held(ports: dict[str, int]) -> bool:
    """True when any of the stack's ports still accepts connections."""
    return any(not _free(p) for p in ports.values())


def test_busy_port_gives_a_clear_message_not_a_traceback(tmp_path: Path) -> None:
    ports = _ports()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports["prometheus"]))
        holder.listen()
        result = subprocess.run(
            [
                *NOVACRON,
                f"--config.file={_config(tmp_path, ports)}",
                f"--state-dir={tmp_path / 'state'}",
                "up",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "port already in use" in result.stderr and "prometheus" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_bad_stack_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yml"
    cfg.write_text(yaml.safe_dump({"ports": {"prometheus": "ninety"}}))
    result = subprocess.run(
        [*NOVACRON, f"--config.file={cfg}", "up"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "ports.prometheus" in result.stderr
    cfg.write_text(yaml.safe_dump({"scrape_intervall": "5s"}))
    result = subprocess.run(
        [*NOVACRON, f"--config.file={cfg}", "up"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "scrape_intervall" in result.stderr


def test_every_console_script_answers_help() -> None:
    bindir = Path(sys.executable).parent
    for script in (
        "novacron",
        "novacron-libvirt-exporter",
        "novacron-cloud-exporter",
        "novacron-alert-bridge",
        "novacron-analytics",
        "novacron-dashboards",
        "novacron-metrics-api",
    ):
        result = subprocess.run([str(bindir / script), "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{script}: {result.stderr}"
        assert "usage:" in result.stdout


def test_generated_alertmanager_config_passes_amtool_with_and_without_a_mail_relay(tmp_path: Path) -> None:
    from stack.plan import alertmanager_config

    for relay, mailers in (("", 0), ("relay.example", 1)):
        config = alertmanager_config("http://127.0.0.1:1234", relay, 2525)
        path = tmp_path / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config))
        (tmp_path / "bridge_token").write_text("x" * 32)
        check = subprocess.run(
            ["amtool", "check-config", str(path)], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert sum(1 for r in config["receivers"] if r.get("email_configs")) == mailers
        hooks = [h["url"] for r in config["receivers"] for h in r.get("webhook_configs", [])]
        assert hooks and all(u.startswith("http://127.0.0.1:1234/") for u in hooks)


@pytest.mark.parametrize("binary", ["/nonexistent/bin/prometheus", "novacron-no-such-binary"])
def test_missing_binary_is_a_clear_message_not_a_traceback(tmp_path: Path, binary: str) -> None:
    proc = ManagedProcess("prometheus", [binary, "--version"], tmp_path / "p.log")
    with pytest.raises(
        ProcessError, match=r"prometheus: '.+' is not installed \(run `bash scripts/setup.sh`\)"
    ):
        proc.start()
    assert proc.proc is None  # nothing was started, nothing to clean up


def _process_start(pid: int) -> str | None:
    """The start time of a live (not zombie) process from /proc/PID/stat, None when there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]  # state, starttime (fields 3 and 22)


def test_ctrl_c_stops_every_component_and_frees_every_port(tmp_path: Path) -> None:
    """Ctrl-C in the terminal is SIGINT to `novacron up` (its children run in their own sessions)."""
    import json
    import signal
    import threading

    ports = _ports()
    cfg = tmp_path / "stack.yml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "ports": ports,
                "libvirt": {"system_uri": "off", "demo_hosts": 1, "demo_vms_per_host": 3},
                "analytics": {"enabled": False},
                "metrics_api": {"enabled": False},
            }
        )
    )
    state = tmp_path / "state"
    up = subprocess.Popen(
        [*NOVACRON, f"--config.file={cfg}", f"--state-dir={state}", "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert up.stdout is not None
        for line in up.stdout:
            lines.append(line)
            if "stack is up" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(90), "".join(lines)
        pids = [s["pid"] for s in json.loads((state / "stack.json").read_text())["services"]]
        assert len(pids) >= 4 and all(pids)
        started = {pid: _process_start(pid) for pid in pids}
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
        reader.join(timeout=10)
        out = "".join(lines)
        assert "stopping..." in out and "stack stopped" in out and "Traceback" not in out
        assert not _any_port_held(ports), "a port is still held after Ctrl-C"
        # Every child is gone, not orphaned. A pid alone could name a newer process on a busy machine (or a
        # zombie not yet reaped by whoever adopted it): the same pid and start time, still running, is ours.
        survivors = [pid for pid in pids if started[pid] is not None and _process_start(pid) == started[pid]]
        assert not survivors, f"processes {survivors} survived Ctrl-C"
        assert not (state / "stack.json").exists()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
