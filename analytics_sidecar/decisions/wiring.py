"""Attach the decision cycle to the sidecar: run after every analysis cycle, serve metrics and routes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from analytics_sidecar.config import Config
from analytics_sidecar.decisions.api import DecisionApi, Guard
from analytics_sidecar.decisions.config import DecisionSettings
from analytics_sidecar.decisions.engine import DecisionEngine
from analytics_sidecar.decisions.metrics import DecisionCollector
from analytics_sidecar.engine import Engine, Results
from analytics_sidecar.source import PromSource, SourceError

log = logging.getLogger(__name__)


def attach(
    cfg: Config,
    source: PromSource,
    engine: Engine,
    routes: dict[str, Any],
    collectors: list[Any],
    guard: Guard,
) -> Callable[[Results], None] | None:
    """Register routes and the collector; return the hook the loop calls with each cycle's results.

    With `--shard`, only replica 0 decides (fleet-wide reads; per-VM inputs come from its own shard).
    """
    settings: DecisionSettings = getattr(cfg, "decisions", None) or DecisionSettings()
    if not settings.enabled or cfg.shard.index != 0:
        return None
    dec = DecisionEngine(settings, cfg, source)
    routes.update(DecisionApi(dec.state, settings.migration).routes(guard))
    collectors.append(DecisionCollector(dec.state))

    def hook(results: Results) -> None:
        try:
            d = dec.run(results, engine.catalogue)
        except SourceError as exc:
            log.warning("decision cycle failed, keeping the previous decisions: %s", exc)
            dec.state.failures += 1
            return
        except Exception:  # a decision bug must not stop the analysis loop; the failure counter shows it
            log.exception("decision cycle failed")
            dec.state.failures += 1
            return
        log.info(
            "decisions: %d moves, %d failover hosts", len(d.plan.moves) if d.plan else 0, len(d.failover)
        )

    return hook
