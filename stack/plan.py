"""Plan the `novacron up` stack: which processes, on which ports, with which generated config files."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporters.common.config import ensure_secret_file
from stack.config import StackConfig
from stack.fleet import write_fleet
from stack.servers import prometheus_config

REPO_ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = REPO_ROOT / "rules"
BRIDGE_DEFAULT_URL = "http://127.0.0.1:9095"


@dataclass
class Service:
    """One child process of the stack: its command line, readiness URL and what Prometheus scrapes."""

    name: str
    argv: list[str]
    port: int
    ready_path: str = "/metrics"
    scrape_job: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass
class StackPlan:
    services: list[Service]
    urls: dict[str, str]
    notes: list[str]


def console_script(name: str) -> str:
    """A console script of this project, from the same virtualenv as the running interpreter."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def libvirtd_answers(uri: str = "qemu:///system") -> bool:
    """True when libvirtd accepts a read-only connection at `uri` (never raises)."""
    try:
        import libvirt

        libvirt.registerErrorHandler(lambda *_: None, None)
        conn = libvirt.openReadOnly(uri)
    except Exception:  # libvirt missing or the daemon away: the stack falls back to the demo fleet
        return False
    conn.close()
    return True


def secret_file(state: Path, name: str) -> Path:
    """A random token in state/secrets/, created once with mode 0600 and reused on the next run."""
    return ensure_secret_file(state / "secrets" / name)


def libvirt_services(cfg: StackConfig, host: str) -> tuple[list[Service], list[str]]:
    services, notes = [], []
    port = cfg.ports["libvirt_exporter"]
    uris: list[tuple[str, str]] = []
    if cfg.system_uri != "off":
        uri = "qemu:///system" if cfg.system_uri == "auto" else cfg.system_uri
        if cfg.system_uri != "auto" or libvirtd_answers(uri):
            uris.append(("system", uri))
            notes.append(f"libvirt exporter watches {uri} (libvirtd answers)")
        else:
            notes.append("libvirtd does not answer on qemu:///system: only the demo fleet is watched")
    for h in range(cfg.demo_hosts):
        path = cfg.state_dir / "fleet" / f"kvm{h:02d}.xml"
        uri = write_fleet(
            path, cfg.demo_vms_per_host, seed=h, host=f"kvm{h:02d}", shutoff_every=cfg.demo_shutoff_every
        )
        uris.append((f"kvm{h:02d}", uri))
    if cfg.demo_hosts:
        notes.append(
            f"demo fleet: {cfg.demo_hosts} host(s) x {cfg.demo_vms_per_host} VMs on libvirt's test driver"
        )
    for i, (label, uri) in enumerate(uris):
        p = port + i
        # Test-driver hosts would all report this machine's hostname: name each demo host itself.
        hostname = [] if label == "system" else [f"--libvirt.hostname={label}"]
        services.append(
            Service(
                name=f"libvirt-exporter-{label}",
                port=p,
                scrape_job="libvirt",
                argv=[
                    console_script("novacron-libvirt-exporter"),
                    f"--libvirt.uri={uri}",
                    f"--web.listen-address={host}:{p}",
                    *hostname,
                ],
                description=f"libvirt exporter ({uri})",
            )
        )
    return services, notes


def bridge_config(cfg: StackConfig, token_file: Path, am_url: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "auth": {"tokens": [{"name": "alertmanager", "role": "webhook", "token_file": str(token_file)}]},
        "alertmanager": {"urls": [am_url]},
        # The always-firing watchdog is a dead man's switch for the bridge, not an alert to mail.
        "heartbeat": {"alertname": "NovaCronWatchdog"},
    }
    if cfg.analytics_enabled:
        # Anomaly alerts carry the sidecar's likely cause (docs/alert-bridge.md, "Root-cause context").
        config["enrichment"] = {
            "sidecar_url": f"http://{cfg.listen_host}:{cfg.ports['analytics']}",
            "token_file": str(cfg.state_dir / "secrets" / "analytics_token"),
        }
    if cfg.smtp_host:
        config["channels"] = {
            "email": {
                "type": "email",
                "from": cfg.email_from,
                "to": [cfg.email_to],
                "smtp": {"host": cfg.smtp_host, "port": cfg.smtp_port},
            }
        }
        config["routing"] = {"default_channels": ["email"]}
    return config


