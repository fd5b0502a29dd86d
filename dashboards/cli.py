"""`novacron-dashboards`: build, lint, provision, push and pull (diff) NovaCron's Grafana dashboards."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

from dashboards.catalog import Built, build_all
from dashboards.sdk import dump
from exporters.common.cli import run_subcommand

PROG = "novacron-dashboards"
REPO_GENERATED = Path(__file__).resolve().parent / "generated"
REPO_PROVISIONING = Path(__file__).resolve().parent / "provisioning"
EXIT_DRIFT = 1


def _http_url(text: str) -> str:
    """An argparse type: an http(s) base URL, so a typo fails as a usage error naming the flag (exit 2)."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text.rstrip("/")


def _built(tenants: list[str] | None) -> list[Built]:
    if not tenants:
        return build_all()
    out: list[Built] = []
    for tenant in tenants:
        out.extend(build_all(tenant))
    return out


def cmd_build(args: argparse.Namespace) -> int:
    from dashboards.provisioning import write_dashboards

    built = _built(args.tenant)
    if args.check:
        stale = [b for b in built if _read(Path(args.out) / b.folder / b.filename) != dump(b.model)]
        for item in stale:
            print(
                f"{PROG}: {item.folder}/{item.filename} is out of date; run `{PROG} build`", file=sys.stderr
            )
        return EXIT_DRIFT if stale else 0
    for path in write_dashboards(args.out, built):
        print(path)
    if args.provisioning:
        from dashboards.provisioning import write_static

        for path in write_static(args.provisioning):
            print(path)
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cmd_lint(args: argparse.Namespace) -> int:
    from dashboards.lint import lint_all
    from dashboards.schema import schema_dir, validate

    built = _built(args.tenant)
    problems = lint_all(b.model for b in built)
    if not args.no_schema and not (schema_dir() / "dashboard.jsonschema.json").is_file():
        print(
            f"{PROG}: no Grafana JSON schemas in {schema_dir()} (set NOVACRON_GRAFANA_SCHEMAS)",
            file=sys.stderr,
        )
        return 2
    if not args.no_schema:
        for item in built:
            problems.extend(validate(item.model))
    for problem in problems:
        print(problem)
    print(f"{len(built)} dashboards, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


def cmd_check(args: argparse.Namespace) -> int:
    """Run every panel query against a Prometheus; exit 1 when a query fails or returns no data."""
    from dashboards.evaluate import Prometheus, PrometheusError, run_dashboard

    overrides = dict(v.split("=", 1) for v in args.var or [] if "=" in v)
    prom = Prometheus(args.prometheus_url)
    failures = 0
    for item in _built(args.tenant):
        try:
            results = run_dashboard(prom, item.model, overrides, scrape_interval=args.scrape_interval)
        except PrometheusError as exc:
            print(f"{item.model['uid']}: {exc}")
            failures += 1
            continue
        total = sum(r.seconds for r in results)
        empty = [r for r in results if not r.has_data]
        failures += len(empty)
        print(f"{item.model['uid']}: {len(results)} queries, {total:.3f}s, {len(empty)} without data")
        for r in empty:
            print(f"  {r.panel} [{r.ref_id}]: {r.error or 'no data'}: {r.expr}")
    return 1 if failures else 0


def cmd_provision(args: argparse.Namespace) -> int:
    from dashboards.provisioning import write_provisioning

    print(write_provisioning(args.out, args.prometheus_url, args.alertmanager_url))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from dashboards.grafana_sync import connect, push

    for uid in push(connect(args.url), _built(args.tenant)):
        print(f"pushed {uid}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Print how Grafana's dashboards differ from the built ones; exit 1 on any drift, like diff(1)."""
    import json

    from dashboards.grafana_sync import connect, pull

    drifts, remote = pull(connect(args.url), _built(args.tenant))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        for uid, model in remote.items():
            (Path(args.out) / f"{uid}.json").write_text(json.dumps(model, indent=2, sort_keys=True) + "\n")
    for drift in drifts:
        print(
            f"{drift.uid}: missing in Grafana" if drift.missing else drift.diff,
            end="\n" if drift.missing else "",
        )
    return EXIT_DRIFT if drifts else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Build, lint, push and pull NovaCron's Grafana dashboards."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_tenant(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--tenant", action="append", help="build the per-tenant copies for this tenant (repeatable)"
        )

    p = sub.add_parser("build", help="write the dashboard JSON files (one directory per Grafana folder)")
    p.add_argument(
        "--out", default=str(REPO_GENERATED), help="output directory (default: dashboards/generated)"
    )
    p.add_argument("--check", action="store_true", help="only check that --out is up to date (exit 1 if not)")
    p.add_argument(
        "--provisioning", help="also write the static provisioning files here (dashboards/provisioning)"
    )
    with_tenant(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("lint", help="lint the dashboards and validate them against Grafana's JSON schemas")
    p.add_argument("--no-schema", action="store_true", help="skip JSON schema validation")
    with_tenant(p)
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser(
        "check", help="run every panel query against a Prometheus (exit 1 if any returns no data)"
    )
    p.add_argument("--prometheus-url", required=True, type=_http_url)
    p.add_argument(
        "--var", action="append", help="variable value, e.g. --var host=kvm01 (default: All / first)"
    )
    p.add_argument("--scrape-interval", type=float, default=15.0, help="for $__rate_interval (seconds)")
    with_tenant(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "provision", help="write a Grafana provisioning tree (data sources, provider, dashboards)"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--prometheus-url", required=True, type=_http_url)
    p.add_argument("--alertmanager-url", required=True, type=_http_url)
    p.set_defaults(func=cmd_provision)

    for name, func, text in (
        ("push", cmd_push, "create or overwrite the dashboards (and their folders) in a Grafana"),
        ("pull", cmd_pull, "diff a Grafana's dashboards against the built ones (exit 1 on drift)"),
    ):
        p = sub.add_parser(
            name,
            help=text,
            description=f"{text}. Credentials: GRAFANA_TOKEN, or GRAFANA_USER "
            "and GRAFANA_PASSWORD in the environment.",
        )
        p.add_argument(
            "--url", required=True, type=_http_url, help="Grafana base URL, e.g. http://grafana:3000"
        )
        if name == "pull":
            p.add_argument("--out", help="also save Grafana's current JSON here")
        with_tenant(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return run_subcommand(build_parser(), argv)
    except ValueError as exc:  # a bad tenant name and the like: a usage error, not a crash
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # grafana-client / network failures: one line, no trace
        from grafana_client.client import GrafanaException

        if isinstance(exc, GrafanaException | OSError):
            print(f"{PROG}: Grafana request failed: {exc}", file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())
