"""NovaCron monitoring: analytics_sidecar package."""
