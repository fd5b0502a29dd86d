"""`novacron rules slo` (SLO burn-rate rules from the spec) and `novacron rules lint` (the rule linter)."""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from exporters.common.config import ConfigError, exit_config_error
from stack import rulelint, slo

REPO_ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = REPO_ROOT / "rules"
RUNBOOKS_DIR = REPO_ROOT / "docs" / "runbooks"
SLO_SPEC = RULES_DIR / "slos.yaml"
SLO_OUTPUT = RULES_DIR / "slo.rules.yml"


def register(subparsers: Any) -> None:
    """Add `rules slo` and `rules lint` to the `novacron` command."""
    rules = subparsers.add_parser("rules", help="generate and lint the Prometheus rules")
    sub = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    rules.set_defaults(func=lambda _args: _usage(rules))

    gen = sub.add_parser("slo", help="generate SLO burn-rate rules from the SLO spec")
    gen.add_argument("--spec", type=Path, default=SLO_SPEC, help=f"SLO spec (default {_rel(SLO_SPEC)})")
    gen.add_argument(
        "--output", type=Path, default=SLO_OUTPUT, help=f"rule file (default {_rel(SLO_OUTPUT)})"
    )
    gen.add_argument("--check", action="store_true", help="do not write; exit 1 if the output is out of date")
    gen.set_defaults(func=cmd_slo)

    lint = sub.add_parser("lint", help="lint rule files (labels, annotations, for:, runbooks, PromQL)")
    lint.add_argument("files", nargs="*", type=Path, help="rule files (default: rules/*.yml)")
    lint.add_argument("--runbooks", type=Path, default=RUNBOOKS_DIR, help="folder holding <AlertName>.md")
    lint.add_argument("--promtool", action="store_true", help="also run `promtool check rules`")
    lint.set_defaults(func=cmd_lint)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def default_rule_files() -> list[Path]:
    """The rule files Prometheus loads: rules/*.yml except the Alertmanager config."""
    return sorted(p for p in RULES_DIR.glob("*.yml") if not p.name.startswith("alertmanager"))


def cmd_slo(args: argparse.Namespace) -> int:
    try:
        text = slo.render(slo.load_spec(args.spec))
    except ConfigError as err:
        exit_config_error("novacron rules slo", err)
    current = args.output.read_text() if args.output.exists() else ""
    if args.check:
        if current == text:
            print(f"{_rel(args.output)} is up to date with {_rel(args.spec)}")
            return 0
        diff = difflib.unified_diff(
            current.splitlines(True), text.splitlines(True), str(args.output), "generated"
        )
        sys.stdout.writelines(diff)
        print(f"{_rel(args.output)} is out of date: run `novacron rules slo`", file=sys.stderr)
        return 1
    args.output.write_text(text)
    alerts, records = text.count("- alert:"), text.count("- record:")
    print(f"wrote {_rel(args.output)} ({alerts} alerts, {records} recording rules)")
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    files = list(args.files) or default_rule_files()
    problems = rulelint.lint_files(files, args.runbooks)
    for problem in problems:
        print(problem)
    failed = bool(problems)
    if args.promtool:
        failed |= not _promtool_check(files)
    if not failed:
        print(f"{len(files)} rule files: no problems")
    return 1 if failed else 0


def _promtool_check(files: list[Path]) -> bool:
    promtool = shutil.which("promtool")
    if not promtool:
        print("promtool not found (Debian package prometheus)", file=sys.stderr)
        return False
    result = subprocess.run([promtool, "check", "rules", *map(str, files)], capture_output=True, text=True)
    if result.returncode != 0:
        sys.stdout.write(result.stdout + result.stderr)
    return result.returncode == 0
