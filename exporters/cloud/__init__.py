"""NovaCron monitoring: exporters.cloud package."""
