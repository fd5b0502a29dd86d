"""Scale profile: Prometheus shards (hashmod), remote_write to VictoriaMetrics, HA Alertmanagers, bridges."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from exporters.common.config import ConfigError, exit_config_error
from stack.config import StackConfig
from stack.plan import (
    Service,
    StackPlan,
    alertmanager_config,
    bridge_config,
    cloud_exporter_service,
    console_script,
    libvirt_services,
    metrics_api_service,
    rule_files,
    secret_file,
)
from stack.postgres import PostgresCluster, postgres_dir
from stack.rulelint import rules_in
from stack.servers import prometheus_config

VICTORIA_BIN = "/usr/bin/victoria-metrics"
VMALERT_BIN = "/usr/bin/vmalert"
# Fleet-wide rule groups: they aggregate over every VM (SLO ratios, error budgets, burn-rate alerts, tenant
# availability), so a shard, which sees only its half of the fleet, must not evaluate them. vmalert evaluates
# them once, on the global view. Per-VM and per-host rules stay on the shards, where the raw data is.
GLOBAL_RULE_FILES = ("slo.rules.yml",)
GLOBAL_RULE_GROUPS = ("novacron-decisions-recording",)
# Jobs whose targets are split between the shards; every other job is scraped by shard 0 only.
SHARDED_JOBS = ("libvirt", "cloud")
# Port offsets of the scale profile's extra processes, from the ports of the default profile.
SCALE_OFFSETS = {
    "prometheus_shard": 1,  # from ports.prometheus
    "victoria": 2,  # from ports.prometheus
    "peer": 10,  # second Alertmanager and bridge, from their ports
    "cluster": 1,  # gossip port, from each Alertmanager's port
    "analytics_peer": 1,  # second sidecar, from ports.analytics
    "postgres": 20,  # from ports.alertmanager
    "victoria_longterm": 21,  # from ports.alertmanager
    "vmalert": 22,  # from ports.alertmanager
}


def hashmod(value: str, modulus: int) -> int:
    """Prometheus' `hashmod` relabel action: the last 8 bytes of MD5, big-endian, modulo `modulus`."""
    return int.from_bytes(hashlib.md5(value.encode()).digest()[8:], "big") % modulus  # noqa: S324


def shard_relabel(shard: int, shards: int) -> list[dict[str, Any]]:
    """Keep the targets whose address hashes to `shard` (the standard hashmod + keep pair)."""
    return [
        {
            "source_labels": ["__address__"],
            "modulus": shards,
            "target_label": "__tmp_shard",
            "action": "hashmod",
        },
        {"source_labels": ["__tmp_shard"], "regex": str(shard), "action": "keep"},
    ]


# The long-term store keeps only recording-rule series (level:metric:operation names, rules/*.yml).
LONGTERM_KEEP = {"source_labels": ["__name__"], "regex": "[a-z_]+:.+", "action": "keep"}


def remote_write(url: str, name: str = "global") -> dict[str, Any]:
    """remote_write to VictoriaMetrics; the queue (backed by the WAL) rides out an outage of the store."""
    return {
        "url": f"{url}/api/v1/write",
        "name": name,
        "queue_config": {
            "capacity": 10000,
            "max_shards": 8,
            "max_samples_per_send": 2000,
            "batch_send_deadline": "1s",
            "min_backoff": "100ms",
            "max_backoff": "2s",
        },
        "metadata_config": {"send": False},
    }


def shard_config(
    jobs: dict[str, list[str]],
    shard: int,
    shards: int,
    remote_write_url: str,
    alertmanagers: Sequence[str] = (),
    rules: Sequence[str | Path] = (),
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
    sample_limit: int = 200000,
    longterm_url: str = "",
) -> dict[str, Any]:
    """One shard's Prometheus config: sharded jobs split by hashmod, the rest on shard 0 only.

    With `longterm_url`, a second remote_write sends only the recording-rule series there (kept longer).
    """
    scrape_configs: list[dict[str, Any]] = []
    for job, targets in jobs.items():
        entry: dict[str, Any] = {"job_name": job, "static_configs": [{"targets": list(targets)}]}
        if job in SHARDED_JOBS:
            entry["relabel_configs"] = shard_relabel(shard, shards)
            entry["sample_limit"] = sample_limit
        elif shard != 0 and job != "prometheus":
            continue
        scrape_configs.append(entry)
    extra = {
        # Both replicas of a shard carry the same labels, so VictoriaMetrics' dedup merges an HA pair.
        "remote_write": [remote_write(remote_write_url)],
    }
    if longterm_url:
        extra["remote_write"].append(
            {**remote_write(longterm_url, "longterm"), "write_relabel_configs": [LONGTERM_KEEP]}
        )
    config = prometheus_config(
        scrape_configs, rules, alertmanagers, scrape_interval, evaluation_interval, extra
    )
    config["global"]["external_labels"] = {"prometheus_shard": str(shard)}
    return config


