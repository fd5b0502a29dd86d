"""NovaCron monitoring: exporters package."""
