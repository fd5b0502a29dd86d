"""Run a planned stack in the foreground: start in order, print URLs, supervise, stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import FrameType

from stack.config import StackConfig
from stack.plan import Service, StackPlan
from stack.processes import ManagedProcess, ProcessError, port_in_use

STATE_FILE = "stack.json"


class StackError(RuntimeError):
    """The stack cannot start: a busy port, a missing binary, a child that would not come up."""


def check_ports(cfg: StackConfig, plan: StackPlan) -> None:
    busy = [
        f"{svc.name} ({cfg.listen_host}:{svc.port})"
        for svc in plan.services
        if port_in_use(cfg.listen_host, svc.port)
    ]
    if busy:
        raise StackError(
            "port already in use: "
            + ", ".join(busy)
            + ". Stop what holds it (`novacron down` if it is a previous stack) "
            "or choose other ports under `ports:` in the stack config."
        )


def _process(cfg: StackConfig, svc: Service) -> ManagedProcess:
    return ManagedProcess(
        svc.name,
        svc.argv,
        cfg.state_dir / "logs" / f"{svc.name}.log",
        ready_url=f"http://{cfg.listen_host}:{svc.port}{svc.ready_path}",
        env=svc.env,
    )


def write_state(cfg: StackConfig, plan: StackPlan, procs: list[ManagedProcess]) -> None:
    state = {
        "pid": os.getpid(),
        "urls": plan.urls,
        "services": [
            {
                "name": svc.name,
                "pid": p.proc.pid if p.proc else None,
                "url": f"http://{cfg.listen_host}:{svc.port}",
                "ready_path": svc.ready_path,
            }
            for svc, p in zip(plan.services, procs, strict=False)
        ],
    }
    (cfg.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def run_stack(cfg: StackConfig, plan: StackPlan, ready_timeout: float = 60.0) -> int:
    """Start every service, print the URLs and wait until Ctrl-C, SIGTERM (`novacron down`) or a crash."""
    check_ports(cfg, plan)
    procs: list[ManagedProcess] = []
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        for svc in plan.services:
            print(f"starting {svc.description or svc.name} on {cfg.listen_host}:{svc.port}", flush=True)
            proc = _process(cfg, svc)
            procs.append(proc)
            proc.start(ready_timeout)
            write_state(cfg, plan, procs)
        _print_summary(cfg, plan)
        return _supervise(plan, procs)
    except ProcessError as exc:
        print(f"novacron: {exc}", flush=True)
        return 1
    except (_Stop, KeyboardInterrupt):
        print("stopping...", flush=True)
        return 0
    finally:
        for proc in reversed(procs):
            proc.stop()
        (cfg.state_dir / STATE_FILE).unlink(missing_ok=True)
        print("stack stopped", flush=True)


def _supervise(plan: StackPlan, procs: list[ManagedProcess]) -> int:
    while True:
        for svc, proc in zip(plan.services, procs, strict=True):
            if not proc.alive():
                print(
                    f"novacron: {svc.name} exited unexpectedly; last log lines:\n{proc.log_tail()}",
                    flush=True,
                )
                return 1
        time.sleep(1)


def _print_summary(cfg: StackConfig, plan: StackPlan) -> None:
    lines = ["", "NovaCron monitoring stack is up:"]
    for svc in plan.services:
        lines.append(f"  {svc.description or svc.name:<45} http://{cfg.listen_host}:{svc.port}/")
    lines += [f"  {note}" for note in plan.notes]
    lines += [f"  state and logs: {cfg.state_dir}", "  Ctrl-C or `novacron down` stops everything.", ""]
    print("\n".join(lines), flush=True)


def read_state(state_dir: Path) -> dict[str, object] | None:
    try:
        return dict(json.loads((state_dir / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return None
