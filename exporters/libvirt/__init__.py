"""NovaCron monitoring: exporters.libvirt package."""