def victoria_argv(
    data_dir: Path, listen: str, retention: str = "30d", dedup: str = "", scrape_config: Path | None = None
) -> list[str]:
    """VictoriaMetrics single node; `dedup` (the scrape interval) merges the samples of HA replica pairs;
    `scrape_config` makes it scrape too (the long-term store federating the fleet-wide rules' series)."""
    argv = [
        VICTORIA_BIN,
        f"-storageDataPath={data_dir}",
        f"-httpListenAddr={listen}",
        f"-retentionPeriod={retention}",
        # Answer queries up to now: the default 30 s latency offset hides the newest samples.
        "-search.latencyOffset=1s",
    ]
    if dedup:
        argv.append(f"-dedup.minScrapeInterval={dedup}")
    if scrape_config is not None:
        argv.append(f"-promscrape.config={scrape_config}")
    return argv


def recorded_names(files: Sequence[Path]) -> list[str]:
    """The series names that the recording rules of `files` write."""
    rules = (rule for path in files for rule in rules_in(yaml.safe_load(path.read_text())))
    return sorted({str(rule["record"]) for rule in rules if "record" in rule})


def longterm_federation(global_url: str, names: Sequence[str], interval: str) -> dict[str, Any]:
    """Scrape config of the long-term store: the fleet-wide rules' series from the global view's /federate.

    vmalert writes to one store only (the global view), so the long-term store pulls the `slo:*` and
    `tenant:*` series from there, while the shards' own recording rules reach it by remote_write.
    """
    scheme, _, address = global_url.rpartition("://")
    return {
        "scrape_configs": [
            {
                "job_name": "federate-global-rules",
                "scrape_interval": interval,
                "honor_labels": True,  # keep the series' own labels (slo, tenant), not the scrape's
                "metrics_path": "/federate",
                "params": {"match[]": [f'{{__name__=~"{"|".join(names)}"}}']},
                "scheme": scheme or "http",
                "static_configs": [{"targets": [address]}],
            }
        ]
    }


def is_global_group(path: Path, group: dict[str, Any]) -> bool:
    """Whether a rule group is fleet-wide (evaluated by vmalert on the global view, not by the shards)."""
    return path.name in GLOBAL_RULE_FILES or group.get("name") in GLOBAL_RULE_GROUPS


def split_rules(files: Sequence[Path], out_dir: Path) -> tuple[list[Path], list[Path]]:
    """(shard rule files, global rule files): a file whose groups are all on one side is used as it is; a
    mixed file is written as two filtered copies under `out_dir` (same file name, `shard/` and `global/`)."""
    shard: list[Path] = []
    fleet: list[Path] = []
    for path in files:
        groups = (yaml.safe_load(path.read_text()) or {}).get("groups") or []
        wide = [g for g in groups if is_global_group(path, g)]
        if not wide:
            shard.append(path)
        elif len(wide) == len(groups):
            fleet.append(path)
        else:
            local = [g for g in groups if not is_global_group(path, g)]
            for side, kept, out in (("shard", local, shard), ("global", wide, fleet)):
                copy = out_dir / side / path.name
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_text(yaml.safe_dump({"groups": kept}, sort_keys=False))
                out.append(copy)
    return shard, fleet


def vmalert_argv(
    datasource: str,
    notifiers: Sequence[str],
    rules: Sequence[str | Path],
    listen: str,
    evaluation_interval: str = "15s",
) -> list[str]:
    """vmalert on the global view: queries VictoriaMetrics and writes its recording rules (and alert state)
    back there, and sends alerts to every Alertmanager peer, like each Prometheus does."""
    return [
        VMALERT_BIN,
        f"-datasource.url={datasource}",
        f"-remoteWrite.url={datasource}",
        # A rule reading an earlier rule's result (slo:sli_error:ratio_rate5m) lags by the flush interval.
        "-remoteWrite.flushInterval=1s",
        # Restores the `for:` state of pending/firing alerts after a restart from what it wrote.
        f"-remoteRead.url={datasource}",
        *(f"-notifier.url={url}" for url in notifiers),
        *(f"-rule={path}" for path in rules),
        f"-evaluationInterval={evaluation_interval}",
        f"-httpListenAddr={listen}",
    ]


