"""NovaCron monitoring: exporters.common package."""
