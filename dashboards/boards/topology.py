"""Topology: a node graph of hosts, VMs, storage pools and networks from the exporter's topology metrics."""

from __future__ import annotations

from dashboards.sdk import (
    Board,
    Query,
    host_link,
    nav_links,
    node_graph,
    query_variable,
    stack_variables,
    table_panel,
)

# The libvirt exporter publishes the graph ready for Grafana's node graph (see docs/metrics.md):
#   novacron_topology_node{host, id, kind, title} 1      kind: host, vm, pool, network
#   novacron_topology_edge{host, id, source, target, kind} 1   kind: runs, disk, nic
HOST = 'host=~"$host", kind=~"$kind"'
NODES = f"max by(id, title, kind, host) (novacron_topology_node{{{HOST}}})"
EDGES = 'max by(id, source, target, kind, host) (novacron_topology_edge{host=~"$host"})'


def topology() -> Board:
    variables = stack_variables()
    variables.insert(1, query_variable("host", "Host", "label_values(novacron_topology_node, host)"))
    variables.insert(2, query_variable("kind", "Node kind", "label_values(novacron_topology_node, kind)"))
    board = Board(
        uid="novacron-topology",
        title="NovaCron / Topology",
        description="Hosts, VMs, storage pools and networks as a node graph (libvirt exporter topology).",
        tags=["novacron", "topology"],
        folder="NovaCron",
        variables=variables,
        links=nav_links(),
        refresh="5m",
        time_from="now-1h",
    )
    board.add(
        node_graph(
            "Topology",
            "Host -> VM (runs), VM -> storage pool (disk) and VM -> network (nic) edges.",
            Query(NODES, instant=True, table=True, ref_id="nodes"),
            Query(EDGES, instant=True, table=True, ref_id="edges"),
        ),
        w=24,
        h=18,
    )
    board.add(
        table_panel(
            "Nodes per host and kind",
            "How many nodes of each kind each host contributes.",
            "short",
            Query(f"count by(host, kind) (novacron_topology_node{{{HOST}}})", instant=True, table=True),
            links=[host_link()],
        ),
        w=12,
        h=8,
    )
    board.add(
        table_panel(
            "Edges per host and kind",
            "How many edges of each kind each host contributes.",
            "short",
            Query('count by(host, kind) (novacron_topology_edge{host=~"$host"})', instant=True, table=True),
        ),
        w=12,
        h=8,
    )
    return board
