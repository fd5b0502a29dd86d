#!/usr/bin/env bash
# Start, stop or check the system libvirtd (qemu:///system) the way DESIGN.md describes, idempotently.
set -euo pipefail
cmd="${1:-start}"
alive() { virsh -c qemu:///system version >/dev/null 2>&1; }
case "$cmd" in
  start)
    alive && exit 0
    mkdir -p /var/run/libvirt /var/log/libvirt /var/lib/libvirt
    pgrep -x virtlogd >/dev/null || virtlogd -d
    pgrep -x libvirtd >/dev/null || libvirtd -d
    for _ in $(seq 1 150); do alive && exit 0; sleep 0.2; done
    echo "libvirtd did not answer on qemu:///system within 30 s" >&2; exit 1 ;;
  stop)
    pkill -x libvirtd 2>/dev/null || true
    for _ in $(seq 1 50); do pgrep -x libvirtd >/dev/null || exit 0; sleep 0.2; done
    pkill -9 -x libvirtd 2>/dev/null || true ;;
  status) alive ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
