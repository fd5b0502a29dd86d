"""Attach the decision cycle to the sidecar: run after every analysis cycle, serve metrics and routes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from analytics_sidecar.config import Config, Shard
from analytics_sidecar.decisions.api import DecisionApi, Guard
from analytics_sidecar.decisions.config import DecisionSettings
from analytics_sidecar.decisions.engine import DecisionEngine
from analytics_sidecar.decisions.metrics import DecisionCollector
from analytics_sidecar.engine import Engine, Results
from analytics_sidecar.source import PromSource, SourceError

log = logging.getLogger(__name__)


def holds_decision_lease(shard: Shard) -> bool:
    """The decision lease is shard 0's share: whoever analyses it decides for the fleet.

    That is replica 0 while it lives; when its heartbeat goes stale the shard lease hands share 0 to the next
    live shard (analytics_sidecar/shard_lease.py), i.e. the lowest live replica, and back when 0 returns.
    So there is one decider per live set, with no second lease to keep."""
    return shard.owns(0)


def attach(
    cfg: Config,
    source: PromSource,
    engine: Engine,
    routes: dict[str, Any],
    collectors: list[Any],
    guard: Guard,
) -> Callable[[Results], None] | None:
    """Register routes and the collector; return the hook the loop calls with each cycle's results.

    With `--shard`, every replica attaches but only the holder of the decision lease decides (fleet-wide
    reads; per-VM inputs come from the shares it analyses); the others stand by and serve no decisions.
    """
    settings: DecisionSettings = getattr(cfg, "decisions", None) or DecisionSettings()
    if not settings.enabled:
        return None
    dec = DecisionEngine(settings, cfg, source)
    routes.update(DecisionApi(dec.state, settings.migration).routes(guard))
    collectors.append(DecisionCollector(dec.state))

    def hook(results: Results) -> None:
        shard = engine.cfg.shard  # as the lease set it for the cycle that produced `results`
        if not holds_decision_lease(shard):
            if dec.state.role != "standby":
                log.info(
                    "decision lease: shard 0 is analysed by a live peer; shard %d stands by", shard.index
                )
                dec.stand_by()
            return
        if dec.state.role == "standby":
            log.info("decision lease: shard 0 adopted; shard %d decides for the fleet", shard.index)
        dec.state.role = "deciding"
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