@dataclass
class ScalePlan(StackPlan):
    postgres: PostgresCluster | None = None


# The `ports:` key each scale-profile port is derived from, to name it when a derived port is unusable.
_PORT_SOURCE = {
    "prometheus": "prometheus",
    "victoria": "prometheus",
    "alertmanager": "alertmanager",
    "postgres": "alertmanager",
    "victoria-longterm": "alertmanager",
    "vmalert": "alertmanager",
    "alert-bridge": "alert_bridge",
    "analytics": "analytics",
    "metrics-api": "metrics_api",
    "cloud-exporter": "cloud_exporter",
}


def check_scale_ports(cfg: StackConfig, ports: dict[str, int]) -> None:
    """Derived ports must be valid and distinct, and stay clear of the libvirt exporters' consecutive ports:
    the default profile's check cannot see the offsets, and a clash would only show as a child failing."""
    exporters = 1 + cfg.demo_hosts  # the system URI may take one more
    taken = {cfg.ports["libvirt_exporter"] + i: f"libvirt_exporter+{i}" for i in range(exporters)}
    for name, port in ports.items():
        key = "ports." + next(v for k, v in _PORT_SOURCE.items() if name.startswith(k))
        if not 0 < port < 65536:
            raise ConfigError(key, f"the scale profile's {name} would be port {port}, out of range")
        if port in taken:
            raise ConfigError(key, f"the scale profile's {name} would be port {port}, taken by {taken[port]}")
        taken[port] = f"{name} ({key})"


def scale_ports(cfg: StackConfig) -> dict[str, int]:
    """Every port of the scale profile, derived from the default profile's `ports:` (documented offsets)."""
    p = cfg.ports
    return {
        "prometheus-0": p["prometheus"],
        "prometheus-1": p["prometheus"] + SCALE_OFFSETS["prometheus_shard"],
        "victoria": p["prometheus"] + SCALE_OFFSETS["victoria"],
        "alertmanager-0": p["alertmanager"],
        "alertmanager-1": p["alertmanager"] + SCALE_OFFSETS["peer"],
        "alertmanager-0-cluster": p["alertmanager"] + SCALE_OFFSETS["cluster"],
        "alertmanager-1-cluster": p["alertmanager"] + SCALE_OFFSETS["peer"] + SCALE_OFFSETS["cluster"],
        "alert-bridge-0": p["alert_bridge"],
        "alert-bridge-1": p["alert_bridge"] + SCALE_OFFSETS["peer"],
        "analytics-0": p["analytics"],
        "analytics-1": p["analytics"] + SCALE_OFFSETS["analytics_peer"],
        "postgres": p["alertmanager"] + SCALE_OFFSETS["postgres"],
        "victoria-longterm": p["alertmanager"] + SCALE_OFFSETS["victoria_longterm"],
        "vmalert": p["alertmanager"] + SCALE_OFFSETS["vmalert"],
        "metrics-api": p["metrics_api"],
        "cloud-exporter": p["cloud_exporter"],
    }


def _am_config_for_both_bridges(bridge_urls: list[str]) -> dict[str, Any]:
    """The shipped routing, each bridge webhook sent to both bridge replicas (they dedupe in PostgreSQL)."""
    config = alertmanager_config(bridge_urls[0])
    for receiver in config.get("receivers", []):
        hooks = receiver.get("webhook_configs", [])
        extra = []
        for hook in hooks:
            if str(hook.get("url", "")).startswith(bridge_urls[0]):
                path = str(hook["url"])[len(bridge_urls[0]) :]
                extra += [{**hook, "url": url + path} for url in bridge_urls[1:]]
        hooks.extend(extra)
    return config


