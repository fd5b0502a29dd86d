"""Parse a libvirt domain XML into identity, NovaCron/OpenStack metadata, disks and interfaces.

NovaCron metadata lives in the domain's <metadata> element under its own namespace:

    <metadata>
      <novacron:instance xmlns:novacron="http://novacron.io/xmlns/libvirt/1.0">
        <novacron:tenant>acme</novacron:tenant>
        <novacron:project>web-shop</novacron:project>
        <novacron:flavor>m1.small</novacron:flavor>
        <novacron:instance_type>general</novacron:instance_type>
        <novacron:region>eu-west</novacron:region>
        <novacron:zone>eu-west-1a</novacron:zone>
        <novacron:group>web-shop-frontend</novacron:group>
      </novacron:instance>
    </metadata>

OpenStack nova writes `<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.x">`; its display
name, flavor and owner project fill the same labels when no NovaCron element sets them. `<novacron:group>`
(the VM's scaling group) becomes the `novacron_group` label.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # the XML comes from libvirtd, not from a client
from dataclasses import dataclass, field

NOVACRON_NS = "http://novacron.io/xmlns/libvirt/1.0"
NOVA_NS_PREFIX = "http://openstack.org/xmlns/libvirt/nova/"
# NovaCron element -> novacron_vm_info label; the group's is prefixed (a bare `group` is too generic).
NOVACRON_FIELDS = {
    "tenant": "tenant",
    "project": "project",
    "flavor": "flavor",
    "instance_type": "instance_type",
    "region": "region",
    "zone": "zone",
    "group": "novacron_group",
}


@dataclass(frozen=True)
class Disk:
    """One disk: target device (vda), the source path or volume, and the pool when it is a volume."""

    device: str
    path: str = ""
    pool: str = ""


@dataclass(frozen=True)
class Interface:
    """One NIC: target device (vnet0), MAC, and the libvirt network or bridge it is attached to."""

    device: str
    mac: str = ""
    network: str = ""
    bridge: str = ""


@dataclass(frozen=True)
class DomainMeta:
    """What the exporter needs from a domain XML; `labels` holds the NovaCron/OpenStack identity."""

    name: str
    uuid: str
    domain_type: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    disks: tuple[Disk, ...] = ()
    interfaces: tuple[Interface, ...] = ()


def _text(elem: ET.Element | None) -> str:
    return (elem.text or "").strip() if elem is not None else ""


def _novacron_labels(metadata: ET.Element) -> dict[str, str]:
    inst = metadata.find(f"{{{NOVACRON_NS}}}instance")
    if inst is None:
        return {}
    out = {}
    for element, label in NOVACRON_FIELDS.items():
        value = _text(inst.find(f"{{{NOVACRON_NS}}}{element}"))
        if value:
            out[label] = value
    return out


def _nova_labels(metadata: ET.Element) -> dict[str, str]:
    """OpenStack nova metadata (namespace versions 1.0, 1.1, 1.2 ... share the element names)."""
    for child in metadata:
        if not child.tag.startswith("{" + NOVA_NS_PREFIX) or not child.tag.endswith("}instance"):
            continue
        ns = child.tag[1 : child.tag.index("}")]
        out = {}
        name = _text(child.find(f"{{{ns}}}name"))
        if name:
            out["vm_name"] = name
        flavor = child.find(f"{{{ns}}}flavor")
        if flavor is not None and flavor.get("name"):
            out["flavor"] = flavor.get("name", "")
        project = child.find(f"{{{ns}}}owner/{{{ns}}}project")
        if project is not None:
            # OpenStack's tenant is its project: the id is the stable tenant key, the name is for people.
            if project.get("uuid"):
                out["tenant"] = project.get("uuid", "")
            if _text(project):
                out["project"] = _text(project)
        return out
    return {}


def _disks(devices: ET.Element | None) -> tuple[Disk, ...]:
    if devices is None:
        return ()
    out = []
    for disk in devices.findall("disk"):
        target = disk.find("target")
        if target is None or not target.get("dev"):
            continue
        source = disk.find("source")
        path = pool = ""
        if source is not None:
            path = source.get("file") or source.get("dev") or source.get("name") or source.get("volume") or ""
            pool = source.get("pool", "")
        out.append(Disk(device=target.get("dev", ""), path=path, pool=pool))
    return tuple(out)


def _interfaces(devices: ET.Element | None) -> tuple[Interface, ...]:
    if devices is None:
        return ()
    out = []
    for nic in devices.findall("interface"):
        target = nic.find("target")
        if target is None or not target.get("dev"):
            continue  # an inactive domain's NIC has no host-side device yet
        source = nic.find("source")
        mac = nic.find("mac")
        out.append(
            Interface(
                device=target.get("dev", ""),
                mac=mac.get("address", "") if mac is not None else "",
                network=source.get("network", "") if source is not None else "",
                bridge=source.get("bridge", "") if source is not None else "",
            )
        )
    return tuple(out)


def parse_domain_xml(xml: str) -> DomainMeta:
    """Parse a domain XML; raises ValueError on XML that is not a domain."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 -- trusted: produced by libvirtd
    except ET.ParseError as exc:
        raise ValueError(f"domain XML does not parse: {exc}") from None
    if root.tag != "domain":
        raise ValueError(f"expected <domain>, got <{root.tag}>")
    labels: dict[str, str] = {}
    metadata = root.find("metadata")
    if metadata is not None:
        labels.update(_nova_labels(metadata))
        labels.update(_novacron_labels(metadata))  # NovaCron's own element wins over nova's
    devices = root.find("devices")
    return DomainMeta(
        name=_text(root.find("name")),
        uuid=_text(root.find("uuid")),
        domain_type=root.get("type", ""),
        labels=labels,
        disks=_disks(devices),
        interfaces=_interfaces(devices),
    )