def alertmanager_config(bridge_url: str, smtp_host: str = "", smtp_port: int = 25) -> dict[str, Any]:
    """The shipped routing config, pointed at this stack's bridge and mail relay.

    Without a relay the email digest route is dropped: failing to mail would page as
    NovaCronAlertmanagerNotificationsFailing during business hours.
    """
    config = yaml.safe_load((RULES_DIR / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in config.get("receivers", []):
        for hook in receiver.get("webhook_configs", []):
            if str(hook.get("url", "")).startswith(BRIDGE_DEFAULT_URL):
                hook["url"] = bridge_url + str(hook["url"])[len(BRIDGE_DEFAULT_URL) :]
    if smtp_host:
        config.setdefault("global", {})["smtp_smarthost"] = f"{smtp_host}:{smtp_port}"
        return config
    mailers = {r["name"] for r in config.get("receivers", []) if r.get("email_configs")}
    config["receivers"] = [r for r in config["receivers"] if r["name"] not in mailers]
    config["route"]["routes"] = _without_receivers(config["route"].get("routes", []), mailers)
    return config


def _without_receivers(routes: list[dict[str, Any]], dropped: set[str]) -> list[dict[str, Any]]:
    kept = []
    for route in routes:
        if route.get("receiver") in dropped:
            continue
        if "routes" in route:
            route["routes"] = _without_receivers(route["routes"], dropped)
        kept.append(route)
    return kept


def rule_files() -> list[Path]:
    """Every rule file the stack loads: the same set the rule linter and promtool tests check."""
    from stack.rules_cmd import default_rule_files

    return default_rule_files()


def plan_stack(cfg: StackConfig) -> StackPlan:
    """Write every generated file under the state folder and return the processes to start."""
    state, host = cfg.state_dir, cfg.listen_host
    state.mkdir(parents=True, exist_ok=True)
    urls = {name: f"http://{host}:{port}" for name, port in cfg.ports.items()}
    services, notes = libvirt_services(cfg, host)

    bridge_dir = state / "alert-bridge"
    bridge_dir.mkdir(exist_ok=True)
    token_file = secret_file(state, "bridge_token")
    admin_file = secret_file(state, "bridge_admin_token")
    (bridge_dir / "bridge.yml").write_text(
        yaml.safe_dump(bridge_config(cfg, token_file, urls["alertmanager"]))
    )
    services.append(
        Service(
            name="alert-bridge",
            port=cfg.ports["alert_bridge"],
            scrape_job="alert-bridge",
            ready_path="/healthz",
            argv=[
                console_script("novacron-alert-bridge"),
                f"--web.listen-address={host}:{cfg.ports['alert_bridge']}",
                f"--config.file={bridge_dir / 'bridge.yml'}",
                f"--storage.url=sqlite:///{bridge_dir / 'bridge.db'}",
            ],
            env={"NOVACRON_BRIDGE_ADMIN_TOKEN": admin_file.read_text().strip()},
            description="alert bridge (SQLite)",
        )
    )

    if cfg.analytics_enabled:
        analytics_token = ensure_secret_file(state / "secrets" / "analytics_token")  # the bridge reads it too
        services.append(
            Service(
                name="analytics",
                port=cfg.ports["analytics"],
                scrape_job="analytics",
                argv=[
                    console_script("novacron-analytics"),
                    "serve",
                    f"--prometheus.url={urls['prometheus']}",
                    f"--web.listen-address={host}:{cfg.ports['analytics']}",
                    f"--interval={cfg.analytics_interval}",
                    f"--state.dir={state / 'analytics'}",
                ],
                env={"NOVACRON_ANALYTICS_TOKEN": analytics_token.read_text().strip()},
                description="analytics sidecar",
            )
        )

    if cfg.metrics_api_enabled:
        services.append(metrics_api_service(cfg, state, urls["prometheus"]))
    if cfg.cloud_config_file:
        services.append(cloud_exporter_service(cfg))

    am_dir = state / "alertmanager"
    am_dir.mkdir(exist_ok=True)
    (am_dir / "bridge_token").write_text(token_file.read_text())
    os.chmod(am_dir / "bridge_token", 0o600)
    (am_dir / "alertmanager.yml").write_text(
        yaml.safe_dump(
            alertmanager_config(urls["alert_bridge"], cfg.smtp_host, cfg.smtp_port), sort_keys=False
        )
    )
    services.append(
        Service(
            name="alertmanager",
            port=cfg.ports["alertmanager"],
            scrape_job="alertmanager",
            ready_path="/-/ready",
            argv=[
                "/usr/bin/prometheus-alertmanager",
                f"--config.file={am_dir / 'alertmanager.yml'}",
                f"--storage.path={am_dir / 'data'}",
                f"--web.listen-address={host}:{cfg.ports['alertmanager']}",
                "--cluster.listen-address=",
                f"--web.external-url={urls['alertmanager']}",
            ],
            description="Alertmanager",
        )
    )

    prom_dir = state / "prometheus"
    prom_dir.mkdir(exist_ok=True)
    jobs: dict[str, list[str]] = {"prometheus": [f"{host}:{cfg.ports['prometheus']}"]}
    for svc in services:
        if svc.scrape_job:
            jobs.setdefault(svc.scrape_job, []).append(f"{host}:{svc.port}")
    scrape_configs = [
        {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in jobs.items()
    ]
    prom_cfg = prometheus_config(
        scrape_configs,
        rule_files(),
        [f"{host}:{cfg.ports['alertmanager']}"],
        cfg.scrape_interval,
        cfg.evaluation_interval,
    )
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg, sort_keys=False))
    services.append(
        Service(
            name="prometheus",
            port=cfg.ports["prometheus"],
            ready_path="/-/ready",
            argv=[
                "/usr/bin/prometheus",
                f"--config.file={prom_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={prom_dir / 'data'}",
                f"--web.listen-address={host}:{cfg.ports['prometheus']}",
                "--web.enable-lifecycle",
                f"--web.external-url={urls['prometheus']}",
            ],
            description="Prometheus",
        )
    )

    if cfg.grafana_provisioning:
        notes.append(_write_grafana_provisioning(state / "grafana", urls))
    return StackPlan(services, urls, notes)


def metrics_api_service(cfg: StackConfig, state: Path, prometheus_url: str) -> Service:
    from metrics_api.config import write_demo_config

    config = write_demo_config(state / "metrics-api", prometheus_url, cfg.metrics_api_tenants)
    port = cfg.ports["metrics_api"]
    return Service(
        name="metrics-api",
        port=port,
        scrape_job="metrics-api",
        ready_path="/-/healthy",
        argv=[
            console_script("novacron-metrics-api"),
            f"--config.file={config}",
            f"--web.listen-address={cfg.listen_host}:{port}",
        ],
        description=f"metrics API (tokens in {state / 'metrics-api'})",
    )


def cloud_exporter_service(cfg: StackConfig) -> Service:
    """The cloud exporter of `cloud.config_file` (job `cloud`)."""
    port = cfg.ports["cloud_exporter"]
    return Service(
        name="cloud-exporter",
        port=port,
        scrape_job="cloud",
        argv=[
            console_script("novacron-cloud-exporter"),
            f"--config.file={cfg.cloud_config_file}",
            f"--web.listen-address={cfg.listen_host}:{port}",
        ],
        description="cloud exporter",
    )


def _write_grafana_provisioning(out: Path, urls: dict[str, str]) -> str:
    try:
        from dashboards.provisioning import write_provisioning
    except ImportError:
        return "Grafana provisioning not available in this build"
    write_provisioning(out, urls["prometheus"], urls["alertmanager"])
    return f"Grafana provisioning written to {out} (point Grafana's paths.provisioning there)"