def plan_scale(cfg: StackConfig) -> ScalePlan:
    """2 Prometheus shards, VictoriaMetrics + vmalert, 2 Alertmanagers, PostgreSQL + 2 bridges, 2 sidecars."""
    state, host = cfg.state_dir, cfg.listen_host
    state.mkdir(parents=True, exist_ok=True)
    ports = scale_ports(cfg)
    check_scale_ports(cfg, ports)
    url = {name: f"http://{host}:{port}" for name, port in ports.items()}
    services, notes = libvirt_services(cfg, host)
    pg = PostgresCluster(postgres_dir(state), ports["postgres"])

    services.append(
        Service(
            name="victoria-metrics",
            port=ports["victoria"],
            ready_path="/health",
            argv=victoria_argv(state / "victoria", f"{host}:{ports['victoria']}", "30d", cfg.scrape_interval),
            scrape_job="victoria-metrics",
            description="VictoriaMetrics (global view, remote_write)",
        )
    )
    longterm = f"{host}:{ports['victoria-longterm']}"
    shard_rules, global_rules = split_rules(rule_files(), state / "rules")
    federation = state / "victoria-longterm-scrape.yml"
    federation.write_text(
        yaml.safe_dump(
            longterm_federation(url["victoria"], recorded_names(global_rules), cfg.evaluation_interval)
        )
    )
    services.append(
        Service(
            name="victoria-metrics-longterm",
            port=ports["victoria-longterm"],
            ready_path="/health",
            argv=victoria_argv(
                state / "victoria-longterm", longterm, "2y", cfg.scrape_interval, scrape_config=federation
            ),
            scrape_job="victoria-metrics",
            description="VictoriaMetrics (long-term: recording rules only)",
        )
    )
    token_file = secret_file(state, "bridge_token")
    admin_file = secret_file(state, "bridge_admin_token")
    # The sidecars' API token; the bridges read the same file to ask a sidecar for an alert's likely cause.
    analytics_token = secret_file(state, "analytics_token").read_text().strip()
    bridge_urls = [url["alert-bridge-0"], url["alert-bridge-1"]]
    for i in range(2):
        bdir = state / f"alert-bridge-{i}"
        bdir.mkdir(exist_ok=True)
        bcfg = bridge_config(cfg, token_file, url["alertmanager-0"])
        bcfg["alertmanager"] = {"urls": [url["alertmanager-0"], url["alertmanager-1"]]}
        if "enrichment" in bcfg:  # each sidecar shard knows its own VMs' incidents: ask both
            bcfg["enrichment"]["sidecar_url"] = [url["analytics-0"], url["analytics-1"]]
        (bdir / "bridge.yml").write_text(yaml.safe_dump(bcfg))
        services.append(
            Service(
                name=f"alert-bridge-{i}",
                port=ports[f"alert-bridge-{i}"],
                scrape_job="alert-bridge",
                ready_path="/healthz",
                argv=[
                    console_script("novacron-alert-bridge"),
                    f"--web.listen-address={host}:{ports[f'alert-bridge-{i}']}",
                    f"--config.file={bdir / 'bridge.yml'}",
                    f"--storage.url={pg.url}",
                ],
                env={"NOVACRON_BRIDGE_ADMIN_TOKEN": admin_file.read_text().strip()},
                description=f"alert bridge replica {i} (PostgreSQL)",
            )
        )
    if cfg.analytics_enabled:
        for i in range(2):
            services.append(
                Service(
                    name=f"analytics-{i}",
                    port=ports[f"analytics-{i}"],
                    scrape_job="analytics",
                    argv=[
                        console_script("novacron-analytics"),
                        "serve",
                        f"--prometheus.url={url['victoria']}",
                        f"--shard={i}/2",
                        f"--web.listen-address={host}:{ports[f'analytics-{i}']}",
                        f"--interval={cfg.analytics_interval}",
                        f"--state.dir={state / f'analytics-{i}'}",
                    ],
                    env={"NOVACRON_ANALYTICS_TOKEN": analytics_token},
                    description=f"analytics sidecar shard {i}/2 (reads the global view)",
                )
            )
    # The same metrics API and cloud exporter as the default profile; the API reads the global view.
    if cfg.metrics_api_enabled:
        services.append(metrics_api_service(cfg, state, url["victoria"]))
    if cfg.cloud_config_file:
        services.append(cloud_exporter_service(cfg))
    am_config = _am_config_for_both_bridges(bridge_urls)
    for i in range(2):
        services.append(_alertmanager_service(cfg, i, ports, url, am_config, token_file))
    services.append(
        Service(
            name="vmalert",
            port=ports["vmalert"],
            ready_path="/health",
            argv=vmalert_argv(
                url["victoria"],
                [url["alertmanager-0"], url["alertmanager-1"]],
                global_rules,
                f"{host}:{ports['vmalert']}",
                cfg.evaluation_interval,
            ),
            scrape_job="vmalert",  # meta-monitoring: shard 0 scrapes it like the other shared services
            description="vmalert (fleet-wide rules on the global view)",
        )
    )
    services += _shard_services(cfg, services, ports, url, shard_rules)
    notes.append(f"global view (PromQL): {url['victoria']}  long-term: {url['victoria-longterm']}")
    notes.append(f"PostgreSQL of the bridges: 127.0.0.1:{ports['postgres']}")
    urls = {**url, "prometheus": url["prometheus-0"], "alertmanager": url["alertmanager-0"]}
    return ScalePlan(services, urls, notes, postgres=pg)


