"""Topology: a node graph of hosts, VMs, storage pools and networks from the exporter's edge metrics."""

from __future__ import annotations

from dashboards.sdk import VM_INFO, Board, Query, fleet_variables, nav_links, node_graph, table_panel

# Node ids carry a kind prefix so a host and a VM that share a name stay distinct nodes.


def _node(expr: str, kind: str, id_label: str, title_label: str) -> str:
    with_id = f'label_replace({expr}, "id", "{kind}:$1", "{id_label}", "(.+)")'
    with_title = f'label_replace({with_id}, "title", "$1", "{title_label}", "(.+)")'
    return f'label_replace({with_title}, "subtitle", "{kind}", "", "")'


def _edge(expr: str, src_kind: str, src_label: str, dst_kind: str, dst_label: str) -> str:
    src = f'label_replace({expr}, "source", "{src_kind}:$1", "{src_label}", "(.+)")'
    dst = f'label_replace({src}, "target", "{dst_kind}:$1", "{dst_label}", "(.+)")'
    return f'label_join({dst}, "id", "->", "source", "target")'


def _edges_of_vms(metric: str) -> str:
    """Edge metrics carry only vm_id plus the far end; filter them through the selected VMs."""
    return f"{metric} * on(vm_id) group_left() {VM_INFO}"


NODES = " or ".join(
    [
        _node("max by(host) (novacron_host_info)", "host", "host", "host"),
        _node(f"max by(vm_id, vm_name) ({VM_INFO})", "vm", "vm_id", "vm_name"),
        _node("max by(host, pool) (novacron_vm_storage_pool_edge)", "pool", "pool", "pool"),
        _node("max by(host, network) (novacron_vm_network_edge)", "net", "network", "network"),
    ]
)
EDGES = " or ".join(
    [
        _edge(f"max by(host, vm_id) ({VM_INFO})", "host", "host", "vm", "vm_id"),
        _edge(
            f"max by(vm_id, pool) ({_edges_of_vms('novacron_vm_storage_pool_edge')})",
            "vm",
            "vm_id",
            "pool",
            "pool",
        ),
        _edge(
            f"max by(vm_id, network) ({_edges_of_vms('novacron_vm_network_edge')})",
            "vm",
            "vm_id",
            "net",
            "network",
        ),
    ]
)


def topology() -> Board:
    board = Board(
        uid="novacron-topology",
        title="NovaCron / Topology",
        description="Hosts, VMs, storage pools and networks as a node graph (libvirt exporter edges).",
        tags=["novacron", "topology"],
        folder="NovaCron",
        variables=fleet_variables(),
        links=nav_links(),
        refresh="5m",
        time_from="now-1h",
    )
    board.add(
        node_graph(
            "Topology",
            "Host -> VM -> storage pool / network edges for the selected VMs.",
            Query(NODES, instant=True, table=True, ref_id="nodes"),
            Query(EDGES, instant=True, table=True, ref_id="edges"),
        ),
        w=24,
        h=18,
    )
    board.add(
        table_panel(
            "Edges",
            "The same edges as a table (for search and export).",
            "none",
            Query(EDGES, instant=True, table=True),
        ),
        w=24,
        h=8,
    )
    return board
