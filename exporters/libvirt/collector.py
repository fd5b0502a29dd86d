"""The libvirt collector: scrapes an injected Target under a deadline and yields every enabled metric family.

Self-metrics, always present even when libvirt is unreachable:

    novacron_libvirt_up 0.0
    novacron_libvirt_scrape_duration_seconds 0.003
    novacron_libvirt_scrape_errors_total 4.0
    novacron_libvirt_reconnects_total 1.0
    novacron_libvirt_domains 5000.0
    novacron_libvirt_domains_timed_out 1.0
    novacron_libvirt_domain_stats_timed_out{vm_id="5e0c...-..."} 1.0
    novacron_libvirt_domain_stats_timeouts_total 3.0
    novacron_libvirt_bulk_split 0.0
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporters.libvirt.gather import Snapshot
from exporters.libvirt.metrics import (
    host_families,
    network_families,
    pool_families,
    topology_families,
    vm_families,
)
from exporters.libvirt.target import Target

VM_GROUPS = ("info", "cpu", "vcpu", "memory", "block", "interface", "dirtyrate", "job")
HOST_GROUPS = ("host", "pool", "network", "topology")
ALL_GROUPS = VM_GROUPS + HOST_GROUPS
DEFAULT_GROUPS = frozenset(ALL_GROUPS)


class LibvirtCollector:
    """A prometheus_client collector for one Target; `timeout` bounds the libvirt side of the scrape."""

    def __init__(self, target: Target, groups: frozenset[str], timeout: float) -> None:
        self.target = target
        self.groups = groups
        self.timeout = timeout

    def describe(self) -> list[Metric]:
        return []  # no libvirt calls at registration time

    def collect(self) -> Iterator[Metric]:
        snapshot = self.target.scrape(self.timeout)
        yield from self_families(snapshot, self.target)
        if not snapshot.up:
            return
        yield from vm_families(snapshot, self.groups)
        yield from host_families(snapshot, self.groups)
        if "pool" in self.groups:
            yield from pool_families(snapshot)
        if "network" in self.groups:
            yield from network_families(snapshot)
        if "topology" in self.groups:
            yield from topology_families(snapshot)


def self_families(snapshot: Snapshot, target: Target) -> Iterator[Metric]:
    """The exporter's own health for this target."""
    c = target.counters
    yield GaugeMetricFamily(
        "novacron_libvirt_up", "1 when libvirt answered this scrape", value=int(snapshot.up)
    )
    yield GaugeMetricFamily(
        "novacron_libvirt_scrape_duration_seconds",
        "Time spent gathering from libvirt",
        value=snapshot.duration,
    )
    yield CounterMetricFamily(
        "novacron_libvirt_scrape_errors_total", "Scrapes that could not reach libvirt", c.errors
    )
    yield CounterMetricFamily(
        "novacron_libvirt_reconnects_total", "Connections re-opened after libvirtd went away", c.reconnects
    )
    if not snapshot.up:
        return
    timed_out = [d for d in snapshot.domains if d.timed_out]
    yield GaugeMetricFamily("novacron_libvirt_domains", "Domains libvirt listed", value=len(snapshot.domains))
    yield GaugeMetricFamily(
        "novacron_libvirt_domains_timed_out",
        "Domains whose stats missed this scrape's deadline",
        value=len(timed_out),
    )
    fam = GaugeMetricFamily(
        "novacron_libvirt_domain_stats_timed_out",
        "1 for a domain whose stats did not arrive before the deadline (absent otherwise)",
        labels=["vm_id"],
    )
    for d in timed_out:
        fam.add_metric([d.uuid], 1)
    yield fam
    yield CounterMetricFamily(
        "novacron_libvirt_domain_stats_timeouts_total",
        "Domain stats that missed a deadline",
        c.timed_out_domains,
    )
    yield GaugeMetricFamily(
        "novacron_libvirt_bulk_split",
        "1 when the bulk stats call hung and domains were asked one by one",
        value=int(snapshot.bulk_split),
    )