def _alertmanager_service(
    cfg: StackConfig,
    i: int,
    ports: dict[str, int],
    url: dict[str, str],
    am_config: dict[str, Any],
    token_file: Path,
) -> Service:
    host = cfg.listen_host
    am_dir = cfg.state_dir / f"alertmanager-{i}"
    am_dir.mkdir(exist_ok=True)
    shutil.copyfile(token_file, am_dir / "bridge_token")
    os.chmod(am_dir / "bridge_token", 0o600)
    (am_dir / "alertmanager.yml").write_text(yaml.safe_dump(am_config, sort_keys=False))
    me, peer = (
        f"{host}:{ports[f'alertmanager-{i}-cluster']}",
        f"{host}:{ports[f'alertmanager-{1 - i}-cluster']}",
    )
    return Service(
        name=f"alertmanager-{i}",
        port=ports[f"alertmanager-{i}"],
        scrape_job="alertmanager",
        ready_path="/-/ready",
        argv=[
            "/usr/bin/prometheus-alertmanager",
            f"--config.file={am_dir / 'alertmanager.yml'}",
            f"--storage.path={am_dir / 'data'}",
            f"--web.listen-address={host}:{ports[f'alertmanager-{i}']}",
            f"--cluster.listen-address={me}",
            f"--cluster.advertise-address={me}",
            f"--cluster.peer={peer}",
            f"--web.external-url={url[f'alertmanager-{i}']}",
        ],
        description=f"Alertmanager peer {i} (gossip {me})",
    )


def _shard_services(
    cfg: StackConfig,
    services: list[Service],
    ports: dict[str, int],
    url: dict[str, str],
    rules: Sequence[Path],
) -> list[Service]:
    host = cfg.listen_host
    jobs: dict[str, list[str]] = {
        "prometheus": [f"{host}:{ports['prometheus-0']}", f"{host}:{ports['prometheus-1']}"]
    }
    for svc in services:
        if svc.scrape_job:
            jobs.setdefault(svc.scrape_job, []).append(f"{host}:{svc.port}")
    ams = [f"{host}:{ports['alertmanager-0']}", f"{host}:{ports['alertmanager-1']}"]
    out = []
    for i in range(2):
        pdir = cfg.state_dir / f"prometheus-{i}"
        pdir.mkdir(exist_ok=True)
        config = shard_config(
            jobs,
            i,
            2,
            url["victoria"],
            ams,
            rules,
            cfg.scrape_interval,
            cfg.evaluation_interval,
            longterm_url=url["victoria-longterm"],
        )
        # Each shard scrapes only its own Prometheus (meta-monitoring stays local to the shard).
        for job in config["scrape_configs"]:
            if job["job_name"] == "prometheus":
                job["static_configs"] = [{"targets": [f"{host}:{ports[f'prometheus-{i}']}"]}]
        # ... and its peer, so a dead shard is noticed (NovaCronScalePrometheusShardDown).
        peer = {"targets": [f"{host}:{ports[f'prometheus-{1 - i}']}"]}
        config["scrape_configs"].append({"job_name": "prometheus-peers", "static_configs": [peer]})
        (pdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        out.append(
            Service(
                name=f"prometheus-{i}",
                port=ports[f"prometheus-{i}"],
                ready_path="/-/ready",
                argv=[
                    "/usr/bin/prometheus",
                    f"--config.file={pdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={pdir / 'data'}",
                    f"--web.listen-address={host}:{ports[f'prometheus-{i}']}",
                    "--web.enable-lifecycle",
                    f"--web.external-url={url[f'prometheus-{i}']}",
                ],
                description=f"Prometheus shard {i}/2",
            )
        )
    return out


def run_scale(cfg: StackConfig) -> int:
    """Start PostgreSQL, then every service of the scale profile; stop PostgreSQL after the rest."""
    from stack.run import run_stack

    try:
        plan = plan_scale(replace(cfg))
    except ConfigError as err:
        exit_config_error("novacron up --profile scale", err)
    assert plan.postgres is not None
    plan.postgres.start()
    try:
        return run_stack(cfg, plan)
    finally:
        plan.postgres.stop()
