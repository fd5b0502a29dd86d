"""Shard lease through Prometheus: each sidecar shard exports a heartbeat; a shard adopts dead peers' shares.

Every replica started with `--shard i/n` exports its heartbeat (the time of the scrape) and the shards it
currently analyses. Before each cycle it reads its peers' heartbeats back from Prometheus (or the global
view): a peer whose newest heartbeat is older than the lease TTL is dead, and its share goes to the next live
shard after it (i+1, i+2, ... modulo n), so exactly one live replica adopts it and every VM stays analysed
once. When the peer comes back its heartbeat is fresh again and the adopter lets the share go next cycle.

Sample output:

    novacron_analytics_shard_heartbeat_timestamp_seconds{shard_count="2",shard_index="0"} 1.7646e+09
    novacron_analytics_shard_owned{shard_count="2",shard_index="0"} 1.0
    novacron_analytics_shard_owned{shard_count="2",shard_index="1"} 1.0
    novacron_analytics_shard_peers_alive{shard_count="2",shard_index="0"} 1.0
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from analytics_sidecar.config import Shard

log = logging.getLogger(__name__)
HEARTBEAT = "novacron_analytics_shard_heartbeat_timestamp_seconds"


def adopted(index: int, count: int, alive: set[int]) -> frozenset[int]:
    """The shards `index` analyses: its own, plus every dead shard whose next live successor it is."""
    owned = {index}
    for dead in set(range(count)) - alive - {index}:
        for step in range(1, count):
            successor = (dead + step) % count
            if successor in alive or successor == index:
                if successor == index:
                    owned.add(dead)
                break
    return frozenset(owned)


class ShardLease:
    """Computes this replica's shards before each cycle; also a collector for its heartbeat metrics."""

    def __init__(
        self,
        shard: Shard,
        instant: Callable[[str], list[dict[str, Any]]],
        ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.shard = shard
        self.instant = instant
        self.ttl = ttl
        self.clock = clock
        self._owned = frozenset({shard.index})
        self._alive = {shard.index}
        self._lock = threading.Lock()

    def alive_peers(self) -> set[int]:
        """Shards whose heartbeat Prometheus saw within the TTL (this one always counts as alive)."""
        expr = f'max by (shard_index) ({HEARTBEAT}{{shard_count="{self.shard.count}"}})'
        now = self.clock()
        alive = {self.shard.index}
        for row in self.instant(expr):
            try:
                index, beat = int(row["metric"]["shard_index"]), float(row["value"][1])
            except (KeyError, ValueError, IndexError, TypeError):
                continue  # a foreign series without the labels: not a peer
            if now - beat <= self.ttl and 0 <= index < self.shard.count:
                alive.add(index)
        return alive

    def refresh(self) -> frozenset[int]:
        """Re-read the peers; when Prometheus cannot answer, keep the previous ownership (no flapping)."""
        try:
            alive = self.alive_peers()
        except Exception as exc:  # the source's own errors: a lease read must never stop the cycle
            log.warning(
                "shard lease: cannot read peer heartbeats, keeping shards %s: %s", sorted(self._owned), exc
            )
            return self._owned
        owned = adopted(self.shard.index, self.shard.count, alive)
        with self._lock:
            if owned != self._owned:
                log.info("shard lease: peers alive %s; now analysing shards %s", sorted(alive), sorted(owned))
            self._owned, self._alive = owned, alive
        return owned

    @property
    def owned(self) -> frozenset[int]:
        return self._owned

    def collect(self) -> Iterator[Metric]:
        labels = ["shard_index", "shard_count"]
        me = [str(self.shard.index), str(self.shard.count)]
        beat = GaugeMetricFamily(HEARTBEAT, "Time of this scrape: the shard lease heartbeat", labels=labels)
        beat.add_metric(me, self.clock())
        yield beat
        owned = GaugeMetricFamily(
            "novacron_analytics_shard_owned", "1 for each shard this replica analyses now", labels=labels
        )
        for index in sorted(self._owned):
            owned.add_metric([str(index), str(self.shard.count)], 1.0)
        yield owned
        alive = GaugeMetricFamily(
            "novacron_analytics_shard_peers_alive",
            "Shards with a fresh heartbeat at the last cycle",
            labels=labels,
        )
        alive.add_metric(me, float(len(self._alive)))
        yield alive
