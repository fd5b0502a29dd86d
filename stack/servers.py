"""The real Prometheus and Alertmanager as child processes: write their config, start, query, stop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml

from stack.processes import ManagedProcess, ProcessError, free_port, wait_until

PROMETHEUS_BIN = "/usr/bin/prometheus"
ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"

Result = list[dict[str, Any]]


class Prometheus(ManagedProcess):
    """A real Prometheus on 127.0.0.1 with a generated config file."""

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any],
        port: int | None = None,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [
            PROMETHEUS_BIN,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={host}:{self.port}",
            "--web.enable-lifecycle",
            "--web.enable-admin-api",
            *extra_args,
        ]
        super().__init__(
            "prometheus", argv, workdir / "prometheus.log", ready_url=f"{self.url}/-/ready", url=self.url
        )

    def api(self, path: str, **params: Any) -> Any:
        resp = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = resp.json()
        if body.get("status") != "success":
            raise ProcessError(f"Prometheus {path} {params}: {body.get('error', resp.text)}")
        return body["data"]

    def query(self, expr: str) -> Result:
        """Instant query; returns the `result` list."""
        return list(self.api("query", query=expr)["result"])

    def wait_for(
        self,
        expr: str,
        timeout: float = 30.0,
        predicate: Callable[[Result], bool] = bool,
        interval: float = 0.5,
    ) -> Result:
        """Re-run `expr` until `predicate(result)` holds; raise with the last result otherwise."""
        last: Result = []

        def holds() -> bool:
            nonlocal last
            last = self.query(expr)
            return predicate(last)

        # wait_until asks again after a refused connection or a partial answer; a rejected query raises.
        if wait_until(holds, timeout, interval):
            return last
        raise AssertionError(f"{expr!r} did not satisfy the condition in {timeout}s; last result: {last}")

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def reload(self) -> None:
        requests.post(f"{self.url}/-/reload", timeout=10).raise_for_status()


def prometheus_config(
    scrape_configs: list[dict[str, Any]],
    rule_files: Sequence[str | Path] = (),
    alertmanagers: Sequence[str] = (),
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Prometheus config mapping from its parts."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": scrape_configs,
    }
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    config.update(extra or {})
    return config


class Alertmanager(ManagedProcess):
    """A real Alertmanager on 127.0.0.1; `peers` makes a gossip cluster on loopback."""

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any] | str,
        port: int | None = None,
        peers: Sequence[str] = (),
        cluster_port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "alertmanager.yml"
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)
        cluster: list[str]
        if peers or cluster_port:
            self.cluster_address = f"127.0.0.1:{cluster_port or free_port()}"
            cluster = [
                f"--cluster.listen-address={self.cluster_address}",
                "--cluster.advertise-address=" + self.cluster_address,
                *[f"--cluster.peer={p}" for p in peers],
                "--cluster.gossip-interval=50ms",
                "--cluster.pushpull-interval=2s",
            ]
        else:
            self.cluster_address = ""
            cluster = ["--cluster.listen-address="]
        argv = [
            ALERTMANAGER_BIN,
            f"--config.file={self.config_path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            *cluster,
            *extra_args,
        ]
        super().__init__(
            "alertmanager", argv, workdir / "alertmanager.log", ready_url=f"{self.url}/-/ready", url=self.url
        )

    def alerts(self) -> list[dict[str, Any]]:
        resp = requests.get(f"{self.url}/api/v2/alerts", timeout=10)
        resp.raise_for_status()
        return list(resp.json())
