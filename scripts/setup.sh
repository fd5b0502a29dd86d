#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian 12 machine: Debian packages, libvirtd prepared, .venv with the project.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-venv gcc
  prometheus prometheus-alertmanager victoria-metrics prometheus-libvirt-exporter
  prometheus-snmp-exporter snmpd
  libvirt-dev pkg-config libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-system libvirt-clients
  qemu-system-x86 qemu-utils
  postgresql chromium poppler-utils
  nginx-light
)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_debian_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  # The Debian services do not start in a container and must not hold our ports: stop them if they run.
  for svc in prometheus prometheus-alertmanager prometheus-libvirt-exporter prometheus-snmp-exporter snmpd victoria-metrics; do
    pkill -x "$svc" 2>/dev/null || true
  done
}

prepare_libvirtd() {
  # DESIGN.md: run libvirtd as root with QEMU guests under TCG, no security driver.
  as_root mkdir -p /var/run/libvirt /var/log/libvirt /var/lib/libvirt/images
  local conf=/etc/libvirt/qemu.conf changed=0
  for kv in 'user = "root"' 'group = "root"' 'security_driver = "none"'; do
    local key="${kv%% =*}"
    if ! grep -qE "^${key} = " "$conf"; then echo "$kv" | as_root tee -a "$conf" >/dev/null; changed=1; fi
  done
  # A libvirtd started before the change (for example by the package) must re-read qemu.conf.
  if [ "$changed" -eq 1 ]; then bash scripts/libvirtd.sh stop; fi
  id libvirt-qemu >/dev/null 2>&1 || as_root useradd --system --no-create-home libvirt-qemu
  bash scripts/libvirtd.sh start
}

make_venv() {
  if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
  local stamp=.venv/.installed-$(sha1sum setup.cfg pyproject.toml | sha1sum | cut -c1-12)
  if [ ! -f "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip wheel setuptools
    .venv/bin/pip install -q -e '.[all,test]'
    rm -f .venv/.installed-*; touch "$stamp"
  fi
}

install_debian_packages
prepare_libvirtd
make_venv
echo "setup: ready"
