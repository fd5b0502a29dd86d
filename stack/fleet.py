"""Generate node XML for libvirt's test driver: a demo or test fleet of any size (`test:///PATH`)."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from xml.sax.saxutils import escape

NOVACRON_NS = "http://novacron.io/xmlns/libvirt/1.0"
TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"

FLAVORS = [("m1.small", 1, 2048), ("m1.medium", 2, 4096), ("m1.large", 4, 8192), ("m1.xlarge", 8, 16384)]
TENANTS = ["acme", "globex", "initech", "umbrella"]
SHUTOFF = 5


def _domain_xml(index: int, rng: random.Random, host: str, state: int) -> str:
    flavor, vcpus, mem_mib = rng.choice(FLAVORS)
    tenant = TENANTS[index % len(TENANTS)]
    name = f"{host}-vm{index:05d}"
    vm_uuid = uuid.UUID(int=rng.getrandbits(128), version=4)
    mem_kib = mem_mib * 1024
    return f"""  <domain type="test" xmlns:test="{TEST_NS}">
    <name>{escape(name)}</name>
    <uuid>{vm_uuid}</uuid>
    <metadata>
      <novacron:instance xmlns:novacron="{NOVACRON_NS}">
        <novacron:tenant>{tenant}</novacron:tenant>
        <novacron:project>{tenant}-prod</novacron:project>
        <novacron:flavor>{flavor}</novacron:flavor>
        <novacron:group>{tenant}-web</novacron:group>
      </novacron:instance>
    </metadata>
    <memory unit="KiB">{mem_kib}</memory>
    <currentMemory unit="KiB">{mem_kib}</currentMemory>
    <vcpu>{vcpus}</vcpu>
    <os><type arch="x86_64">hvm</type></os>
    <devices>
      <disk type="file" device="disk">
        <source file="/var/lib/libvirt/images/{escape(name)}.qcow2"/>
        <target dev="vda" bus="virtio"/>
      </disk>
      <interface type="network">
        <mac address="52:54:00:{index >> 16 & 0xFF:02x}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"/>
        <source network="default"/>
        <target dev="vnet{index}"/>
      </interface>
    </devices>
    <test:runstate>{state}</test:runstate>
  </domain>
"""


def fleet_xml(
    n_domains: int,
    seed: int = 0,
    host: str = "demo-host",
    shutoff_every: int = 0,
    cpus: int = 64,
    memory_gib: int = 512,
) -> str:
    """Node XML with `n_domains` domains; every `shutoff_every`-th domain is shut off (0: none)."""
    rng = random.Random(seed)
    domains = []
    for i in range(n_domains):
        state = SHUTOFF if shutoff_every and i % shutoff_every == shutoff_every - 1 else 1
        domains.append(_domain_xml(i, rng, host, state))
    sockets = 2
    cores = max(1, cpus // (sockets * 2))
    return f"""<?xml version="1.0"?>
<node>
  <cpu>
    <mhz>2400</mhz>
    <model>x86_64</model>
    <nodes>1</nodes>
    <sockets>{sockets}</sockets>
    <cores>{cores}</cores>
    <threads>2</threads>
    <active>{sockets * cores * 2}</active>
  </cpu>
  <memory>{memory_gib * 1024 * 1024}</memory>
{"".join(domains)}  <network>
    <name>default</name>
    <uuid>{uuid.UUID(int=rng.getrandbits(128), version=4)}</uuid>
    <bridge name="virbr0"/>
    <forward/>
    <ip address="192.168.122.1" netmask="255.255.255.0"/>
  </network>
  <pool type="dir">
    <name>default</name>
    <uuid>{uuid.UUID(int=rng.getrandbits(128), version=4)}</uuid>
    <capacity unit="GiB">2048</capacity>
    <allocation unit="GiB">{min(2000, n_domains * 20)}</allocation>
    <available unit="GiB">{max(48, 2048 - n_domains * 20)}</available>
    <target><path>/var/lib/libvirt/images</path></target>
  </pool>
</node>
"""


def write_fleet(
    path: Path, n_domains: int, seed: int = 0, host: str = "demo-host", shutoff_every: int = 0
) -> str:
    """Write the fleet XML to `path` and return its test-driver URI."""
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(fleet_xml(n_domains, seed=seed, host=host, shutoff_every=shutoff_every))
    return f"test://{path}"
