"""A real QEMU guest under the system libvirtd: 64 MiB, small qcow2 disk, user-mode NIC, TCG."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import libvirt

SYSTEM_URI = "qemu:///system"
IMAGE_DIR = Path("/var/lib/libvirt/images")


def ensure_libvirtd() -> None:
    """Start libvirtd as DESIGN.md describes, or fail saying how to install it."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "libvirtd.sh"
    result = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(
            "libvirtd with QEMU is needed: run `bash scripts/setup.sh` (installs libvirt-daemon, "
            f"libvirt-daemon-driver-qemu, qemu-system-x86 and prepares libvirtd): {result.stderr.strip()}"
        )


def _domain_xml(name: str, vm_uuid: str, disk: Path) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <uuid>{vm_uuid}</uuid>
  <metadata>
    <novacron:instance xmlns:novacron="http://novacron.io/xmlns/libvirt/1.0">
      <novacron:tenant>acme</novacron:tenant>
      <novacron:project>acme-test</novacron:project>
      <novacron:flavor>t1.tiny</novacron:flavor>
    </novacron:instance>
  </metadata>
  <memory unit='MiB'>64</memory>
  <currentMemory unit='MiB'>64</currentMemory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'><model type='virtio'/></interface>
    <memballoon model='virtio'><stats period='1'/></memballoon>
    <video><model type='none'/></video>
  </devices>
</domain>"""


class QemuGuest:
    """Define and start a guest on entry; destroy, undefine and delete its disk on exit."""

    def __init__(self, name: str | None = None, uri: str = SYSTEM_URI) -> None:
        # The creating process's pid in the name lets a later run tell a leftover from a live guest.
        self.name = name or f"nctest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.uuid = str(uuid.uuid4())
        self.uri = uri
        self.disk = IMAGE_DIR / f"{self.name}.qcow2"
        self._conn: libvirt.virConnect | None = None

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None or not self._conn.isAlive():
            self._conn = libvirt.open(self.uri)
        return self._conn

    @property
    def domain(self) -> libvirt.virDomain:
        return self.conn.lookupByName(self.name)

    def __enter__(self) -> QemuGuest:
        ensure_libvirtd()
        IMAGE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(self.disk), "16M"], check=True)
        self.conn.defineXML(_domain_xml(self.name, self.uuid, self.disk))
        self.start()
        return self

    def start(self) -> None:
        if not self.domain.isActive():
            self.domain.create()

    def shutoff(self) -> None:
        """Hard power-off (virsh destroy): the guest has no OS to answer ACPI."""
        if self.domain.isActive():
            self.domain.destroy()

    def state(self) -> int:
        return int(self.domain.state()[0])

    def __exit__(self, *exc: object) -> None:
        # A libvirtd restart during the test leaves the old connection looking alive: always reconnect.
        self._conn = None
        with contextlib.suppress(libvirt.libvirtError):
            self.shutoff()
        with contextlib.suppress(libvirt.libvirtError):
            self.domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        with contextlib.suppress(OSError):
            self.disk.unlink()
        if self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()


def _owner_alive(suffix: str) -> bool:
    pid = suffix.split("-", 1)[0]
    return pid.isdigit() and Path(f"/proc/{pid}").exists()


def remove_stale_guests(prefix: str = "nctest-") -> None:
    """Remove guests a killed test run left behind (they would hold memory and CPU)."""
    with contextlib.suppress(libvirt.libvirtError):
        conn = libvirt.open(SYSTEM_URI)
        for dom in conn.listAllDomains():
            if dom.name().startswith(prefix) and not _owner_alive(dom.name()[len(prefix) :]):
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
                with contextlib.suppress(OSError):
                    (IMAGE_DIR / f"{dom.name()}.qcow2").unlink()
        conn.close()


__all__ = ["SYSTEM_URI", "QemuGuest", "ensure_libvirtd", "remove_stale_guests", "tempfile"]
