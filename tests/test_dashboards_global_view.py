"""The SLO board against the sharded profile's global view (VictoriaMetrics), where each shard's copy of the
SLO rules carries its own `prometheus_shard` label: one series per SLO, no `on(slo)` match error."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from dashboards.catalog import build_all
from dashboards.evaluate import Prometheus, run_dashboard
from stack.processes import ManagedProcess, free_port, wait_until
from stack.scale import victoria_argv

SLOS = {"vm-availability": 0.999, "exporter-availability": 0.99}
SERIES = {  # name: value on shard 0 (shard 1 gets twice the error, half the budget)
    "slo:sli_error:ratio_rate5m": 0.002,
    "slo:sli_error:ratio_rate1h": 0.002,
    "slo:sli_error:ratio_rate6h": 0.001,
    "slo:sli_error:ratio_rate3d": 0.0005,
    "slo:error_budget_remaining:ratio": 0.8,
}


@pytest.fixture(scope="module")
def global_view(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A VictoriaMetrics with two shards' copies of the SLO series, a sample a minute for the last day."""
    workdir = tmp_path_factory.mktemp("global-view")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ManagedProcess(
        "victoria", victoria_argv(workdir / "data", f"127.0.0.1:{port}"), workdir / "victoria.log",
        ready_url=f"{url}/health",
    ).start():  # fmt: skip
        now = int(time.time())
        lines = []
        for ts in range(now - 86400, now + 1, 60):
            for slo, objective in SLOS.items():
                for shard in ("0", "1"):
                    labels = f'slo="{slo}",prometheus_shard="{shard}"'
                    lines.append(f"slo:objective:ratio{{{labels}}} {objective} {ts}000")
                    for name, value in SERIES.items():
                        v = value * (2 if shard == "1" else 1)
                        if name == "slo:error_budget_remaining:ratio" and shard == "1":
                            v = value / 2
                        lines.append(f"{name}{{{labels}}} {v} {ts}000")
        requests.post(f"{url}/api/v1/import/prometheus", data="\n".join(lines), timeout=60).raise_for_status()
        requests.get(f"{url}/internal/force_flush", timeout=30).raise_for_status()
        # Every imported series searchable before the board reads them (a flush makes them so; a wait
        # costs nothing when it has, and a busy machine gets the time it needs when it has not).
        expected = len(SLOS) * 2 * (len(SERIES) + 1)

        def searchable() -> bool:
            query = {"query": 'count({__name__=~"slo:.+"})'}
            body = requests.get(f"{url}/api/v1/query", params=query, timeout=10).json()
            return [float(r["value"][1]) for r in body["data"]["result"]] == [expected]

        assert wait_until(searchable, timeout=60), "the imported SLO series are not searchable"
        yield url


def test_slo_board_answers_one_series_per_slo_in_the_global_view(global_view: str) -> None:
    (board,) = [b.model for b in build_all() if b.model["uid"] == "novacron-slo"]
    results = run_dashboard(Prometheus(global_view), board, scrape_interval=15.0)
    slo_results = [r for r in results if "slo:" in r.expr]
    assert slo_results
    for r in slo_results:
        assert not r.error, f"{r.panel} [{r.ref_id}]: {r.error}"
        assert r.has_data, f"{r.panel} [{r.ref_id}]: {r.expr}"
    burn = [r for r in slo_results if r.panel == "Burn rates"]
    assert burn and all(r.series == len(SLOS) for r in burn)  # one line per SLO, not one per shard
    objectives = [r for r in slo_results if r.panel == "Objectives"]
    assert [r.series for r in objectives] == [len(SLOS)] * 2


def test_worst_shard_sets_the_burn_rate(global_view: str) -> None:
    (board,) = [b.model for b in build_all() if b.model["uid"] == "novacron-slo"]
    (stat,) = [p for p in board["panels"] if p.get("title") == "Burn rate (1h)"]
    expr = stat["targets"][0]["expr"].replace("$slo", ".*")
    data = Prometheus(global_view).call("query", {"query": expr})
    # Shard 1's 1-hour error ratio 0.004 against vm-availability's 0.001 budget: a burn rate of 4.
    assert float(data["result"][0]["value"][1]) == pytest.approx(4.0)
