"""`novacron`: run the whole monitoring stack on one machine (up, down, status) and project tools."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
from pathlib import Path

from exporters.common.cli import run_subcommand
from exporters.common.config import ConfigError, exit_config_error
from stack.config import load_stack_config
from stack.processes import http_ok

# Modules that add subcommands of their own: each provides `register(subparsers)`.
EXTRA_SUBCOMMAND_MODULES = ["stack.rules_cmd", "stack.cardinality"]


def _cmd_up(args: argparse.Namespace) -> int:
    from stack.plan import plan_stack
    from stack.run import StackError, run_stack

    try:
        cfg = load_stack_config(args.config_file, args.state_dir)
    except ConfigError as err:
        exit_config_error("novacron up", err)
    missing = [b for b in ("/usr/bin/prometheus", "/usr/bin/prometheus-alertmanager") if not Path(b).exists()]
    if missing:
        print(
            f"novacron up: missing {', '.join(missing)}: run `bash scripts/setup.sh` "
            "(Debian packages prometheus, prometheus-alertmanager)",
            file=sys.stderr,
        )
        return 1
    try:
        if getattr(args, "profile", "default") == "scale":
            from stack.scale import run_scale

            return run_scale(cfg)
        plan = plan_stack(cfg)
        return run_stack(cfg, plan)
    except StackError as err:
        print(f"novacron up: {err}", file=sys.stderr)
        return 1


def _state_dir(args: argparse.Namespace) -> Path:
    try:
        return load_stack_config(args.config_file, args.state_dir).state_dir
    except ConfigError as err:
        exit_config_error("novacron", err)


def _cmd_down(args: argparse.Namespace) -> int:
    from stack.run import read_state

    state = read_state(_state_dir(args))
    if not state:
        print("novacron down: no running stack found")
        return 0
    pid = int(str(state["pid"]))
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print("novacron down: the stack's process is gone; nothing to stop")
        return 0
    for _ in range(300):
        if not _running(pid):
            print("novacron down: stack stopped")
            return 0
        time.sleep(0.1)
    print("novacron down: the stack did not stop within 30 s", file=sys.stderr)
    return 1


def _running(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by its parent) counts as stopped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _cmd_status(args: argparse.Namespace) -> int:
    from stack.run import read_state

    state = read_state(_state_dir(args))
    if not state:
        print("no running stack")
        return 1
    healthy = True
    for svc in state["services"]:  # type: ignore[attr-defined]
        ok = http_ok(f"{svc['url']}{svc['ready_path']}")
        healthy &= ok
        print(f"{svc['name']:<28} {'up' if ok else 'DOWN':<5} {svc['url']}/")
    return 0 if healthy else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="novacron", description="NovaCron monitoring: run and manage the stack."
    )
    parser.add_argument(
        "--config.file", dest="config_file", default=None, help="stack config YAML (optional)"
    )
    parser.add_argument(
        "--state-dir", dest="state_dir", default=None, help="state folder (default ./.novacron)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    up = sub.add_parser("up", help="start the whole stack in the foreground")
    up.add_argument(
        "--profile",
        choices=["default", "scale"],
        default="default",
        help="scale: 2 Prometheus shards, VictoriaMetrics, 2 Alertmanagers, PostgreSQL, 2 bridges+sidecars",
    )
    up.set_defaults(func=_cmd_up)
    sub.add_parser("down", help="stop a stack started with `novacron up`").set_defaults(func=_cmd_down)
    sub.add_parser("status", help="show each component of the running stack").set_defaults(func=_cmd_status)
    for name in EXTRA_SUBCOMMAND_MODULES:
        try:
            importlib.import_module(name).register(sub)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_subcommand(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
